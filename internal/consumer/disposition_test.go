package consumer

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
)

// TestDisposition: the one table that settles a message, row by row — what is acked, what is dead-lettered
// with which reason, and how long a retry waits — including the last delivery, after which the server
// would not deliver the message again.
func TestDisposition(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("map notification n-1: %w", err) }
	const maxDeliver = 20
	tests := []struct {
		name      string
		err       error
		delivered uint64
		want      dispositionResult
	}{
		{"done", nil, 1, dispositionResult{action: ack}},
		{"done on the last delivery", nil, maxDeliver, dispositionResult{action: ack}},
		{"malformed envelope", wrap(envelope.ErrMalformed), 1, deadLetter("malformed")},
		{"malformed resource", wrap(events.ErrMalformed), 1, deadLetter("malformed")},
		{"inconsistent resource", wrap(events.ErrInconsistent), 1, deadLetter("inconsistent")},
		{"resource too large", wrap(events.ErrTooLarge), 1, deadLetter("too_large")},
		{"unsupported type", wrap(events.ErrUnsupportedEventType), 1, deadLetter("unsupported_event_type")},
		{"unknown merchant", wrap(ErrUnknownMerchant), 1, deadLetter("unknown_merchant")},
		{"wrong key", wrap(decrypt.ErrAuthentication), 1, deadLetter("decrypt_failed")},
		{"bad nonce", wrap(decrypt.ErrNonceLength), 1, deadLetter("bad_nonce")},
		{"bad base64", wrap(decrypt.ErrBadBase64), 1, deadLetter("bad_ciphertext")},
		{"SM4", wrap(decrypt.ErrUnknownAlgorithm), 1, deadLetter("unsupported_algorithm")},
		// A permanent error keeps its own reason on the last delivery too.
		{"malformed on the last delivery", wrap(events.ErrMalformed), maxDeliver, deadLetter("malformed")},
		// Retryable: backing off, never dropped.
		{"Redis down, first delivery", wrap(dedupe.ErrUnavailable), 1, dispositionResult{action: retry, delay: time.Second}},
		{"Redis down, second delivery", wrap(dedupe.ErrUnavailable), 2, dispositionResult{action: retry, delay: 2 * time.Second}},
		{"Redis down, fifth delivery", wrap(dedupe.ErrUnavailable), 5, dispositionResult{action: retry, delay: 30 * time.Second}},
		{"Redis down, capped", wrap(dedupe.ErrUnavailable), 19, dispositionResult{action: retry, delay: time.Minute}},
		{"publish failed", wrap(errPublish), 3, dispositionResult{action: retry, delay: 5 * time.Second}},
		{"unknown error", errors.New("something new"), 1, dispositionResult{action: retry, delay: time.Second}},
		{"fact busy with another worker, first delivery", ErrBusy, 1, dispositionResult{action: retry, delay: 250 * time.Millisecond}},
		{"fact busy with another worker, third delivery", ErrBusy, 3, dispositionResult{action: retry, delay: time.Second}},
		{"fact busy with another worker", ErrBusy, 4, dispositionResult{action: retry, delay: busyDelay}},
		{"fact busy, no metadata count", ErrBusy, 0, dispositionResult{action: retry, delay: 250 * time.Millisecond}},
		{"no metadata count", errors.New("x"), 0, dispositionResult{action: retry, delay: time.Second}},
		// The last delivery: a retry would never come.
		{"Redis down on the last delivery", wrap(dedupe.ErrUnavailable), maxDeliver, deadLetter("max_deliveries")},
		{"busy on the last delivery", ErrBusy, maxDeliver, deadLetter("max_deliveries")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := disposition(tt.err, tt.delivered, maxDeliver); got != tt.want {
				t.Errorf("disposition = %+v, want %+v", got, tt.want)
			}
		})
	}
	// Without a MaxDeliver, nothing is dead-lettered for being retried.
	if got := disposition(ErrBusy, 1000, 0); got.action != retry {
		t.Errorf("no MaxDeliver: %+v", got)
	}
}

// A fact whose holder crashed stays busy until the holder's lease expires: the waits between its
// deliveries must outlast the lease, or it would be dead-lettered as max_deliveries instead of claimed.
func TestBusyRetriesOutlastALease(t *testing.T) {
	const maxDeliver = 20 // CONSUMER_MAX_DELIVER's default
	var total time.Duration
	for delivered := uint64(1); delivered < maxDeliver; delivered++ {
		total += disposition(ErrBusy, delivered, maxDeliver).delay
	}
	if total <= dedupe.DefaultLease {
		t.Errorf("busy retries wait %s in all, not longer than a %s lease", total, dedupe.DefaultLease)
	}
}
