// Package wxevents holds the domain events that wxpay-events publishes on
// NATS JetStream for WeChat Pay notifications — payment.succeeded,
// refund.closed, parking.state_changed, … — as Go types, with the CloudEvents
// 1.0 envelope they travel in and the layout of the subjects they are
// published on. It is the one definition of those events: the producer
// builds them from these types, and a downstream service decodes them with
// Parse and Event.Decode, or receives them typed through the subscribe
// package. It imports no broker.
package wxevents

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

var (
	// ErrMalformed means a message is not a wxpay-events CloudEvent: not a
	// JSON object, another specversion, or a required attribute missing or
	// of the wrong form. The message names the attribute, never its value.
	ErrMalformed = errors.New("wxevents: not a wxpay-events CloudEvent")
	// ErrUnknownType means the event's type is not one this version of the
	// package knows: a newer producer publishes it. Upgrading this module
	// makes such an event decodable; it is not broken.
	ErrUnknownType = errors.New("wxevents: unknown event type")
	// ErrDataMismatch means an event's data does not decode into the Go type
	// of its event type (a field of another JSON type, a fractional amount,
	// a time that is not RFC 3339): the producer speaks another version of
	// the contract.
	ErrDataMismatch = errors.New("wxevents: data does not match its event type")
	// ErrWrongType means DecodeAs was asked for another type than the
	// event's.
	ErrWrongType = errors.New("wxevents: event is of another type")
)

// Type is a domain event type, e.g. "payment.succeeded": the <type> tokens
// of the event's subject and, prefixed with CloudEventTypePrefix, its
// CloudEvents type.
type Type string

// The domain event types. Each has one Go data type, named after it.
const (
	TypePaymentSucceeded     Type = "payment.succeeded"
	TypePaymentFailed        Type = "payment.failed"
	TypePaymentRepaid        Type = "payment.repaid"
	TypeRefundSucceeded      Type = "refund.succeeded"
	TypeRefundAbnormal       Type = "refund.abnormal"
	TypeRefundClosed         Type = "refund.closed"
	TypeViolationPunished    Type = "violation.punished"
	TypeViolationIntercepted Type = "violation.intercepted"
	TypeViolationAppealed    Type = "violation.appealed"
	TypeParkingStateChanged  Type = "parking.state_changed"
)

// Data is the data of one domain event: one of PaymentSucceeded,
// PaymentFailed, PaymentRepaid, RefundSucceeded, RefundAbnormal,
// RefundClosed, ViolationPunished, ViolationIntercepted, ViolationAppealed or
// ParkingStateChanged. The set is closed so that a handler typed on Data
// can only name a type the producer publishes.
type Data interface {
	// DomainType returns the event type whose data this is.
	DomainType() Type
	isData()
}

// DomainType implements Data.
func (PaymentSucceeded) DomainType() Type { return TypePaymentSucceeded }

// DomainType implements Data.
func (PaymentFailed) DomainType() Type { return TypePaymentFailed }

// DomainType implements Data.
func (PaymentRepaid) DomainType() Type { return TypePaymentRepaid }

// DomainType implements Data.
func (RefundSucceeded) DomainType() Type { return TypeRefundSucceeded }

// DomainType implements Data.
func (RefundAbnormal) DomainType() Type { return TypeRefundAbnormal }

// DomainType implements Data.
func (RefundClosed) DomainType() Type { return TypeRefundClosed }

// DomainType implements Data.
func (ViolationPunished) DomainType() Type { return TypeViolationPunished }

// DomainType implements Data.
func (ViolationIntercepted) DomainType() Type { return TypeViolationIntercepted }

// DomainType implements Data.
func (ViolationAppealed) DomainType() Type { return TypeViolationAppealed }

// DomainType implements Data.
func (ParkingStateChanged) DomainType() Type { return TypeParkingStateChanged }

func (PaymentSucceeded) isData()     {}
func (PaymentFailed) isData()        {}
func (PaymentRepaid) isData()        {}
func (RefundSucceeded) isData()      {}
func (RefundAbnormal) isData()       {}
func (RefundClosed) isData()         {}
func (ViolationPunished) isData()    {}
func (ViolationIntercepted) isData() {}
func (ViolationAppealed) isData()    {}
func (ParkingStateChanged) isData()  {}

// entry is one event type with the decoder of its data type.
type entry struct {
	typ    Type
	decode func(json.RawMessage) (Data, error)
}

// registry maps every event type to the decoder of its data type, in the
// order of the contract's table.
var registry = []entry{
	{TypePaymentSucceeded, decodeData[PaymentSucceeded]},
	{TypePaymentFailed, decodeData[PaymentFailed]},
	{TypePaymentRepaid, decodeData[PaymentRepaid]},
	{TypeRefundSucceeded, decodeData[RefundSucceeded]},
	{TypeRefundAbnormal, decodeData[RefundAbnormal]},
	{TypeRefundClosed, decodeData[RefundClosed]},
	{TypeViolationPunished, decodeData[ViolationPunished]},
	{TypeViolationIntercepted, decodeData[ViolationIntercepted]},
	{TypeViolationAppealed, decodeData[ViolationAppealed]},
	{TypeParkingStateChanged, decodeData[ParkingStateChanged]},
}

// Types returns every event type this package knows, in the contract's
// order.
func Types() []Type {
	out := make([]Type, len(registry))
	for i, r := range registry {
		out[i] = r.typ
	}
	return out
}

// Known reports whether t is an event type this package knows.
func (t Type) Known() bool {
	return slices.ContainsFunc(registry, func(r entry) bool { return r.typ == t })
}

func decodeData[T Data](raw json.RawMessage) (Data, error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, dataError(v.DomainType(), err)
	}
	return v, nil
}

// dataError describes why data did not decode by the field and the JSON
// type, never by the value, which may be personal data.
func dataError(t Type, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		kind, _, _ := strings.Cut(te.Value, " ") // "number 1.5": the kind, not the value
		return fmt.Errorf("%w: %s: field %s: got JSON %s, want %s", ErrDataMismatch, t, te.Field, kind, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: %s: invalid JSON at byte %d", ErrDataMismatch, t, se.Offset)
	}
	// time.Time's own errors quote the text; say what was expected instead.
	return fmt.Errorf("%w: %s: a field does not decode (times must be RFC 3339)", ErrDataMismatch, t)
}

// Decode decodes the event's data into the Go type of its event type; the
// result is one of the types listed at Data, by value, ready for a type
// switch. It fails with ErrUnknownType for a type this package does not know
// and ErrDataMismatch when the data does not fit its type.
func (e Event) Decode() (Data, error) {
	t := e.DomainType()
	for _, r := range registry {
		if r.typ == t {
			return r.decode(e.Data)
		}
	}
	return nil, fmt.Errorf("%w: %.64q", ErrUnknownType, e.Type)
}

// DecodeAs decodes the event's data as T, the data type of the event type
// the caller expects: ErrWrongType if the event is of another type, else as
// Decode.
//
//	p, err := wxevents.DecodeAs[wxevents.PaymentSucceeded](e)
func DecodeAs[T Data](e Event) (T, error) {
	var zero T
	if want := zero.DomainType(); e.DomainType() != want {
		return zero, fmt.Errorf("%w: %.64q, not %s", ErrWrongType, e.Type, want)
	}
	d, err := e.Decode()
	if err != nil {
		return zero, err
	}
	return d.(T), nil
}

// CloudEventTypePrefix prefixes a domain type to make its CloudEvents type:
// "com.wechatpay.payment.succeeded".
const CloudEventTypePrefix = "com.wechatpay."

// CloudEventType returns the CloudEvents type of t.
func (t Type) CloudEventType() string { return CloudEventTypePrefix + string(t) }

// DataSchemaBase prefixes a schema file name to make the absolute URI that
// CloudEvents requires for dataschema: the file's place in this project's
// repository (schemas/<type>.json), where a subscriber in any language finds
// the JSON Schema of the data. Nothing fetches it at run time.
const DataSchemaBase = "https://github.com/wxpay-events/wxpay-events/blob/main/schemas/"

// DataSchema returns the dataschema URI of t's data.
func (t Type) DataSchema() string { return DataSchemaBase + string(t) + ".json" }

// SourcePrefix prefixes the merchant id to make an event's source:
// "/wechatpay/1900000100".
const SourcePrefix = "/wechatpay/"

// Fixed CloudEvents attribute values.
const (
	// SpecVersion is the CloudEvents version of every event.
	SpecVersion = "1.0"
	// DataContentType is the content type of every event's data.
	DataContentType = "application/json"
)

// CloudEvents extension attributes. CloudEvents 1.0 asks for names of at most
// 20 lower-case ASCII letters and digits.
const (
	// ExtNotificationID carries the id of the WeChat Pay notification that
	// carried the fact (the first one processed).
	ExtNotificationID = "wxnotificationid"
	// ExtEventType carries WeChat Pay's event_type.
	ExtEventType = "wxeventtype"
	// ExtSubMchID carries the sub-merchant of a service-provider
	// notification; absent for a direct merchant.
	ExtSubMchID = "wxsubmchid"
)

// DomainType returns the event's domain type, its CloudEvents type without
// CloudEventTypePrefix ("" if the type lacks the prefix).
func (e Event) DomainType() Type {
	t, ok := strings.CutPrefix(e.Type, CloudEventTypePrefix)
	if !ok {
		return ""
	}
	return Type(t)
}

// MchID returns the merchant the event belongs to (the one WeChat Pay sent
// the notification to), from its source.
func (e Event) MchID() string { return strings.TrimPrefix(e.Source, SourcePrefix) }
