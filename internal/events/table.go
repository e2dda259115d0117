package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

// row maps one WeChat Pay event_type to its domain event. It is the only place
// that knows which notification becomes which event.
type row struct {
	eventType string // WeChat Pay event_type, e.g. "TRANSACTION.SUCCESS"
	typ       string // domain type, e.g. "payment.succeeded" (CloudEvents type com.wechatpay.<typ>)
	schema    string // file name under schemas/ describing Event.Data
	decode    *decoder
}

// table is THE mapping; see CONTRACT.md "Event types". Columns: WeChat
// event_type, domain type, schema, then the decoder: the Go type of the
// resource (package wxevents' type for the domain type, or the struct it
// shares with its siblings) with the function that names its business fact
// (dedupe key, subject, sub-merchant, business time) after checking that the
// resource says what its type claims (state, amount, merchant). When the
// business time is absent the event takes the notification's create_time.
var table = []row{
	{"TRANSACTION.SUCCESS", "payment.succeeded", "payment.succeeded.json", decodePayment},
	{"TRANSACTION.FAIL", "payment.failed", "payment.failed.json", typed(parkingPaymentFact("FAIL"))},
	{"TRANSACTION.PAY_BACK", "payment.repaid", "payment.repaid.json", typed(parkingPaymentFact("PAY_BACK"))},
	{"REFUND.SUCCESS", "refund.succeeded", "refund.succeeded.json", typed(refundFact("SUCCESS"))},
	{"REFUND.ABNORMAL", "refund.abnormal", "refund.abnormal.json", typed(refundFact("ABNORMAL"))},
	{"REFUND.CLOSED", "refund.closed", "refund.closed.json", typed(refundFact("CLOSED"))},
	{"VIOLATION.PUNISH", "violation.punished", "violation.punished.json", typed(violationFact)},
	{"VIOLATION.INTERCEPT", "violation.intercepted", "violation.intercepted.json", typed(violationFact)},
	{"VIOLATION.APPEAL", "violation.appealed", "violation.appealed.json", typed(violationFact)},
	{"VEHICLE.ENTRANCE_STATE_CHANGE", "parking.state_changed", "parking.state_changed.json", typed(parkingStateFact)},
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

// orderingMerchant is the merchant that placed an order: the sub-merchant of a
// service-provider order, else the merchant in the resource, else the
// merchant the notification was addressed to. Keys built on out_trade_no need
// it, because out_trade_no is unique only per ordering merchant.
func orderingMerchant(mchid string, candidates ...string) string {
	for _, c := range candidates {
		if c != "" {
			return c
		}
	}
	return mchid
}

// inconsistent reports that field does not say what the notification's type
// claims; the text names the field, never its value.
func inconsistent(field, problem string) error {
	return fmt.Errorf("%w: field %s: %s", ErrInconsistent, field, problem)
}

// addressedTo checks that one of a resource's merchant fields names mchid,
// the merchant the notification was sent to: as the merchant itself, as the
// service provider, or as the sub-merchant whose own account it is.
func addressedTo(mchid string, fields ...keyField) error {
	var names, present []string
	for _, f := range fields {
		if f.value == mchid {
			return nil
		}
		names = append(names, f.name)
		if f.value != "" {
			present = append(present, f.name)
		}
	}
	if len(present) == 0 {
		return inconsistent(strings.Join(names, "/"), "required: the merchant the fact belongs to")
	}
	return inconsistent(strings.Join(present, "/"), "names another merchant than the one the notification was sent to")
}

// stateIs checks a state field against the one the event type stands for.
func stateIs(field, got, want string) error {
	switch got {
	case want:
		return nil
	case "":
		return inconsistent(field, "required: "+want)
	}
	return inconsistent(field, "is not "+want)
}

// positive checks that an amount is present and above zero (an absent
// amount reads as zero).
func positive(field string, v int64) error {
	if v <= 0 {
		return inconsistent(field, "required, above zero")
	}
	return nil
}

// payment.succeeded. A Pay Score parking deduction (trade_scene PARKING) is
// keyed by ordering merchant + out_trade_no whether or not it carries the
// optional transaction_id, so that two notices of one deduction, one with and
// one without it, cannot make two facts. Every other payment is keyed by
// transaction_id, or id for a global payment; both are always sent. A
// payment succeeded only with trade_state SUCCESS and a positive total
// (total_amount for a combined payment's sub-order).
func paymentFact(p *wxevents.PaymentSucceeded, mchid string) (fact, error) {
	f := fact{subject: p.TransactionNo(), sub: p.SubMchID, time: p.SuccessTime}
	var err error
	switch {
	case p.IsParking():
		f.key, err = keyOf(keyField{"sub_mchid/sp_mchid/mchid", orderingMerchant(mchid, p.SubMchID, p.SpMchID, p.MchID)},
			keyField{"out_trade_no", p.OutTradeNo})
		if f.subject == "" {
			f.subject = p.OutTradeNo
		}
	case p.TransactionID == "" && p.ID != "":
		f.key, err = keyOf(keyField{"id", p.ID})
	case p.TransactionID == "":
		err = fieldError("transaction_id", "required (id for a cross-border payment; out_trade_no with trade_scene PARKING)")
	default:
		f.key, err = keyOf(keyField{"transaction_id", p.TransactionID})
	}
	if err != nil {
		return f, err
	}
	if err := stateIs("trade_state", p.TradeState, "SUCCESS"); err != nil {
		return f, err
	}
	err = positive("amount.total", p.Total()) // total_amount for a combined payment's sub-order
	if err != nil {
		return f, err
	}
	return f, addressedTo(mchid, keyField{"mchid", p.MchID}, keyField{"sp_mchid", p.SpMchID},
		keyField{"sub_mchid", p.SubMchID}, keyField{"combine_mchid", p.CombineMchID})
}

// payment.failed, payment.repaid (parking deductions): ordering merchant +
// out_trade_no + trade_state; transaction_id is optional in these notices.
// trade_state must be the event type's own (FAIL, PAY_BACK).
func parkingPaymentFact(state string) func(*wxevents.ParkingPayment, string) (fact, error) {
	return func(p *wxevents.ParkingPayment, mchid string) (fact, error) {
		k, err := keyOf(keyField{"sub_mchid/sp_mchid", orderingMerchant(mchid, p.SubMchID, p.SpMchID)},
			keyField{"out_trade_no", p.OutTradeNo}, keyField{"trade_state", p.TradeState})
		subject := p.TransactionID
		if subject == "" {
			subject = p.OutTradeNo
		}
		f := fact{key: k, subject: subject, sub: p.SubMchID, time: p.SuccessTime}
		if err != nil {
			return f, err
		}
		if err := stateIs("trade_state", p.TradeState, state); err != nil {
			return f, err
		}
		return f, addressedTo(mchid, keyField{"sp_mchid", p.SpMchID}, keyField{"sub_mchid", p.SubMchID})
	}
}

// refund.*: refund_id + refund_status. refund_status must be the event
// type's own (SUCCESS, ABNORMAL, CLOSED) and the refunded amount positive.
func refundFact(status string) func(*wxevents.Refund, string) (fact, error) {
	return func(p *wxevents.Refund, mchid string) (fact, error) {
		k, err := keyOf(keyField{"refund_id", p.RefundID}, keyField{"refund_status", p.RefundStatus})
		f := fact{key: k, subject: p.RefundID, sub: p.SubMchID, time: p.SuccessTime}
		if err != nil {
			return f, err
		}
		if err := stateIs("refund_status", p.RefundStatus, status); err != nil {
			return f, err
		}
		var refunded int64
		if p.Amount != nil {
			refunded = p.Amount.Refund
		}
		if err := positive("amount.refund", refunded); err != nil {
			return f, err
		}
		return f, addressedTo(mchid, keyField{"mchid", p.MchID}, keyField{"sp_mchid", p.SpMchID}, keyField{"sub_mchid", p.SubMchID})
	}
}

// violation.*: the contract says record_id + event type; the event type is
// already the <type> segment of every key, so record_id is the only part.
// The resource names only the sanctioned sub-merchant, not the service
// provider it is sent to, so there is no merchant to compare.
func violationFact(p *wxevents.Violation, _ string) (fact, error) {
	k, err := keyOf(keyField{"record_id", p.RecordID})
	return fact{key: k, subject: p.RecordID, sub: p.SubMchID, time: p.PunishTime}, err
}

// parking.state_changed: parking_id + parking_state + state_update_time (as
// the instant in UTC, so the same time sent with another offset or precision
// gives the same key).
func parkingStateFact(p *wxevents.ParkingStateChanged, mchid string) (fact, error) {
	k, err := keyOf(keyField{"parking_id", p.ParkingID}, keyField{"parking_state", p.ParkingState},
		keyField{"state_update_time", keyTime(p.StateUpdateTime)})
	f := fact{key: k, subject: p.ParkingID, sub: p.SubMchID, time: p.StateUpdateTime}
	if err != nil {
		return f, err
	}
	return f, addressedTo(mchid, keyField{"sp_mchid", p.SpMchID}, keyField{"sub_mchid", p.SubMchID})
}

// fact is one business fact a plaintext holds.
type fact struct {
	data    []byte    // the normalised resource (for a combined payment: the sub-order)
	key     []string  // dedupe key parts after "<mchid>:<type>"
	subject string    // business id
	sub     string    // sub-merchant (sub_mchid), "" for a direct merchant
	time    time.Time // business time; zero when absent
}

// decoder extracts the facts of a plaintext: one, or one per sub-order of a
// combined payment. mchid is the merchant the notification was addressed
// to. fast is the single pass of fast.go, which declines whatever it does not
// accept outright; reference checks and normalises a decoded tree in place
// and defines the behaviour (see Build).
type decoder struct {
	fast      func(plaintext []byte, mchid string) ([]fact, bool)
	reference func(tree map[string]any, mchid string) ([]fact, error)
}

// typed builds a decoder from a resource type T and the function that names
// its fact.
func typed[T any](name func(*T, string) (fact, error)) *decoder {
	t := reflect.TypeFor[T]()
	mustCheckable(t)
	p := planOf(t)
	return &decoder{
		fast: func(plaintext []byte, mchid string) ([]fact, bool) {
			w, ok := newWalker(plaintext)
			if !ok {
				return nil, false
			}
			defer w.release()
			return walkTyped(w, p, name, mchid)
		},
		reference: func(tree map[string]any, mchid string) ([]fact, error) {
			if _, err := check(tree, t, ""); err != nil {
				return nil, err
			}
			data, err := marshalData(tree)
			if err != nil {
				return nil, err
			}
			v := new(T)
			// check has verified every declared field, so this cannot fail on types.
			if err := json.Unmarshal(data, v); err != nil {
				return nil, malformedJSON(err)
			}
			f, err := name(v, mchid)
			if err != nil {
				return nil, err
			}
			f.data = data
			return []fact{f}, nil
		},
	}
}

// walkTyped decodes the plaintext of w as a T (whose plan is p) and names its
// fact.
func walkTyped[T any](w *walker, p *plan, name func(*T, string) (fact, error), mchid string) ([]fact, bool) {
	v := new(T)
	data, ok := w.decode(p, reflect.ValueOf(v).Elem(), true)
	if !ok {
		return nil, false
	}
	f, err := name(v, mchid)
	if err != nil {
		return nil, false
	}
	f.data = data
	return []fact{f}, true
}

// inherited reports whether a top-level field of a combined payment is copied
// into each sub-order's event: the combined order's own fields (combine_*,
// scene_info) and fields this project does not know, so nothing WeChat sends
// is lost; never a payment field such as transaction_id, amount or
// trade_scene, which belongs to the sub-order alone.
func inherited(field string) bool {
	if field == "sub_orders" {
		return false
	}
	if strings.HasPrefix(field, "combine_") || field == "scene_info" {
		return true
	}
	_, isPaymentField := fieldsOf(paymentType)[field]
	return !isPaymentField
}

var (
	paymentType   = reflect.TypeFor[wxevents.PaymentSucceeded]()
	singlePayment = typed(paymentFact)
	combinedType  = reflect.TypeFor[combinedPayment]()
	paymentPlan   = planOf(paymentType)
	combinedPlan  = planOf(combinedType)
	decodePayment = &decoder{fast: fastPayment, reference: paymentTree}
	// combinedKeys make a payment a combined one.
	combinedKeys = []string{"sub_orders", "combine_out_trade_no"}
)

func init() { mustCheckable(combinedType) }

// paymentTree decodes TRANSACTION.SUCCESS. A combined payment (合单, a
// resource with combine_out_trade_no or sub_orders) is one fact per
// sub-order: the sub-order's own fields with the combined order's fields
// merged in (see inherited), each checked and keyed like a single payment. Any sub-order that cannot be keyed fails the whole
// notification, so that a replay after a fix yields all of them.
func paymentTree(tree map[string]any, mchid string) ([]fact, error) {
	_, hasSubOrders := tree["sub_orders"]
	_, hasCombine := tree["combine_out_trade_no"]
	if !hasSubOrders && !hasCombine {
		return singlePayment.reference(tree, mchid)
	}
	if _, err := check(tree, combinedType, ""); err != nil {
		return nil, err
	}
	subs, _ := tree["sub_orders"].([]any)
	if len(subs) == 0 {
		return nil, fieldError("sub_orders", "required: a combined payment (combine_out_trade_no) lists its sub-orders")
	}
	facts := make([]fact, 0, len(subs))
	seen := make(map[string]bool, len(subs))
	for i, s := range subs {
		sub, ok := s.(map[string]any) // check verified that each item is an object or null
		if !ok {
			return nil, fieldError("sub_orders["+strconv.Itoa(i)+"]", "want an object")
		}
		merged := make(map[string]any, len(tree)+len(sub))
		for k, v := range tree {
			if inherited(k) {
				merged[k] = v
			}
		}
		for k, v := range sub {
			merged[k] = v
		}
		fs, err := singlePayment.reference(merged, mchid)
		if err != nil {
			return nil, fmt.Errorf("sub_orders[%d]: %w", i, err)
		}
		k := dedupeKey(mchid, "", fs[0].key)
		if seen[k] {
			continue // the same sub-order listed twice is one fact
		}
		seen[k] = true
		facts = append(facts, fs[0])
	}
	return facts, nil
}

// fastPayment is paymentTree in one pass per sub-order. It walks the
// plaintext as a single payment until it meets a combined-payment key at the
// top level; then it validates the whole plaintext as a combined payment and
// walks each sub-order merged with the inherited top-level members.
func fastPayment(plaintext []byte, mchid string) ([]fact, bool) {
	w, ok := newWalker(plaintext)
	if !ok {
		return nil, false
	}
	defer w.release()
	w.stop = combinedKeys
	facts, ok := walkTyped(w, paymentPlan, paymentFact, mchid)
	if !w.stopped {
		return facts, ok
	}
	w.stop = nil
	// Validate the whole plaintext as a combined payment (check's first step),
	// noting its top-level members.
	var top []member
	w.reset(false)
	i := w.space(0)
	if i >= len(w.in) || w.in[i] != '{' {
		return nil, false
	}
	open, first, _ := w.open()
	end, ok := w.members(i, func(key string, j int) (int, bool) {
		top = append(top, member{key, j})
		return w.member(key, j, combinedPlan, reflect.ValueOf(new(combinedPayment)).Elem())
	})
	w.scratch = w.out[:0]
	if !ok || !w.close(open, first) || w.space(end) != len(w.in) {
		return nil, false
	}
	var subOrders = -1
	combined := false
	for _, m := range top {
		switch m.key {
		case "sub_orders":
			subOrders, combined = m.value, true
		case "combine_out_trade_no":
			combined = true
		}
	}
	if !combined {
		return walkTyped(w, paymentPlan, paymentFact, mchid)
	}
	if subOrders < 0 || w.in[subOrders] != '[' {
		return nil, false // no sub-orders (the reference says so)
	}
	facts = nil
	seen := map[string]bool{}
	_, ok = w.items(subOrders, func(j int) (int, bool) {
		if w.in[j] != '{' {
			return 0, false
		}
		var sub []member
		end, ok := w.members(j, func(key string, k int) (int, bool) {
			sub = append(sub, member{key, k})
			return w.skip(k)
		})
		if !ok {
			return 0, false
		}
		merged := sub
		for _, m := range top {
			if inherited(m.key) && !slices.ContainsFunc(sub, func(s member) bool { return s.key == m.key }) {
				merged = append(merged, m)
			}
		}
		saved := w.out
		w.reset(true)
		v := new(wxevents.PaymentSucceeded)
		if !w.objectOf(merged, paymentPlan, reflect.ValueOf(v).Elem()) {
			return 0, false
		}
		f, err := paymentFact(v, mchid)
		if err != nil {
			return 0, false
		}
		f.data = w.out
		w.out = saved
		if k := dedupeKey(mchid, "", f.key); !seen[k] {
			seen[k] = true
			facts = append(facts, f)
		}
		return end, true
	})
	if !ok || len(facts) == 0 {
		return nil, false
	}
	return facts, true
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
