package events_test

import (
	"encoding/json"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// TestCombinedPayment: a combined payment (合单) is one payment.succeeded per sub-order, keyed by the
// sub-order's transaction_id, with the sub-order's own fields and the combined order's identifiers.
func TestCombinedPayment(t *testing.T) {
	evs := mustBuildAll(t, notification("TRANSACTION.SUCCESS"), sample(t, "TRANSACTION.SUCCESS.combine"))
	if len(evs) != 2 {
		t.Fatalf("%d events, want one per sub-order (2)", len(evs))
	}
	wantTxn := []string{"1009660380201506130728806387", "1009660380201506130728806388"}
	wantTotal := []float64{10, 20}
	for i, e := range evs {
		if e.DedupeKey != mchID+":payment.succeeded:"+wantTxn[i] || e.Subject != wantTxn[i] || e.Type != "payment.succeeded" {
			t.Errorf("event %d: key %q subject %q type %q", i, e.DedupeKey, e.Subject, e.Type)
		}
		var d map[string]any
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d["combine_out_trade_no"] != "20150806125346" || d["combine_mchid"] != "1900000100" || d["combine_appid"] == nil ||
			d["combine_payer_info"] == nil || d["scene_info"] == nil {
			t.Errorf("event %d lacks the combined order's identifiers: %s", i, e.Data)
		}
		if d["transaction_id"] != wantTxn[i] || d["sub_orders"] != nil {
			t.Errorf("event %d: data is not the sub-order alone: %s", i, e.Data)
		}
		if amt, _ := d["amount"].(map[string]any); amt["total_amount"] != wantTotal[i] {
			t.Errorf("event %d: amount %v, want total_amount %v", i, d["amount"], wantTotal[i])
		}
	}
	if evs[0].ID == evs[1].ID {
		t.Error("two sub-orders share an event id")
	}

	// A sub-order listed twice is one fact; the same sub-order notified on its own is the same fact too.
	sub := `{"transaction_id":"42","out_trade_no":"a","trade_state":"SUCCESS","amount":{"total_amount":5}}`
	dup := []byte(`{"combine_out_trade_no":"C1","combine_mchid":"` + mchID + `","sub_orders":[` + sub + `,` + sub + `]}`)
	if evs := mustBuildAll(t, notification("TRANSACTION.SUCCESS"), dup); len(evs) != 1 {
		t.Errorf("a sub-order listed twice gives %d events", len(evs))
	}
	single := mustBuild(t, notification("TRANSACTION.SUCCESS"), []byte(`{"transaction_id":"`+wantTxn[0]+`","mchid":"`+mchID+`","trade_state":"SUCCESS","amount":{"total":10}}`))
	if single.ID != evs[0].ID {
		t.Error("a sub-order and the same transaction notified alone have different event ids")
	}
}

// TestParkingDeductionKey: a Pay Score parking deduction is keyed by ordering merchant + out_trade_no,
// with or without the optional transaction_id, so that two notices of one deduction are one fact.
func TestParkingDeductionKey(t *testing.T) {
	plain := sample(t, "TRANSACTION.SUCCESS.parking")
	without := mustBuild(t, notification("TRANSACTION.SUCCESS"), plain)
	with := mustBuild(t, notification("TRANSACTION.SUCCESS"), setField(t, plain, "transaction_id", `"4200000000201708263212345678"`))
	if without.DedupeKey != mchID+":payment.succeeded:10000109:20150806125347" || with.ID != without.ID {
		t.Errorf("keys %q / %q", without.DedupeKey, with.DedupeKey)
	}
	if without.Subject != "20150806125347" || with.Subject != "4200000000201708263212345678" {
		t.Errorf("subjects %q / %q: out_trade_no without transaction_id, else transaction_id", without.Subject, with.Subject)
	}
	if without.SubMchID != "10000109" {
		t.Errorf("SubMchID = %q", without.SubMchID)
	}
	// Without a sub-merchant the service provider is the ordering merchant.
	direct := mustBuild(t, notification("TRANSACTION.FAIL"), setField(t, sample(t, "TRANSACTION.FAIL"), "sub_mchid", ""))
	if direct.DedupeKey != mchID+":payment.failed:"+mchID+":20150806125346:FAIL" || direct.SubMchID != "" {
		t.Errorf("no sub_mchid: key %q sub %q", direct.DedupeKey, direct.SubMchID)
	}
	// Parking times are normalised like every other time.
	odd := setField(t, plain, "parking_info", `{"start_time":"20170826104339","end_time":"2017-08-26 11:43:39"}`)
	var d struct {
		ParkingInfo struct {
			StartTime string `json:"start_time"`
			EndTime   string `json:"end_time"`
		} `json:"parking_info"`
	}
	if err := json.Unmarshal(mustBuild(t, notification("TRANSACTION.SUCCESS"), odd).Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.ParkingInfo.StartTime != "2017-08-26T10:43:39+08:00" || d.ParkingInfo.EndTime != "2017-08-26T11:43:39+08:00" {
		t.Errorf("parking_info times %+v", d.ParkingInfo)
	}
}

// TestSubMerchant: the sub-merchant of a service-provider notification is the event's SubMchID (the
// wxsubmchid extension and the <sub> subject token); a direct merchant's event has none.
func TestSubMerchant(t *testing.T) {
	for name, want := range map[string]string{
		"TRANSACTION.SUCCESS":         "",
		"TRANSACTION.SUCCESS.partner": "1900000109",
		"REFUND.SUCCESS":              "",
	} {
		e := mustBuild(t, notification(samples.EventType(name)), sample(t, name))
		if e.SubMchID != want {
			t.Errorf("%s: SubMchID %q, want %q", name, e.SubMchID, want)
		}
		ce, err := e.CloudEvent()
		if err != nil {
			t.Fatal(err)
		}
		var attrs map[string]any
		if err := json.Unmarshal(ce, &attrs); err != nil {
			t.Fatal(err)
		}
		if got, has := attrs["wxsubmchid"]; (want == "") == has || (has && got != want) {
			t.Errorf("%s: wxsubmchid %v (present %v), want %q", name, got, has, want)
		}
	}
}
