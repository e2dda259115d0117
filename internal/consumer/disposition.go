package consumer

import (
	"errors"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
)

type action int

const (
	ack action = iota
	retry
	deadLetterAction
)

// Dead-letter reasons, as the dlq package names them.
const (
	reasonMalformed            = dlq.ReasonMalformed
	reasonInconsistent         = dlq.ReasonInconsistent
	reasonTooLarge             = dlq.ReasonTooLarge
	reasonUnsupportedEventType = dlq.ReasonUnsupportedEventType
	reasonUnknownMerchant      = dlq.ReasonUnknownMerchant
	reasonDecryptFailed        = dlq.ReasonDecryptFailed
	reasonBadNonce             = dlq.ReasonBadNonce
	reasonBadCiphertext        = dlq.ReasonBadCiphertext
	reasonUnsupportedAlgorithm = dlq.ReasonUnsupportedAlgorithm
	reasonMaxDeliveries        = dlq.ReasonMaxDeliveries
)

// permanent maps the errors that retrying cannot fix to their dead-letter reason. Order matters only
// where one error could match two rows; none does today.
var permanent = []struct {
	err    error
	reason string
}{
	{envelope.ErrMalformed, reasonMalformed},
	{events.ErrMalformed, reasonMalformed},
	{events.ErrInconsistent, reasonInconsistent},
	{events.ErrTooLarge, reasonTooLarge},
	{events.ErrUnsupportedEventType, reasonUnsupportedEventType},
	{ErrUnknownMerchant, reasonUnknownMerchant},
	{decrypt.ErrAuthentication, reasonDecryptFailed},
	{decrypt.ErrNonceLength, reasonBadNonce},
	{decrypt.ErrBadBase64, reasonBadCiphertext},
	{decrypt.ErrUnknownAlgorithm, reasonUnsupportedAlgorithm},
}

type dispositionResult struct {
	action action
	reason string        // dead-letter reason
	delay  time.Duration // redelivery delay of a retry
}

func deadLetter(reason string) dispositionResult {
	return dispositionResult{action: deadLetterAction, reason: reason}
}

// disposition is the one place that decides what becomes of a message after an attempt: ack, retry after
// a delay, or dead-letter with a reason. Anything it does not recognise is retried, never dropped; a retry
// on the last allowed delivery (delivered ≥ maxDeliver) is dead-lettered as max_deliveries instead, since
// the server would not deliver it again.
func disposition(err error, delivered uint64, maxDeliver int) dispositionResult {
	if err == nil {
		return dispositionResult{action: ack}
	}
	for _, p := range permanent {
		if errors.Is(err, p.err) {
			return deadLetter(p.reason)
		}
	}
	if maxDeliver > 0 && delivered >= uint64(maxDeliver) {
		return deadLetter(reasonMaxDeliveries)
	}
	return dispositionResult{action: retry, delay: retryDelay(err, delivered)}
}

// retrySteps pace redeliveries after a retryable failure: NAK without a delay would burn MaxDeliver in
// milliseconds. Outages back off up to a minute.
var retrySteps = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second, time.Minute}

// busySteps pace the redeliveries of a fact claimed by another worker. The holder usually publishes and
// commits within milliseconds (in a backlog, WeChat Pay's retry of a notification often meets its
// original still in work), so the first wait is short; then it backs off to busyDelay. The 19 waits
// between the default 20 deliveries add up to 33.75 s, longer than the 30 s lease of a holder that
// crashed, so such a fact is claimed again before CONSUMER_MAX_DELIVER runs out.
var busySteps = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, busyDelay}

// busyDelay is the longest wait of a fact claimed by another worker.
const busyDelay = 2 * time.Second

func retryDelay(err error, delivered uint64) time.Duration {
	if errors.Is(err, ErrBusy) {
		return busySteps[min(max(delivered, 1)-1, uint64(len(busySteps)-1))]
	}
	if delivered == 0 {
		return retrySteps[0]
	}
	return retrySteps[min(delivered-1, uint64(len(retrySteps)-1))]
}
