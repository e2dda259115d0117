package dlq

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// Entry is one dead-lettered notification as an operator sees it: why, from where, and what it was —
// never the decrypted resource.
type Entry struct {
	Seq             uint64    `json:"seq"`    // WECHATPAY_DLQ sequence
	Stored          time.Time `json:"stored"` // when the DLQ stored it (UTC)
	Reason          string    `json:"reason"`
	MchID           string    `json:"mchid"`
	EventType       string    `json:"event_type"`      // from the envelope; "" when it cannot be parsed
	NotificationID  string    `json:"notification_id"` // likewise
	Deliveries      int       `json:"deliveries"`      // how often the consumer had received it
	Error           string    `json:"error"`
	OriginalSubject string    `json:"original_subject"`
	OriginalMsgID   string    `json:"original_msg_id"`
	DeadLetteredAt  time.Time `json:"dead_lettered_at"` // zero when the header is missing

	// Subject, Header and Body are the stored message; Body is the raw notification, still encrypted.
	Subject string      `json:"-"`
	Header  nats.Header `json:"-"`
	Body    []byte      `json:"-"`
	// Envelope is the parsed notification envelope, nil when the body is not one (EnvelopeError says why).
	Envelope      *envelope.Envelope `json:"-"`
	EnvelopeError string             `json:"-"`
}

// EntryFrom reads a stored DLQ message.
func EntryFrom(seq uint64, stored time.Time, subject string, h nats.Header, body []byte) Entry {
	e := Entry{
		Seq: seq, Stored: stored.UTC(), Subject: subject, Header: h, Body: body,
		Reason: h.Get(HeaderReason), Error: h.Get(HeaderError),
		OriginalSubject: h.Get(HeaderOriginalSubject), OriginalMsgID: h.Get(HeaderOriginalMsgID),
	}
	e.Deliveries, _ = strconv.Atoi(h.Get(HeaderDeliveries))
	if at, err := time.Parse(time.RFC3339Nano, h.Get(HeaderAt)); err == nil {
		e.DeadLetteredAt = at.UTC()
	}
	if rest, ok := strings.CutPrefix(subject, topology.DLQPrefix); ok {
		reason, mchid, _ := strings.Cut(rest, ".")
		e.MchID = mchid
		if e.Reason == "" {
			e.Reason = reason
		}
	}
	if env, err := envelope.Parse(body); err == nil {
		e.Envelope = &env
		e.EventType, e.NotificationID = env.EventType, env.ID
	} else {
		e.EnvelopeError = err.Error()
	}
	return e
}

// Replayable reports whether replaying the entry as it is can succeed, and if not, what to fix first: a
// replay sends the same bytes, so a wrong key, a malformed body or a notification that is not what it
// claims fails again unless the cause was fixed.
func (e Entry) Replayable() (ok bool, fixFirst string) {
	switch e.Reason {
	case ReasonDecryptFailed:
		return false, "fix the merchant's APIv3 key (WECHATPAY_APIV3_KEY_FILE / apiv3_key_file) and restart the consumer"
	case ReasonUnknownMerchant:
		return false, "configure the merchant's account for the consumer"
	case ReasonUnsupportedEventType:
		return false, "upgrade to a version that supports " + e.EventType
	case ReasonMalformed, ReasonInconsistent, ReasonTooLarge, ReasonBadNonce, ReasonBadCiphertext, ReasonUnsupportedAlgorithm:
		return false, "the notification itself is at fault; replay only after an upgrade that handles it (see the error)"
	}
	return true, ""
}
