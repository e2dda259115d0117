package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// The auditor must see each kind of failure it exists for; the streams are filled by hand here.
func TestAuditorFindsLostDuplicatedForged(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := topology.Ensure(ctx, js, topology.Options{}); err != nil {
		t.Fatal(err)
	}

	payment := func(id string) []byte { return []byte(`{"transaction_id":"` + id + `","trade_state":"SUCCESS"}`) }
	fact := func(id string) audit.Fact {
		f, err := audit.FactOf("TRANSACTION.SUCCESS", payment(id))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	event := func(n int, notification, txn string) {
		doc, err := json.Marshal(wxevents.Event{SpecVersion: "1.0", ID: fmt.Sprintf("00000000-0000-5000-8000-%012d", n),
			Source: "/wechatpay/1900000100", Type: "com.wechatpay.payment.succeeded", Subject: txn, Time: time.Now(),
			DataContentType: "application/json", DataSchema: wxevents.TypePaymentSucceeded.DataSchema(),
			NotificationID: notification, WechatEventType: "TRANSACTION.SUCCESS", Data: json.RawMessage(payment(txn))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "wechatpay.events.payment.succeeded.1900000100", doc); err != nil {
			t.Fatal(err)
		}
	}
	a := audit.New(nil)
	accept := func(id string, f audit.Fact, valid bool) {
		a.Expect(id, f, valid)
		a.Record(audit.Answer{NotificationID: id, Code: http.StatusNoContent, Latency: time.Millisecond})
	}
	accept("n-ok", fact("1"), true)
	event(1, "n-ok", "1")
	accept("n-lost", fact("2"), true)
	accept("n-dup-a", fact("3"), true)
	accept("n-dup-b", fact("3"), true) // one fact, two notifications, two events
	event(2, "n-dup-a", "3")
	event(3, "n-dup-b", "3")
	event(4, "n-never-sent", "4")
	accept("n-wrong-fact", fact("5"), true)
	event(5, "n-wrong-fact", "6")
	accept("n-invalid", "", false)
	accept("n-dead", fact("7"), true)
	dlq := nats.NewMsg("wechatpay.dlq.malformed.1900000100")
	dlq.Data = []byte(`{"id":"n-dead"}`)
	if _, err := js.PublishMsg(ctx, dlq); err != nil {
		t.Fatal(err)
	}
	a.Expect("n-503", fact("8"), true)
	a.Record(audit.Answer{NotificationID: "n-503", Code: http.StatusServiceUnavailable})

	r, err := a.Check(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if r.Clean() {
		t.Fatalf("report is clean: %s", r)
	}
	if want := []audit.Fact{fact("2"), fact("5")}; !reflect.DeepEqual(r.Lost, want) {
		t.Errorf("lost = %v, want %v", r.Lost, want)
	}
	if want := []audit.Fact{fact("3")}; !reflect.DeepEqual(r.Duplicated, want) {
		t.Errorf("duplicated = %v, want %v", r.Duplicated, want)
	}
	if len(r.Forged) != 2 {
		t.Errorf("forged = %v, want the never-sent and the wrong-fact events", r.Forged)
	}
	if !reflect.DeepEqual(r.AcceptedInvalid, []string{"n-invalid"}) {
		t.Errorf("accepted invalid = %v", r.AcceptedInvalid)
	}
	if r.Events != 5 || r.DLQ != 1 || r.Codes[204] != 7 || r.Codes[503] != 1 {
		t.Errorf("counts: %s", r)
	}
	t.Log(r)
}

// Facts follow the contract's dedupe keys, independently of spelling differences the events normalise.
func TestFactOf(t *testing.T) {
	cases := []struct {
		eventType, plain string
		want             audit.Fact
	}{
		{"TRANSACTION.SUCCESS", `{"transaction_id":"42"}`, "payment.succeeded:42"},
		{"TRANSACTION.SUCCESS", `{"id":"g1"}`, "payment.succeeded:g1"},
		{"TRANSACTION.FAIL", `{"transaction_id":"42","trade_state":"PAYERROR"}`, "payment.failed:42:PAYERROR"},
		{"REFUND.CLOSED", `{"refund_id":"r1","refund_status":"CLOSED"}`, "refund.closed:r1:CLOSED"},
		{"VIOLATION.APPEAL", `{"record_id":"v1"}`, "violation.appealed:v1"},
		{"VEHICLE.ENTRANCE_STATE_CHANGE", `{"parking_id":"p1","parking_state":"NORMAL","state_update_time":"2026-11-11T08:00:00.5+08:00"}`,
			"parking.state_changed:p1:NORMAL:2026-11-11T00:00:00.5Z"},
	}
	for _, c := range cases {
		got, err := audit.FactOf(c.eventType, []byte(c.plain))
		if err != nil || got != c.want {
			t.Errorf("FactOf(%s, %s) = %q, %v; want %q", c.eventType, c.plain, got, err, c.want)
		}
	}
	if _, err := audit.FactOf("PAYSCORE.USER_OPEN_SERVICE", []byte(`{}`)); err == nil {
		t.Error("an event type outside the contract has a fact")
	}
}
