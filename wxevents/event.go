package wxevents

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Event is one business fact as published on WECHATPAY_EVENTS: a CloudEvents
// 1.0 document in structured JSON mode. Its fields are the CloudEvents
// attributes, named as on the wire in their json tags; Data is the event's
// data as published, which Decode or DecodeAs turn into its Go type.
//
// ID is the idempotency key a subscriber wants: the producer derives it from
// the merchant, the type and the business key of the fact (a transaction id,
// a refund id and status, …), so the same fact always arrives under the same
// ID, however often WeChat Pay notified it and however often it is
// redelivered.
type Event struct {
	// SpecVersion is SpecVersion ("1.0").
	SpecVersion string `json:"specversion"`
	// ID is the event's id, a UUID; also the JetStream Nats-Msg-Id.
	ID string `json:"id"`
	// Source is "/wechatpay/<mchid>", the merchant WeChat Pay sent the
	// notification to (see MchID).
	Source string `json:"source"`
	// Type is the CloudEvents type, "com.wechatpay.<domain type>" (see
	// DomainType).
	Type string `json:"type"`
	// Subject is the business id: transaction_id (a global payment's id, a
	// parking deduction's out_trade_no when it has no transaction_id),
	// refund_id, record_id or parking_id.
	Subject string `json:"subject"`
	// Time is the business time (success_time, punish_time,
	// state_update_time), else the notification's create_time, in WeChat's
	// offset.
	Time time.Time `json:"time"`
	// DataContentType is DataContentType ("application/json").
	DataContentType string `json:"datacontenttype"`
	// DataSchema is the absolute URI of the JSON Schema of Data (see
	// Type.DataSchema).
	DataSchema string `json:"dataschema"`
	// NotificationID is the id of the WeChat Pay notification that carried
	// the fact (extension wxnotificationid).
	NotificationID string `json:"wxnotificationid"`
	// WechatEventType is WeChat Pay's event_type, e.g. "TRANSACTION.SUCCESS"
	// (extension wxeventtype).
	WechatEventType string `json:"wxeventtype"`
	// SubMchID is the sub-merchant of a service-provider notification, ""
	// for a direct merchant (extension wxsubmchid).
	SubMchID string `json:"wxsubmchid,omitempty"`
	// TraceParent is the W3C trace context of the span that published the
	// event (CloudEvents distributed-tracing extension traceparent), present
	// when the producer traces; "" otherwise. The subscribe package continues
	// the trace from it, or from the message's traceparent header.
	TraceParent string `json:"traceparent,omitempty"`
	// Data is the decrypted resource with WeChat Pay's field names, a JSON
	// object; fields the Go types do not list are kept here.
	Data json.RawMessage `json:"data"`
}

// wire is Event as it is encoded, attribute by attribute in this order.
type wire struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	DataSchema      string          `json:"dataschema"`
	NotificationID  string          `json:"wxnotificationid"`
	EventType       string          `json:"wxeventtype"`
	SubMchID        string          `json:"wxsubmchid,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// MarshalJSON encodes e as compact CloudEvents structured JSON, attributes
// in a fixed order, the time in RFC 3339 (whole milliseconds as three
// digits, the way WeChat Pay writes them), and text unescaped, so Chinese
// text and '&' in WeChat's fields stay readable. Called directly it returns
// exactly the bytes the producer publishes; json.Marshal re-escapes HTML
// characters on top, which changes the bytes but not the document.
func (e Event) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(wire{
		SpecVersion:     e.SpecVersion,
		ID:              e.ID,
		Source:          e.Source,
		Type:            e.Type,
		Subject:         e.Subject,
		Time:            formatTime(e.Time),
		DataContentType: e.DataContentType,
		DataSchema:      e.DataSchema,
		NotificationID:  e.NotificationID,
		EventType:       e.WechatEventType,
		SubMchID:        e.SubMchID,
		TraceParent:     e.TraceParent,
		Data:            e.Data,
	})
	if err != nil {
		return nil, fmt.Errorf("wxevents: encode event: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// formatTime is RFC 3339 with as many fractional digits as needed, but
// whole milliseconds as three digits.
func formatTime(t time.Time) string {
	if ns := t.Nanosecond(); ns != 0 && ns%int(time.Millisecond) == 0 {
		return t.Format("2006-01-02T15:04:05.000Z07:00")
	}
	return t.Format(time.RFC3339Nano)
}

// UnmarshalJSON decodes and checks a CloudEvent as Parse does.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w wire
	if err := json.Unmarshal(b, &w); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("%w: invalid JSON at byte %d", ErrMalformed, se.Offset)
		}
		return fmt.Errorf("%w: not a JSON object of string attributes", ErrMalformed)
	}
	ev := Event{
		SpecVersion:     w.SpecVersion,
		ID:              w.ID,
		Source:          w.Source,
		Type:            w.Type,
		Subject:         w.Subject,
		DataContentType: w.DataContentType,
		DataSchema:      w.DataSchema,
		NotificationID:  w.NotificationID,
		WechatEventType: w.EventType,
		SubMchID:        w.SubMchID,
		TraceParent:     w.TraceParent,
		Data:            w.Data,
	}
	if err := ev.check(w.Time); err != nil {
		return err
	}
	*e = ev
	return nil
}

// check verifies what a subscriber relies on to route and decode an event,
// and parses its time. Attributes it does not need (subject, dataschema, the
// extensions) are not required, so that an event stays readable when a
// newer producer adds or drops one.
func (e *Event) check(when string) error {
	switch {
	case e.SpecVersion != SpecVersion:
		return attrError("specversion", "want "+SpecVersion)
	case e.ID == "":
		return attrError("id", "required")
	case e.DomainType() == "":
		return attrError("type", "want "+CloudEventTypePrefix+"<type>")
	case !strings.HasPrefix(e.Source, SourcePrefix) || e.Source == SourcePrefix:
		return attrError("source", "want "+SourcePrefix+"<mchid>")
	case e.DataContentType != "" && e.DataContentType != DataContentType:
		return attrError("datacontenttype", "want "+DataContentType)
	}
	t, err := time.Parse(time.RFC3339Nano, when)
	if err != nil {
		return attrError("time", "want RFC 3339")
	}
	e.Time = t
	if d := bytes.TrimLeft(e.Data, " \t\r\n"); len(d) == 0 || d[0] != '{' {
		return attrError("data", "want a JSON object")
	}
	return nil
}

func attrError(attr, problem string) error {
	return fmt.Errorf("%w: attribute %s: %s", ErrMalformed, attr, problem)
}

// Parse decodes a CloudEvent as published on WECHATPAY_EVENTS (a message's
// data). It checks the envelope — specversion 1.0, an id, a com.wechatpay.
// type, a /wechatpay/ source, an RFC 3339 time, an object as data — and fails
// with ErrMalformed otherwise. It does not decode the data: an event of a
// type this package does not know parses, and Decode then says
// ErrUnknownType. Unknown attributes are ignored.
func Parse(raw []byte) (Event, error) {
	var e Event
	if err := e.UnmarshalJSON(raw); err != nil {
		return Event{}, err
	}
	return e, nil
}
