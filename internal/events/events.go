// Package events turns the decrypted resource of a WeChat Pay notification
// into a typed domain event (payment.succeeded, refund.closed, …) with a
// stable dedupe key, and renders it as a CloudEvents 1.0 JSON document. The
// mapping from WeChat event_type to domain event lives in one table
// (table.go). The package does no I/O and imports neither NATS nor Redis.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

var (
	// ErrUnsupportedEventType means the notification's event_type has no row
	// in the mapping table. It is permanent until the type is supported.
	ErrUnsupportedEventType = errors.New("events: unsupported event type")
	// ErrMalformed means the plaintext (or the notification's mchid, id or
	// create_time) cannot make an event: invalid JSON, a field of the wrong
	// JSON type, a non-integer amount, an unparseable time, or a missing
	// dedupe-key field. The wrapped message names the field, never its value.
	ErrMalformed = errors.New("events: malformed notification")
	// ErrInconsistent means a well-formed, correctly signed resource does not
	// say what its event type claims, or was not for the merchant it was
	// sent to: a TRANSACTION.SUCCESS whose trade_state is not SUCCESS or
	// whose amount is not positive, a refund whose refund_status is not its
	// event's, a resource whose merchant fields name none of the merchant
	// the notification was addressed to. The signature proves who sent a
	// notification, not that it is consistent; such a fact is never
	// published. The wrapped message names the field, never its value.
	ErrInconsistent = errors.New("events: inconsistent notification")
	// ErrTooLarge means the resource is nested deeper than MaxDepth or its
	// data would exceed MaxDataBytes: common JSON clients downstream could
	// not read the event.
	ErrTooLarge = errors.New("events: resource too large")
)

// Bounds on what an event passes through. Real resources are a few
// kilobytes and a handful of levels deep; a combined payment of many
// sub-orders stays well within them.
const (
	// MaxDepth bounds the nesting of the resource (objects and arrays).
	MaxDepth = 32
	// MaxDataBytes bounds one event's data.
	MaxDataBytes = 32 << 10
)

// Notification is what Build needs from the notification envelope.
type Notification struct {
	ID         string // envelope id, unique per notification (not per business fact)
	EventType  string // envelope event_type, e.g. "TRANSACTION.SUCCESS"
	CreateTime string // envelope create_time, any format ParseTime accepts
	// MchID is the merchant the notification was addressed to (the one in
	// the notify URL), not a field of the plaintext. It scopes the event's
	// source, NATS subject, dedupe key and id.
	MchID string
}

// Event is one business fact, ready to publish.
type Event struct {
	// ID is the RFC 9562 UUIDv5 of DedupeKey (which begins with MchID and
	// Type) in a namespace fixed for this project, so the same fact received
	// under two notification ids gets the same ID. It is the CloudEvents id
	// and the JetStream Nats-Msg-Id.
	ID string
	// Type is the domain type, e.g. "payment.succeeded".
	Type  string
	MchID string
	// SubMchID is the sub-merchant (sub_mchid) of a service-provider
	// notification, "" for a direct merchant. It is the wxsubmchid extension
	// and the <sub> token of the events subject.
	SubMchID string
	// DedupeKey is "<mchid>:<type>:<part>[:<part>…]" with the parts of the
	// contract's dedupe key (e.g. "1900000100:refund.closed:5020…:CLOSED").
	// Parts keep ASCII letters, digits, '.', '_' and '-' and escape every
	// other byte as %XX, so the key is one printable token, safe as a Redis
	// key suffix.
	DedupeKey string
	// Subject is the business id: transaction_id (global payments: id),
	// refund_id, record_id or parking_id.
	Subject string
	// Time is the business time (success_time, punish_time or
	// state_update_time), else the notification's create_time.
	Time time.Time
	// Schema is the file name under schemas/ that describes Data, e.g.
	// "payment.succeeded.json"; the CloudEvent's dataschema is
	// DataSchemaBase + Schema.
	Schema          string
	NotificationID  string
	WechatEventType string
	// Data is the decrypted resource as a JSON object with WeChat Pay's field
	// names: unknown fields kept, time fields normalised to RFC 3339.
	Data json.RawMessage
	// TraceParent is the W3C traceparent of the span publishing the event,
	// set by the publisher when tracing is on; "" leaves the extension out.
	// Build never sets it: it is not part of the fact.
	TraceParent string
}

// Mapping is one row of the mapping table, as seen from outside.
type Mapping struct {
	EventType string // WeChat Pay event_type, e.g. "REFUND.CLOSED"
	Type      string // domain type, e.g. "refund.closed"
	Schema    string // schema file name under schemas/, e.g. "refund.closed.json"
}

// Mappings returns the mapping table in its fixed order.
func Mappings() []Mapping {
	out := make([]Mapping, len(table))
	for i, r := range table {
		out[i] = Mapping{EventType: r.eventType, Type: r.typ, Schema: r.schema}
	}
	return out
}

// Supported reports whether Build maps the WeChat Pay event_type eventType.
func Supported(eventType string) bool {
	_, ok := lookup(eventType)
	return ok
}

// Build maps a notification and its decrypted resource to its events: one per
// business fact, so one for every notification except a combined payment
// (合单), which gives one payment.succeeded per sub-order. It fails with
// ErrUnsupportedEventType for an event_type without a mapping, ErrTooLarge
// beyond MaxDepth or MaxDataBytes, ErrInconsistent for a resource that does
// not say what its type claims (see ErrInconsistent), and ErrMalformed
// otherwise; all are permanent, and a failure yields no event at all.
func Build(n Notification, plaintext []byte) ([]Event, error) {
	r, ok := lookup(n.EventType)
	if !ok {
		return nil, fmt.Errorf("%w: %.40q", ErrUnsupportedEventType, n.EventType)
	}
	if !validMchID(n.MchID) {
		return nil, fmt.Errorf("%w: notification mchid: want 1 to 32 ASCII letters, digits, '_' or '-'", ErrMalformed)
	}
	if n.ID == "" {
		return nil, fmt.Errorf("%w: notification id: required", ErrMalformed)
	}
	// The single pass (fast.go) accepts what it can decode outright; the
	// reference path decides everything else and words every error.
	facts, ok := r.decode.fast(plaintext, n.MchID)
	if !ok {
		var err error
		if facts, err = referenceFacts(r, plaintext, n.MchID); err != nil {
			return nil, err
		}
	}
	out := make([]Event, 0, len(facts))
	for _, f := range facts {
		if len(f.data) > MaxDataBytes {
			return nil, fmt.Errorf("%w: data of %d bytes, more than %d", ErrTooLarge, len(f.data), MaxDataBytes)
		}
		if f.sub != "" && !validMchID(f.sub) {
			return nil, fieldError("sub_mchid", "want 1 to 32 ASCII letters, digits, '_' or '-'")
		}
		when := f.time
		if when.IsZero() {
			created, err := ParseTime(n.CreateTime)
			if err != nil {
				return nil, fmt.Errorf("%w: notification create_time: unrecognised time format", ErrMalformed)
			}
			when = created.Time()
		}
		key := dedupeKey(n.MchID, r.typ, f.key)
		out = append(out, Event{
			ID:              eventID(key),
			Type:            r.typ,
			MchID:           n.MchID,
			SubMchID:        f.sub,
			DedupeKey:       key,
			Subject:         f.subject,
			Time:            when,
			Schema:          r.schema,
			NotificationID:  n.ID,
			WechatEventType: n.EventType,
			Data:            f.data,
		})
	}
	return out, nil
}

// referenceFacts is the reference path: the plaintext decoded into a generic
// tree, checked against the row's type (check.go), then decoded again into it.
func referenceFacts(r row, plaintext []byte, mchid string) ([]fact, error) {
	tree, err := decodeObject(plaintext)
	if err != nil {
		return nil, err
	}
	if depth(tree) > MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d levels", ErrTooLarge, MaxDepth)
	}
	return r.decode.reference(tree, mchid)
}

// depth is the nesting depth of a decoded JSON value: 0 for a scalar, 1 for
// an object or array of scalars.
func depth(v any) int {
	d := 0
	switch t := v.(type) {
	case map[string]any:
		for _, e := range t {
			d = max(d, depth(e))
		}
	case []any:
		for _, e := range t {
			d = max(d, depth(e))
		}
	default:
		return 0
	}
	return d + 1
}

// validMchID keeps a merchant id usable as one NATS subject token and in
// keys.
func validMchID(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !keyByte(c) || c == '.' {
			return false
		}
	}
	return true
}

// CloudEventType returns the CloudEvents type of a domain type:
// "com.wechatpay.<type>".
func CloudEventType(typ string) string { return wxevents.Type(typ).CloudEventType() }

// DataSchemaBase prefixes a schema file name to make the absolute URI that
// CloudEvents requires for dataschema: the file's place in this project's
// repository. The schemas package compiles its files under the same URIs.
const DataSchemaBase = wxevents.DataSchemaBase

// CloudEvents extension attributes (see package wxevents, which owns the
// envelope).
const (
	// ExtNotificationID carries the id of the WeChat Pay notification that
	// carried the fact (the first one processed).
	ExtNotificationID = wxevents.ExtNotificationID
	// ExtEventType carries WeChat Pay's event_type.
	ExtEventType = wxevents.ExtEventType
	// ExtSubMchID carries the sub-merchant of a service-provider
	// notification; absent for a direct merchant.
	ExtSubMchID = wxevents.ExtSubMchID
)

// CloudEvent renders e as a CloudEvents 1.0 structured-mode JSON document
// through wxevents.Event, which owns the envelope: specversion "1.0", id,
// source "/wechatpay/<mchid>", type "com.wechatpay.<type>", subject, time
// (RFC 3339), datacontenttype "application/json", dataschema (DataSchemaBase
// + the schema file name), the extensions wxnotificationid, wxeventtype,
// (for a sub-merchant) wxsubmchid and (when traced) traceparent, and data.
func (e Event) CloudEvent() ([]byte, error) {
	return e.Envelope().MarshalJSON()
}

// Envelope is e as the wxevents.Event a subscriber decodes.
func (e Event) Envelope() wxevents.Event {
	return wxevents.Event{
		SpecVersion:     wxevents.SpecVersion,
		ID:              e.ID,
		Source:          wxevents.SourcePrefix + e.MchID,
		Type:            CloudEventType(e.Type),
		Subject:         e.Subject,
		Time:            e.Time,
		DataContentType: wxevents.DataContentType,
		DataSchema:      DataSchemaBase + e.Schema,
		NotificationID:  e.NotificationID,
		WechatEventType: e.WechatEventType,
		SubMchID:        e.SubMchID,
		TraceParent:     e.TraceParent,
		Data:            e.Data,
	}
}

// marshalData encodes v as compact JSON without HTML escaping, so Chinese
// text and '&' in WeChat fields stay readable.
func marshalData(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("events: encode: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
