package wxevents

import "time"

// The data types below are the decrypted resources of WeChat Pay's
// notifications with WeChat Pay's own JSON field names. Amounts are integers
// in the smallest unit of their currency (fen for CNY); times are time.Time,
// decoded from the RFC 3339 text the producer writes with WeChat's own offset
// (usually +08:00). An absent or null field decodes to its zero value; the
// JSON Schemas under schemas/ say which fields each event always carries.
//
// Where WeChat Pay sends one resource for several event types (the three
// refund results, the three violation notices, the two parking-deduction
// results) the types share one struct: RefundSucceeded, RefundAbnormal and
// RefundClosed are all a Refund, and convert to it and to each other freely.
// They are distinct types so that a handler says which event it handles.

// TradeSceneParking is the trade_scene of a Pay Score parking deduction.
const TradeSceneParking = "PARKING"

// PaymentSucceeded is the data of payment.succeeded (WeChat's
// TRANSACTION.SUCCESS) in all its variants: direct merchant (appid, mchid),
// service provider (sp_appid, sp_mchid, sub_appid, sub_mchid), cross-border
// (global, where the WeChat Pay order number is id instead of transaction_id
// and amounts carry an exchange_rate), a Pay Score parking deduction
// (trade_scene PARKING, usually without transaction_id; see ParkingInfo), and
// one sub-order of a combined payment (合单: combine_out_trade_no set, the
// sub-order's own fields at the top level, amounts as total_amount and
// payer_amount).
type PaymentSucceeded struct {
	// ID is the WeChat Pay order number of a global (cross-border) payment.
	ID            string `json:"id,omitempty"`
	TransactionID string `json:"transaction_id,omitempty"`
	AppID         string `json:"appid,omitempty"`
	MchID         string `json:"mchid,omitempty"`
	SpAppID       string `json:"sp_appid,omitempty"`
	SpMchID       string `json:"sp_mchid,omitempty"`
	SubAppID      string `json:"sub_appid,omitempty"`
	SubMchID      string `json:"sub_mchid,omitempty"`
	OutTradeNo    string `json:"out_trade_no,omitempty"`
	// TradeType is JSAPI, NATIVE, APP, MICROPAY, MWEB or FACEPAY.
	TradeType      string `json:"trade_type,omitempty"`
	TradeState     string `json:"trade_state,omitempty"`
	TradeStateDesc string `json:"trade_state_desc,omitempty"`
	// TradeStateDescription is what parking deductions send instead of
	// trade_state_desc.
	TradeStateDescription string            `json:"trade_state_description,omitempty"`
	BankType              string            `json:"bank_type,omitempty"`
	Attach                string            `json:"attach,omitempty"`
	Description           string            `json:"description,omitempty"`
	CreateTime            time.Time         `json:"create_time,omitzero"`
	SuccessTime           time.Time         `json:"success_time,omitzero"`
	Payer                 *Payer            `json:"payer,omitempty"`
	Amount                *Amount           `json:"amount,omitempty"`
	SceneInfo             *SceneInfo        `json:"scene_info,omitempty"`
	Promotions            []PromotionDetail `json:"promotion_detail,omitempty"`

	// TradeScene is "PARKING" for a Pay Score parking deduction.
	TradeScene  string       `json:"trade_scene,omitempty"`
	ParkingInfo *ParkingInfo `json:"parking_info,omitempty"`
	// UserRepaid ("Y"/"N") says whether the user repaid a deduction WeChat
	// Pay had advanced.
	UserRepaid string `json:"user_repaid,omitempty"`

	// The combined order a sub-order belongs to (combined payments only).
	CombineAppID      string `json:"combine_appid,omitempty"`
	CombineMchID      string `json:"combine_mchid,omitempty"`
	CombineOutTradeNo string `json:"combine_out_trade_no,omitempty"`
	// CombinePayerInfo is the payer of the combined order.
	CombinePayerInfo *Payer `json:"combine_payer_info,omitempty"`
}

// IsParking reports whether p is a Pay Score parking deduction.
func (p *PaymentSucceeded) IsParking() bool { return p.TradeScene == TradeSceneParking }

// IsCombined reports whether p is one sub-order of a combined payment.
func (p *PaymentSucceeded) IsCombined() bool { return p.CombineOutTradeNo != "" }

// TransactionNo returns the WeChat Pay order number: transaction_id, or id for
// a global payment.
func (p *PaymentSucceeded) TransactionNo() string {
	if p.TransactionID != "" {
		return p.TransactionID
	}
	return p.ID
}

// Total returns the amount paid in the smallest currency unit: amount.total,
// or amount.total_amount for a combined payment's sub-order, which spells it
// so; 0 without an amount.
func (p *PaymentSucceeded) Total() int64 {
	if p.Amount == nil {
		return 0
	}
	if p.Amount.Total != 0 {
		return p.Amount.Total
	}
	return p.Amount.TotalAmount
}

// ParkingPayment is the resource of a Pay Score parking deduction result,
// shared by PaymentFailed (TRANSACTION.FAIL) and PaymentRepaid
// (TRANSACTION.PAY_BACK: the user repaid an order WeChat Pay had advanced).
// Note trade_state_description, not trade_state_desc.
type ParkingPayment struct {
	AppID                 string    `json:"appid,omitempty"`
	SpMchID               string    `json:"sp_mchid,omitempty"`
	SubAppID              string    `json:"sub_appid,omitempty"`
	SubMchID              string    `json:"sub_mchid,omitempty"`
	OutTradeNo            string    `json:"out_trade_no,omitempty"`
	TransactionID         string    `json:"transaction_id,omitempty"`
	Description           string    `json:"description,omitempty"`
	CreateTime            time.Time `json:"create_time,omitzero"`
	TradeState            string    `json:"trade_state,omitempty"`
	TradeStateDescription string    `json:"trade_state_description,omitempty"`
	SuccessTime           time.Time `json:"success_time,omitzero"`
	BankType              string    `json:"bank_type,omitempty"`
	// UserRepaid is "Y" or "N".
	UserRepaid string `json:"user_repaid,omitempty"`
	Attach     string `json:"attach,omitempty"`
	// TradeScene is "PARKING".
	TradeScene  string            `json:"trade_scene,omitempty"`
	ParkingInfo *ParkingInfo      `json:"parking_info,omitempty"`
	Payer       *Payer            `json:"payer,omitempty"`
	Amount      *Amount           `json:"amount,omitempty"`
	Promotions  []PromotionDetail `json:"promotion_detail,omitempty"`
}

// PaymentFailed is the data of payment.failed (TRANSACTION.FAIL): a Pay Score
// parking deduction failed; trade_state is FAIL.
type PaymentFailed ParkingPayment

// PaymentRepaid is the data of payment.repaid (TRANSACTION.PAY_BACK): the user
// repaid a parking deduction WeChat Pay had advanced; trade_state is PAY_BACK.
type PaymentRepaid ParkingPayment

// ParkingInfo describes the parking stay a deduction pays for.
type ParkingInfo struct {
	ParkingID   string    `json:"parking_id,omitempty"`
	PlateNumber string    `json:"plate_number,omitempty"`
	PlateColor  string    `json:"plate_color,omitempty"`
	StartTime   time.Time `json:"start_time,omitzero"`
	EndTime     time.Time `json:"end_time,omitzero"`
	ParkingName string    `json:"parking_name,omitempty"`
	// ChargingDuration is in seconds.
	ChargingDuration int64  `json:"charging_duration,omitempty"`
	DeviceID         string `json:"device_id,omitempty"`
}

// Refund is the resource of a refund result, shared by RefundSucceeded,
// RefundAbnormal and RefundClosed. Global refunds carry recv_account instead
// of user_received_account, fund_source, and currencies and an exchange rate
// in amount.
type Refund struct {
	MchID         string `json:"mchid,omitempty"`
	SpMchID       string `json:"sp_mchid,omitempty"`
	SubMchID      string `json:"sub_mchid,omitempty"`
	TransactionID string `json:"transaction_id,omitempty"`
	OutTradeNo    string `json:"out_trade_no,omitempty"`
	RefundID      string `json:"refund_id,omitempty"`
	OutRefundNo   string `json:"out_refund_no,omitempty"`
	// RefundStatus is SUCCESS, CLOSED or ABNORMAL.
	RefundStatus string `json:"refund_status,omitempty"`
	// SuccessTime is sent only when RefundStatus is SUCCESS.
	SuccessTime         time.Time `json:"success_time,omitzero"`
	UserReceivedAccount string    `json:"user_received_account,omitempty"`
	RecvAccount         string    `json:"recv_account,omitempty"`
	FundSource          string    `json:"fund_source,omitempty"`
	Amount              *Amount   `json:"amount,omitempty"`
}

// RefundSucceeded is the data of refund.succeeded (REFUND.SUCCESS): the money
// went back; refund_status is SUCCESS and amount.refund is above zero.
type RefundSucceeded Refund

// RefundAbnormal is the data of refund.abnormal (REFUND.ABNORMAL): the refund
// could not be paid out (a closed bank card, say) and needs the merchant's
// action; refund_status is ABNORMAL.
type RefundAbnormal Refund

// RefundClosed is the data of refund.closed (REFUND.CLOSED); refund_status is
// CLOSED.
type RefundClosed Refund

// Violation is the resource of a merchant disposal record about a
// sub-merchant, shared by ViolationPunished, ViolationIntercepted and
// ViolationAppealed.
type Violation struct {
	SubMchID    string `json:"sub_mchid,omitempty"`
	CompanyName string `json:"company_name,omitempty"`
	// RecordID identifies the disposal record.
	RecordID string `json:"record_id,omitempty"`
	// PunishPlan is free text, not an enumeration.
	PunishPlan        string    `json:"punish_plan,omitempty"`
	PunishTime        time.Time `json:"punish_time,omitzero"`
	PunishDescription string    `json:"punish_description,omitempty"`
	// RiskType is an open enumeration such as ONE_YUAN_PURCHASES.
	RiskType        string `json:"risk_type,omitempty"`
	RiskDescription string `json:"risk_description,omitempty"`
}

// ViolationPunished is the data of violation.punished (VIOLATION.PUNISH).
type ViolationPunished Violation

// ViolationIntercepted is the data of violation.intercepted
// (VIOLATION.INTERCEPT).
type ViolationIntercepted Violation

// ViolationAppealed is the data of violation.appealed (VIOLATION.APPEAL).
type ViolationAppealed Violation

// ParkingStateChanged is the data of parking.state_changed
// (VEHICLE.ENTRANCE_STATE_CHANGE): whether a parking entrance can be paid
// with Pay Score.
type ParkingStateChanged struct {
	SpMchID      string `json:"sp_mchid,omitempty"`
	SubMchID     string `json:"sub_mchid,omitempty"`
	ParkingID    string `json:"parking_id,omitempty"`
	OutParkingNo string `json:"out_parking_no,omitempty"`
	PlateNumber  string `json:"plate_number,omitempty"`
	// PlateColor is BLUE, GREEN, YELLOW, BLACK, WHITE or LIMEGREEN.
	PlateColor  string    `json:"plate_color,omitempty"`
	StartTime   time.Time `json:"start_time,omitzero"`
	ParkingName string    `json:"parking_name,omitempty"`
	// FreeDuration is in seconds.
	FreeDuration int64 `json:"free_duration,omitempty"`
	// ParkingState is NORMAL or BLOCKED.
	ParkingState string `json:"parking_state,omitempty"`
	// BlockedStateDescription (PAUSE, OVERDUE, REMOVE, …) is sent when BLOCKED.
	BlockedStateDescription string `json:"blocked_state_description,omitempty"`
	// StateUpdateTime usually has milliseconds.
	StateUpdateTime time.Time `json:"state_update_time,omitzero"`
}

// Payer identifies the paying user.
type Payer struct {
	OpenID    string `json:"openid,omitempty"`
	SpOpenID  string `json:"sp_openid,omitempty"`
	SubOpenID string `json:"sub_openid,omitempty"`
}

// Amount holds the amounts of a payment or refund, as integers in the
// smallest unit of their currency (fen for CNY).
type Amount struct {
	Total int64 `json:"total,omitempty"`
	// TotalAmount and PayerAmount are how a combined-payment sub-order writes
	// total and payer_total.
	TotalAmount int64 `json:"total_amount,omitempty"`
	PayerAmount int64 `json:"payer_amount,omitempty"`
	// SettlementRate is a combined-payment sub-order's settlement rate
	// (WeChat added it in 2024), as an integer.
	SettlementRate int64 `json:"settlement_rate,omitempty"`
	// Refund and PayerRefund are set on refunds.
	Refund        int64 `json:"refund,omitempty"`
	PayerTotal    int64 `json:"payer_total,omitempty"`
	PayerRefund   int64 `json:"payer_refund,omitempty"`
	DiscountTotal int64 `json:"discount_total,omitempty"`
	// Currency defaults to CNY when absent.
	Currency      string        `json:"currency,omitempty"`
	PayerCurrency string        `json:"payer_currency,omitempty"`
	ExchangeRate  *ExchangeRate `json:"exchange_rate,omitempty"`
}

// ExchangeRate is the rate of a cross-border payment or refund; Rate is the
// rate multiplied by 10^8 (8000000 means 0.08).
type ExchangeRate struct {
	Type string `json:"type,omitempty"`
	Rate int64  `json:"rate,omitempty"`
}

// SceneInfo describes where a payment was made.
type SceneInfo struct {
	DeviceID string `json:"device_id,omitempty"`
}

// PromotionDetail is one discount applied to a payment. Basic payments use
// coupon_id, stock_id and the *_contribute amounts; global payments use
// promotion_id, activity_id and the *_contribute_amount amounts.
type PromotionDetail struct {
	CouponID                  string        `json:"coupon_id,omitempty"`
	PromotionID               string        `json:"promotion_id,omitempty"`
	Name                      string        `json:"name,omitempty"`
	Scope                     string        `json:"scope,omitempty"`
	Type                      string        `json:"type,omitempty"`
	Amount                    int64         `json:"amount,omitempty"`
	StockID                   string        `json:"stock_id,omitempty"`
	ActivityID                string        `json:"activity_id,omitempty"`
	WechatpayContribute       int64         `json:"wechatpay_contribute,omitempty"`
	MerchantContribute        int64         `json:"merchant_contribute,omitempty"`
	OtherContribute           int64         `json:"other_contribute,omitempty"`
	WechatpayContributeAmount int64         `json:"wechatpay_contribute_amount,omitempty"`
	MerchantContributeAmount  int64         `json:"merchant_contribute_amount,omitempty"`
	OtherContributeAmount     int64         `json:"other_contribute_amount,omitempty"`
	Currency                  string        `json:"currency,omitempty"`
	GoodsDetail               []GoodsDetail `json:"goods_detail,omitempty"`
}

// GoodsDetail is one item a promotion applied to. Prices are in the smallest
// currency unit.
type GoodsDetail struct {
	GoodsID        string `json:"goods_id,omitempty"`
	GoodsRemark    string `json:"goods_remark,omitempty"`
	Quantity       int64  `json:"quantity,omitempty"`
	UnitPrice      int64  `json:"unit_price,omitempty"`
	DiscountAmount int64  `json:"discount_amount,omitempty"`
	Price          int64  `json:"price,omitempty"`
}
