package events

import "github.com/wxpay-events/wxpay-events/wxevents"

// The Go types of the events' data are package wxevents' (PaymentSucceeded,
// Refund, …), with WeChat Pay's own JSON field names. Build checks a
// plaintext against the type its table row names (every listed field must
// have the listed JSON type, amounts must be integers in the smallest
// currency unit, times must be parseable) and normalises the time fields to
// RFC 3339 with WeChat's offset and precision; Event.Data stays the canonical
// form and keeps fields these types do not list. A subscriber decodes Data
// into the same types with wxevents.Parse and Event.Decode.
//
// An absent or null field decodes to its zero value; only the fields of the
// dedupe key are required, and only those WeChat Pay always sends.

// combinedPayment is the top level of a combined-payment (合单) resource: the
// combined order and its sub-orders, each of which becomes one
// payment.succeeded.
type combinedPayment struct {
	CombineAppID      string              `json:"combine_appid,omitempty"`
	CombineMchID      string              `json:"combine_mchid,omitempty"`
	CombineOutTradeNo string              `json:"combine_out_trade_no,omitempty"`
	CombinePayerInfo  *wxevents.Payer     `json:"combine_payer_info,omitempty"`
	SceneInfo         *wxevents.SceneInfo `json:"scene_info,omitempty"`
	SubOrders         []subOrder          `json:"sub_orders,omitempty"`
}

// subOrder only says that each sub_orders item is an object; its fields are
// checked as a wxevents.PaymentSucceeded once the combined order's
// identifiers are merged in.
type subOrder struct{}
