// Package dlq owns the dead-letter contract of WECHATPAY_DLQ: what a dead-letter entry holds (the raw
// notification and its WeChat Pay headers, plus why), how one is written, found, replayed and purged. The
// consumer writes entries through it; wxpayctl and the console read, replay and purge through it.
package dlq

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// Headers of an entry, besides the notification's own Wechatpay-* and Request-ID headers.
const (
	HeaderReason          = "Dlq-Reason"
	HeaderError           = "Dlq-Error"
	HeaderOriginalSubject = "Dlq-Original-Subject"
	HeaderDeliveries      = "Dlq-Deliveries"
	HeaderAt              = "Dlq-At"
	HeaderStreamSeq       = "Dlq-Stream-Seq"
	HeaderOriginalMsgID   = "Dlq-Original-Msg-Id"
)

// Reasons: the <reason> token of wechatpay.dlq.<reason>.<mchid> and the Dlq-Reason header.
const (
	ReasonMalformed            = "malformed"
	ReasonInconsistent         = "inconsistent" // signed, but not what its event type claims (or not this merchant's)
	ReasonTooLarge             = "too_large"    // resource nested deeper or larger than an event may carry
	ReasonUnsupportedEventType = "unsupported_event_type"
	ReasonUnknownMerchant      = "unknown_merchant"
	ReasonDecryptFailed        = "decrypt_failed" // wrong APIv3 key or tampered ciphertext
	ReasonBadNonce             = "bad_nonce"
	ReasonBadCiphertext        = "bad_ciphertext"
	ReasonUnsupportedAlgorithm = "unsupported_algorithm"
	ReasonMaxDeliveries        = "max_deliveries"
)

// Sentinel errors.
var (
	// ErrNoStream: WECHATPAY_DLQ does not exist (run wxpayctl streams apply).
	ErrNoStream = errors.New("dlq: stream " + topology.DLQStream + " not found")
	// ErrNotFound: no entry has that sequence — replayed or purged meanwhile, or never there.
	ErrNotFound = errors.New("dlq: no such entry")
	// ErrNotInbound: an entry's Dlq-Original-Subject is not an inbound subject, so it cannot be replayed.
	ErrNotInbound = errors.New("dlq: original subject is not an inbound subject")
)

// maxErrorHeader keeps Dlq-Error readable; error texts never carry plaintext, but they can be long.
const maxErrorHeader = 512

// NotificationHeaders keeps what identifies and authenticates a notification — its Wechatpay-* headers and
// Request-ID — and the W3C trace context the receiver stored with it, and nothing else: what a
// dead-letter entry keeps of the inbound message, and what a replay sends back, so that the replay's
// processing continues the notification's trace.
func NotificationHeaders(h nats.Header) nats.Header {
	out := make(nats.Header, 7)
	for k, v := range h {
		if strings.HasPrefix(k, "Wechatpay-") || k == topology.HeaderRequestID ||
			k == tracing.HeaderTraceParent || k == tracing.HeaderTraceState {
			out[k] = v
		}
	}
	return out
}

// Inbound is the stored notification a dead-letter entry is made of.
type Inbound struct {
	Subject    string      // its WECHATPAY_INBOUND subject
	Data       []byte      // the raw body
	Header     nats.Header // its headers as stored
	Seq        uint64      // its WECHATPAY_INBOUND sequence
	Deliveries uint64      // how often the consumer received it
	MchID      string      // the merchant it was sent to; "" when unknown
}

// Message builds the dead-letter entry of in: its body and notification headers, plus the reason, the
// error text (without plaintext: the callers' errors never carry it; cut to 512 bytes on one line) and
// where it came from.
func Message(in Inbound, reason string, cause error, now time.Time) *nats.Msg {
	mchid := in.MchID
	if mchid == "" {
		mchid = "unknown"
	}
	out := NotificationHeaders(in.Header)
	if id := in.Header.Get(jetstream.MsgIDHeader); id != "" {
		out.Set(HeaderOriginalMsgID, id)
	}
	errText := ""
	if cause != nil {
		errText = cause.Error()
		if len(errText) > maxErrorHeader {
			errText = errText[:maxErrorHeader]
		}
		errText = strings.NewReplacer("\r", " ", "\n", " ").Replace(errText)
	}
	out.Set(HeaderReason, reason)
	out.Set(HeaderError, errText)
	out.Set(HeaderOriginalSubject, in.Subject)
	out.Set(HeaderDeliveries, strconv.FormatUint(in.Deliveries, 10))
	out.Set(HeaderAt, now.UTC().Format(time.RFC3339Nano))
	out.Set(HeaderStreamSeq, strconv.FormatUint(in.Seq, 10))
	return &nats.Msg{Subject: topology.DLQSubject(reason, mchid), Data: in.Data, Header: out}
}

// MsgID is the Nats-Msg-Id of the dead-letter entry of inbound message seq, so that the two ways one
// message can be dead-lettered (by the worker, and from the max-deliveries advisory after a crash)
// collapse into one entry.
func MsgID(inboundSeq uint64) string { return "dlq:" + strconv.FormatUint(inboundSeq, 10) }

// ReplayMsgID is the Nats-Msg-Id of a replay of DLQ entry seq: a new id per entry, so that the inbound
// stream's duplicate window does not swallow the replay of a recent failure, while a re-run of the same
// entry's replay (after a crash between the PubAck and the delete) is recognised as a duplicate.
func ReplayMsgID(originalMsgID, originalSubject, notificationID string, seq uint64) string {
	if originalMsgID == "" {
		mchid, _, _ := topology.ParseInboundSubject(originalSubject)
		originalMsgID = topology.InboundMsgID(mchid, notificationID)
	}
	return originalMsgID + ":replay:" + strconv.FormatUint(seq, 10)
}
