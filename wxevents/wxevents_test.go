package wxevents_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

// refundEvent is a refund.succeeded exactly as the producer publishes it.
const refundEvent = `{"specversion":"1.0","id":"0b7a7b52-5b7e-5d0e-9d0e-6a4c1f6b2f10","source":"/wechatpay/1900000100",` +
	`"type":"com.wechatpay.refund.succeeded","subject":"50000000382019052709732678859","time":"2018-06-08T10:34:56.120+08:00",` +
	`"datacontenttype":"application/json","dataschema":"https://github.com/wxpay-events/wxpay-events/blob/main/schemas/refund.succeeded.json",` +
	`"wxnotificationid":"EV-2018022511223320873","wxeventtype":"REFUND.SUCCESS","wxsubmchid":"1900000109",` +
	`"data":{"mchid":"1900000100","sub_mchid":"1900000109","out_trade_no":"1217752501201407033233368018",` +
	`"refund_id":"50000000382019052709732678859","refund_status":"SUCCESS","success_time":"2018-06-08T10:34:56+08:00",` +
	`"user_received_account":"招商银行信用卡0403 & co","amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999},"new_field":"kept"}}`

func TestParseAndDecode(t *testing.T) {
	e, err := wxevents.Parse([]byte(refundEvent))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ what, got, want string }{
		{"ID", e.ID, "0b7a7b52-5b7e-5d0e-9d0e-6a4c1f6b2f10"},
		{"DomainType", string(e.DomainType()), "refund.succeeded"},
		{"MchID", e.MchID(), "1900000100"},
		{"SubMchID", e.SubMchID, "1900000109"},
		{"Subject", e.Subject, "50000000382019052709732678859"},
		{"NotificationID", e.NotificationID, "EV-2018022511223320873"},
		{"WechatEventType", e.WechatEventType, "REFUND.SUCCESS"},
		{"DataSchema", e.DataSchema, wxevents.TypeRefundSucceeded.DataSchema()},
		{"Time", e.Time.Format(time.RFC3339Nano), "2018-06-08T10:34:56.12+08:00"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}

	d, err := e.Decode()
	if err != nil {
		t.Fatal(err)
	}
	r, ok := d.(wxevents.RefundSucceeded)
	if !ok {
		t.Fatalf("Decode = %T, want wxevents.RefundSucceeded", d)
	}
	if r.RefundID != e.Subject || r.Amount.Refund != 999 || r.SuccessTime.IsZero() || r.OutTradeNo == "" {
		t.Errorf("decoded %+v", r)
	}
	typed, err := wxevents.DecodeAs[wxevents.RefundSucceeded](e)
	if err != nil || typed.RefundID != r.RefundID {
		t.Errorf("DecodeAs = %+v, %v", typed, err)
	}
	if _, err := wxevents.DecodeAs[wxevents.RefundClosed](e); !errors.Is(err, wxevents.ErrWrongType) {
		t.Errorf("DecodeAs another type: %v, want ErrWrongType", err)
	}

	// MarshalJSON gives back the published bytes: the envelope has one encoding.
	b, err := e.MarshalJSON()
	if err != nil || string(b) != refundEvent {
		t.Errorf("MarshalJSON = %s, %v\nwant %s", b, err, refundEvent)
	}
}

// edit returns refundEvent with one attribute's JSON text replaced, or removed when to is "".
func edit(t *testing.T, attr, to string) []byte {
	t.Helper()
	i := strings.Index(refundEvent, `"`+attr+`":`)
	if i < 0 {
		t.Fatalf("no attribute %s", attr)
	}
	j := i + len(attr) + 3 // the value
	end := j               // just past the value
	switch refundEvent[j] {
	case '"':
		end = j + 1 + strings.IndexByte(refundEvent[j+1:], '"') + 1
	case '{':
		end = len(refundEvent) - 1 // data is last
	}
	if to == "" {
		if refundEvent[end] == ',' {
			return []byte(refundEvent[:i] + refundEvent[end+1:])
		}
		return []byte(refundEvent[:i-1] + refundEvent[end:]) // the last one: drop the comma before
	}
	return []byte(refundEvent[:j] + to + refundEvent[end:])
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		attr string // named in the error
	}{
		{"not JSON", []byte(`{"specversion":`), "JSON"},
		{"an array", []byte(`[1]`), "JSON object"},
		{"specversion 0.3", edit(t, "specversion", `"0.3"`), "specversion"},
		{"no specversion", edit(t, "specversion", ""), "specversion"},
		{"no id", edit(t, "id", ""), "id"},
		{"foreign type", edit(t, "type", `"com.example.refund.succeeded"`), "type"},
		{"source without merchant", edit(t, "source", `"/wechatpay/"`), "source"},
		{"foreign source", edit(t, "source", `"/alipay/1900000100"`), "source"},
		{"time not RFC 3339", edit(t, "time", `"20180608103456"`), "time"},
		{"no time", edit(t, "time", ""), "time"},
		{"binary data", edit(t, "datacontenttype", `"application/octet-stream"`), "datacontenttype"},
		{"data not an object", edit(t, "data", `"text"`), "data"},
		{"no data", edit(t, "data", ""), "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := wxevents.Parse(tt.raw)
			if !errors.Is(err, wxevents.ErrMalformed) || !strings.Contains(err.Error(), tt.attr) {
				t.Fatalf("Parse err = %v, want ErrMalformed naming %s", err, tt.attr)
			}
		})
	}
}

// A newer producer's event still parses; its data is handed back as an error a subscriber can route, and
// the error never quotes a value.
func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name  string
		raw   []byte
		want  error
		field string
	}{
		{"unknown type", edit(t, "type", `"com.wechatpay.transfer.finished"`), wxevents.ErrUnknownType, "transfer.finished"},
		{"amount as a string", []byte(strings.Replace(refundEvent, `"refund":999`, `"refund":"999"`, 1)), wxevents.ErrDataMismatch, "amount.refund"},
		{"fractional amount", []byte(strings.Replace(refundEvent, `"refund":999`, `"refund":9.99`, 1)), wxevents.ErrDataMismatch, "amount.refund"},
		{"object where a string was", []byte(strings.Replace(refundEvent, `"refund_status":"SUCCESS"`, `"refund_status":{"v":"SUCCESS"}`, 1)), wxevents.ErrDataMismatch, "refund_status"},
		{"time not RFC 3339", []byte(strings.Replace(refundEvent, `"success_time":"2018-06-08T10:34:56+08:00"`, `"success_time":"20180608103456"`, 1)), wxevents.ErrDataMismatch, "RFC 3339"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := wxevents.Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			_, err = e.Decode()
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("Decode err = %v, want %v naming %s", err, tt.want, tt.field)
			}
			for _, value := range []string{"999", "9.99", "20180608103456"} {
				if strings.Contains(err.Error(), value) {
					t.Errorf("error quotes a value: %v", err)
				}
			}
		})
	}
}

func TestTypes(t *testing.T) {
	for _, typ := range wxevents.Types() {
		if !typ.Known() || typ.CloudEventType() != "com.wechatpay."+string(typ) ||
			typ.DataSchema() != wxevents.DataSchemaBase+string(typ)+".json" {
			t.Errorf("%s: known %v, %s, %s", typ, typ.Known(), typ.CloudEventType(), typ.DataSchema())
		}
	}
	if wxevents.Type("transfer.finished").Known() {
		t.Error("an unknown type is known")
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct {
		typ        wxevents.Type
		mchid, sub string
		want       string
	}{
		{wxevents.TypePaymentSucceeded, "1900000100", "", "wechatpay.events.payment.succeeded.1900000100._"},
		{wxevents.TypeRefundClosed, "1900000100", "1900000109", "wechatpay.events.refund.closed.1900000100.1900000109"},
	}
	for _, tt := range tests {
		got := wxevents.Subject(tt.typ, tt.mchid, tt.sub)
		if got != tt.want {
			t.Errorf("Subject = %q, want %q", got, tt.want)
		}
		p, ok := wxevents.ParseSubject(got)
		if !ok || p != (wxevents.SubjectParts{Type: tt.typ, MchID: tt.mchid, SubMchID: tt.sub}) {
			t.Errorf("ParseSubject(%q) = %+v, %v", got, p, ok)
		}
	}
	if got := wxevents.SubjectFilter("refund.*", "", wxevents.NoSubMerchant); got != "wechatpay.events.refund.*.*._" {
		t.Errorf("SubjectFilter = %q", got)
	}
}

// A service that reads the stream by other means (a NATS client of its own, a replay tool) parses each
// message and switches on the decoded type.
func ExampleParse() {
	e, err := wxevents.Parse([]byte(refundEvent))
	if err != nil {
		fmt.Println(err)
		return
	}
	d, err := e.Decode()
	if err != nil {
		fmt.Println("cannot decode yet:", err) // e.g. a type added by a newer producer
		return
	}
	switch d := d.(type) {
	case wxevents.PaymentSucceeded:
		fmt.Println("paid", d.OutTradeNo, d.Total())
	case wxevents.RefundSucceeded:
		fmt.Println("refunded", d.OutTradeNo, d.Amount.Refund, "event", e.ID)
	}
	// Output: refunded 1217752501201407033233368018 999 event 0b7a7b52-5b7e-5d0e-9d0e-6a4c1f6b2f10
}
