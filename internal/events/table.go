package events

import (
	"encoding/json"
	"reflect"
)

// row maps one WeChat Pay event_type to its domain event. It is the only place
// that knows which notification becomes which event.
type row struct {
	eventType string // WeChat Pay event_type, e.g. "TRANSACTION.SUCCESS"
	typ       string // domain type, e.g. "payment.succeeded" (CloudEvents type com.wechatpay.<typ>)
	schema    string // file name under schemas/ describing Event.Data
	decode    decoder
}

// table is THE mapping; see CONTRACT.md "Event types". Columns: WeChat
// event_type, domain type, schema, then the Go type with its dedupe-key,
// subject and business-time functions. When the business time is absent the
// event takes the notification's create_time.
var table = []row{
	{"TRANSACTION.SUCCESS", "payment.succeeded", "payment.succeeded.json", typed(paymentKey, (*PaymentSucceeded).TransactionNo, paymentTime)},
	{"TRANSACTION.FAIL", "payment.failed", "payment.failed.json", typed(parkingPaymentKey, parkingPaymentSubject, parkingPaymentTime)},
	{"TRANSACTION.PAY_BACK", "payment.repaid", "payment.repaid.json", typed(parkingPaymentKey, parkingPaymentSubject, parkingPaymentTime)},
	{"REFUND.SUCCESS", "refund.succeeded", "refund.succeeded.json", typed(refundKey, refundSubject, refundTime)},
	{"REFUND.ABNORMAL", "refund.abnormal", "refund.abnormal.json", typed(refundKey, refundSubject, refundTime)},
	{"REFUND.CLOSED", "refund.closed", "refund.closed.json", typed(refundKey, refundSubject, refundTime)},
	{"VIOLATION.PUNISH", "violation.punished", "violation.punished.json", typed(violationKey, violationSubject, violationTime)},
	{"VIOLATION.INTERCEPT", "violation.intercepted", "violation.intercepted.json", typed(violationKey, violationSubject, violationTime)},
	{"VIOLATION.APPEAL", "violation.appealed", "violation.appealed.json", typed(violationKey, violationSubject, violationTime)},
	{"VEHICLE.ENTRANCE_STATE_CHANGE", "parking.state_changed", "parking.state_changed.json", typed(parkingStateKey, parkingStateSubject, parkingStateTime)},
}

// keyField is a named dedupe key part; keyOf requires every one of them.
type keyField struct{ name, value string }

func keyOf(fields ...keyField) ([]string, error) {
	out := make([]string, len(fields))
	for i, f := range fields {
		v, err := required(f.name, f.value)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// payment.succeeded: transaction_id, or id for a global payment.
func paymentKey(p *PaymentSucceeded) ([]string, error) {
	if p.TransactionID == "" && p.ID != "" {
		return keyOf(keyField{"id", p.ID})
	}
	return keyOf(keyField{"transaction_id", p.TransactionID})
}
func paymentTime(p *PaymentSucceeded) Time { return p.SuccessTime }

// payment.failed, payment.repaid: transaction_id + trade_state.
func parkingPaymentKey(p *ParkingPayment) ([]string, error) {
	return keyOf(keyField{"transaction_id", p.TransactionID}, keyField{"trade_state", p.TradeState})
}
func parkingPaymentSubject(p *ParkingPayment) string { return p.TransactionID }
func parkingPaymentTime(p *ParkingPayment) Time      { return p.SuccessTime }

// refund.*: refund_id + refund_status.
func refundKey(p *Refund) ([]string, error) {
	return keyOf(keyField{"refund_id", p.RefundID}, keyField{"refund_status", p.RefundStatus})
}
func refundSubject(p *Refund) string { return p.RefundID }
func refundTime(p *Refund) Time      { return p.SuccessTime }

// violation.*: the contract says record_id + event type; the event type is
// already the <type> segment of every key, so record_id is the only part.
func violationKey(p *Violation) ([]string, error) {
	return keyOf(keyField{"record_id", p.RecordID})
}
func violationSubject(p *Violation) string { return p.RecordID }
func violationTime(p *Violation) Time      { return p.PunishTime }

// parking.state_changed: parking_id + parking_state + state_update_time (as
// the instant in UTC, so the same time sent with another offset or precision
// gives the same key).
func parkingStateKey(p *ParkingStateChange) ([]string, error) {
	return keyOf(keyField{"parking_id", p.ParkingID}, keyField{"parking_state", p.ParkingState},
		keyField{"state_update_time", keyTime(p.StateUpdateTime)})
}
func parkingStateSubject(p *ParkingStateChange) string { return p.ParkingID }
func parkingStateTime(p *ParkingStateChange) Time      { return p.StateUpdateTime }

// fact is what a row's decoder extracts from a plaintext.
type fact struct {
	key     []string // dedupe key parts after "<mchid>:<type>"
	subject string   // business id
	time    Time     // business time; zero when absent
}

// decoder checks and normalises a plaintext tree in place and extracts its
// fact.
type decoder func(tree map[string]any) (data []byte, f fact, err error)

// typed builds the decoder of a row from its Go type T and its three columns.
func typed[T any](key func(*T) ([]string, error), subject func(*T) string, businessTime func(*T) Time) decoder {
	t := reflect.TypeFor[T]()
	mustCheckable(t)
	return func(tree map[string]any) ([]byte, fact, error) {
		if _, err := check(tree, t, ""); err != nil {
			return nil, fact{}, err
		}
		data, err := marshalData(tree)
		if err != nil {
			return nil, fact{}, err
		}
		v := new(T)
		// check has verified every declared field, so this cannot fail on types.
		if err := json.Unmarshal(data, v); err != nil {
			return nil, fact{}, malformedJSON(err)
		}
		k, err := key(v)
		if err != nil {
			return nil, fact{}, err
		}
		return data, fact{key: k, subject: subject(v), time: businessTime(v)}, nil
	}
}

// lookup finds the row of a WeChat Pay event_type.
func lookup(eventType string) (row, bool) {
	for _, r := range table {
		if r.eventType == eventType {
			return r, true
		}
	}
	return row{}, false
}
