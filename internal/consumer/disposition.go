package consumer

import (
	"errors"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
)

type action int

const (
	ack action = iota
	retry
	deadLetterAction
)

// Dead-letter reasons: the <reason> token of wechatpay.dlq.<reason>.<mchid> and the Dlq-Reason header.
const (
	reasonMalformed            = "malformed"
	reasonInconsistent         = "inconsistent" // signed, but not what its event type claims (or not this merchant's)
	reasonTooLarge             = "too_large"    // resource nested deeper or larger than an event may carry
	reasonUnsupportedEventType = "unsupported_event_type"
	reasonUnknownMerchant      = "unknown_merchant"
	reasonDecryptFailed        = "decrypt_failed" // wrong APIv3 key or tampered ciphertext
	reasonBadNonce             = "bad_nonce"
	reasonBadCiphertext        = "bad_ciphertext"
	reasonUnsupportedAlgorithm = "unsupported_algorithm"
	reasonMaxDeliveries        = "max_deliveries"
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
	reason string
}

func deadLetter(reason string) dispositionResult {
	return dispositionResult{action: deadLetterAction, reason: reason}
}

// disposition is the one place that decides between ack, retry and dead-letter. Anything it does not
// recognise is retried (and dead-lettered only once MaxDeliver is reached), never dropped.
func disposition(err error) dispositionResult {
	if err == nil {
		return dispositionResult{action: ack}
	}
	for _, p := range permanent {
		if errors.Is(err, p.err) {
			return deadLetter(p.reason)
		}
	}
	return dispositionResult{action: retry}
}
