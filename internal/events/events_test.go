package events_test

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

const mchID = "1900000100"

// notification is the envelope part Build needs, as the consumer passes it.
func notification(eventType string) events.Notification {
	return events.Notification{
		ID:         "EV-2018022511223320873",
		EventType:  eventType,
		CreateTime: "2015-05-20T13:29:35+08:00",
		MchID:      mchID,
	}
}

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, ok := samples.All()[name]
	if !ok {
		t.Fatalf("no sample %q", name)
	}
	return b
}

// mustBuild returns the one event of a single-fact plaintext.
func mustBuild(t testing.TB, n events.Notification, plaintext []byte) events.Event {
	t.Helper()
	evs := mustBuildAll(t, n, plaintext)
	if len(evs) != 1 {
		t.Fatalf("Build(%s) gave %d events, want 1", n.EventType, len(evs))
	}
	return evs[0]
}

func mustBuildAll(t testing.TB, n events.Notification, plaintext []byte) []events.Event {
	t.Helper()
	evs, err := events.Build(n, plaintext)
	if err != nil {
		t.Fatalf("Build(%s): %v", n.EventType, err)
	}
	return evs
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// forMerchant returns plaintext with the top-level merchant fields that name
// the account (mchid, sp_mchid, combine_mchid) set to mchid.
func forMerchant(t testing.TB, plaintext []byte, mchid string) []byte {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(plaintext, &obj); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"mchid", "sp_mchid", "combine_mchid"} {
		if _, ok := obj[f]; ok {
			plaintext = setField(t, plaintext, f, `"`+mchid+`"`)
		}
	}
	return plaintext
}

// setField returns plaintext with the top-level field set to the JSON value
// raw, or removed when raw is "".
func setField(t testing.TB, plaintext []byte, field, raw string) []byte {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(plaintext, &obj); err != nil {
		t.Fatal(err)
	}
	if raw == "" {
		delete(obj, field)
	} else {
		obj[field] = json.RawMessage(raw)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTable checks every row of the mapping table with its sample.
func TestTable(t *testing.T) {
	tests := []struct {
		eventType, typ, schema string
		wantKey, wantSubject   string
		wantTime               string // RFC 3339
	}{
		{"TRANSACTION.SUCCESS", "payment.succeeded", "payment.succeeded.json",
			"1900000100:payment.succeeded:1217752501201407033233368018", "1217752501201407033233368018", "2018-06-08T10:34:56+08:00"},
		// Parking deductions: ordering merchant (the sub-merchant) + out_trade_no + trade_state; no transaction_id.
		{"TRANSACTION.FAIL", "payment.failed", "payment.failed.json",
			"1900000100:payment.failed:10000109:20150806125346:FAIL", "20150806125346", "2017-08-26T10:43:39+08:00"},
		{"TRANSACTION.PAY_BACK", "payment.repaid", "payment.repaid.json",
			"1900000100:payment.repaid:10000109:20150806125346:PAY_BACK", "20150806125346", "2017-08-26T10:43:39+08:00"},
		{"REFUND.SUCCESS", "refund.succeeded", "refund.succeeded.json",
			"1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS", "50200207182018070300011301001", "2018-06-08T10:34:56+08:00"},
		// No success_time on an abnormal or closed refund: the notification's create_time.
		{"REFUND.ABNORMAL", "refund.abnormal", "refund.abnormal.json",
			"1900000100:refund.abnormal:50200207182018070300011301001:ABNORMAL", "50200207182018070300011301001", "2015-05-20T13:29:35+08:00"},
		{"REFUND.CLOSED", "refund.closed", "refund.closed.json",
			"1900000100:refund.closed:50200207182018070300011301001:CLOSED", "50200207182018070300011301001", "2015-05-20T13:29:35+08:00"},
		{"VIOLATION.PUNISH", "violation.punished", "violation.punished.json",
			"1900000100:violation.punished:200201820200101080076610000", "200201820200101080076610000", "2015-05-20T13:29:35+08:00"},
		{"VIOLATION.INTERCEPT", "violation.intercepted", "violation.intercepted.json",
			"1900000100:violation.intercepted:200201820200101080076610000", "200201820200101080076610000", "2015-05-20T13:29:35+08:00"},
		{"VIOLATION.APPEAL", "violation.appealed", "violation.appealed.json",
			"1900000100:violation.appealed:200201820200101080076610000", "200201820200101080076610000", "2015-05-20T13:29:35+08:00"},
		{"VEHICLE.ENTRANCE_STATE_CHANGE", "parking.state_changed", "parking.state_changed.json",
			"1900000100:parking.state_changed:5K8264ILTKCH16CQ250:NORMAL:20150520T052935.12Z", "5K8264ILTKCH16CQ250", "2015-05-20T13:29:35.120+08:00"},
	}
	var want []events.Mapping
	for _, tt := range tests {
		want = append(want, events.Mapping{EventType: tt.eventType, Type: tt.typ, Schema: tt.schema})
		t.Run(tt.eventType, func(t *testing.T) {
			if !events.Supported(tt.eventType) {
				t.Fatalf("Supported(%q) = false", tt.eventType)
			}
			n := notification(tt.eventType)
			e := mustBuild(t, n, sample(t, tt.eventType))
			if e.Type != tt.typ || e.Schema != tt.schema || e.DedupeKey != tt.wantKey || e.Subject != tt.wantSubject {
				t.Errorf("got type %q schema %q key %q subject %q\nwant type %q schema %q key %q subject %q",
					e.Type, e.Schema, e.DedupeKey, e.Subject, tt.typ, tt.schema, tt.wantKey, tt.wantSubject)
			}
			if wantTime := mustTime(t, tt.wantTime); !e.Time.Equal(wantTime) {
				t.Errorf("Time = %v, want %v", e.Time, wantTime)
			}
			if e.MchID != mchID || e.NotificationID != n.ID || e.WechatEventType != tt.eventType {
				t.Errorf("envelope fields: mchid %q notification %q event type %q", e.MchID, e.NotificationID, e.WechatEventType)
			}
			if !isUUIDv5(e.ID) {
				t.Errorf("ID %q is not a UUIDv5", e.ID)
			}
		})
	}
	if got := events.Mappings(); !slices.Equal(got, want) {
		t.Errorf("Mappings() = %v\nwant %v", got, want)
	}
}

func isUUIDv5(s string) bool {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return false
	}
	return s[14] == '5' && strings.ContainsRune("89ab", rune(s[19])) && strings.Trim(s, "0123456789abcdef-") == ""
}

// TestEventIDGolden pins the id derivation: changing it would re-publish every
// fact still within the dedupe window under a new id. Cross-checked with
// Python: uuid5(uuid5(NAMESPACE_URL, "https://github.com/wxpay-events/wxpay-events"), key).
func TestEventIDGolden(t *testing.T) {
	e := mustBuild(t, notification("TRANSACTION.SUCCESS"), sample(t, "TRANSACTION.SUCCESS"))
	if want := "bf82aee7-5771-5a33-b813-8f37cc9e6292"; e.ID != want {
		t.Fatalf("ID = %s, want %s", e.ID, want)
	}
}

// TestSamplesBuild builds every sample file, variants included.
func TestSamplesBuild(t *testing.T) {
	wantSubject := map[string]string{
		"TRANSACTION.SUCCESS.partner":        "1217752501201407033233368019",
		"TRANSACTION.SUCCESS.global":         "1008450740201411110005820873", // id, there is no transaction_id
		"TRANSACTION.SUCCESS.global-partner": "1008450740201411110005820874",
		"REFUND.SUCCESS.global":              "50200207182018070300011301002",
		"TRANSACTION.SUCCESS.parking":        "20150806125347", // out_trade_no, there is no transaction_id
	}
	all := samples.All()
	if len(all) != 16 {
		t.Errorf("%d samples, want 16", len(all))
	}
	// Each sample is a distinct business fact (a combined payment one per sub-order), so the simulator
	// gets one event per fact.
	keys := map[string]string{}
	for name, b := range all {
		for _, e := range mustBuildAll(t, notification(samples.EventType(name)), b) {
			if other, dup := keys[e.DedupeKey]; dup {
				t.Errorf("samples %s and %s are the same fact (%s)", name, other, e.DedupeKey)
			}
			keys[e.DedupeKey] = name
		}
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		if name == "TRANSACTION.SUCCESS.combine" {
			continue // TestCombinedPayment
		}
		t.Run(name, func(t *testing.T) {
			eventType := samples.EventType(name)
			e := mustBuild(t, notification(eventType), all[name])
			if want, ok := wantSubject[name]; ok && e.Subject != want {
				t.Errorf("Subject = %q, want %q", e.Subject, want)
			}
			// Every field of the sample is in Data, with the same value
			// (the samples' times are already RFC 3339).
			var in, out map[string]any
			if err := json.Unmarshal(all[name], &in); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(e.Data, &out); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(in, out) {
				t.Errorf("Data differs from the sample:\n got %s\nwant %s", e.Data, all[name])
			}
		})
	}
}

func TestSampleEventType(t *testing.T) {
	tests := map[string]string{
		"TRANSACTION.SUCCESS":                "TRANSACTION.SUCCESS",
		"TRANSACTION.SUCCESS.global-partner": "TRANSACTION.SUCCESS",
		"REFUND.SUCCESS.global.json":         "REFUND.SUCCESS",
		"VEHICLE.ENTRANCE_STATE_CHANGE":      "VEHICLE.ENTRANCE_STATE_CHANGE",
		"MCHTRANSFER.BATCH.FINISHED.partner": "MCHTRANSFER.BATCH.FINISHED",
	}
	for name, want := range tests {
		if got := samples.EventType(name); got != want {
			t.Errorf("EventType(%q) = %q, want %q", name, got, want)
		}
	}
	for name := range samples.All() {
		if !events.Supported(samples.EventType(name)) {
			t.Errorf("sample %s has unsupported event type %q", name, samples.EventType(name))
		}
	}
}

// TestTypedViews decodes Data into the Go type of each row.
func TestTypedViews(t *testing.T) {
	build := func(name string) events.Event {
		return mustBuild(t, notification(samples.EventType(name)), sample(t, name))
	}
	decode := func(e events.Event, v any) {
		t.Helper()
		if err := json.Unmarshal(e.Data, v); err != nil {
			t.Fatalf("decode %s: %v", e.Type, err)
		}
	}

	var global wxevents.PaymentSucceeded
	decode(build("TRANSACTION.SUCCESS.global"), &global)
	if global.TransactionNo() != "1008450740201411110005820873" || global.Amount.ExchangeRate.Rate != 8000000 ||
		global.Amount.Currency != "HKD" || global.Promotions[0].GoodsDetail[0].Price != 528800 {
		t.Errorf("global payment: %+v", global)
	}
	var partner wxevents.PaymentSucceeded
	decode(build("TRANSACTION.SUCCESS.partner"), &partner)
	if partner.SubMchID != "1900000109" || partner.Payer.SubOpenID == "" || partner.Amount.Total != 100 {
		t.Errorf("partner payment: %+v", partner)
	}
	var parking wxevents.PaymentFailed
	decode(build("TRANSACTION.FAIL"), &parking)
	if parking.TradeStateDescription != "扣款失败" || parking.ParkingInfo.ChargingDuration != 3600 ||
		parking.ParkingInfo.EndTime.Format(time.RFC3339) != "2017-08-26T10:43:39+08:00" || parking.Amount.DiscountTotal != 1 {
		t.Errorf("parking payment: %+v", parking)
	}
	var refund wxevents.RefundSucceeded
	decode(build("REFUND.SUCCESS.global"), &refund)
	if refund.RecvAccount == "" || refund.FundSource != "REFUND_SOURCE_UNSETTLED_FUNDS" ||
		refund.Amount.PayerCurrency != "HKD" || refund.Amount.ExchangeRate.Rate != 100000000 {
		t.Errorf("global refund: %+v", refund)
	}
	var violation wxevents.ViolationAppealed
	decode(build("VIOLATION.APPEAL"), &violation)
	if violation.RiskType != "ONE_YUAN_PURCHASES" || violation.PunishTime.IsZero() {
		t.Errorf("violation: %+v", violation)
	}
	var state wxevents.ParkingStateChanged
	decode(build("VEHICLE.ENTRANCE_STATE_CHANGE"), &state)
	if state.FreeDuration != 3600 || state.StateUpdateTime.Format("2006-01-02T15:04:05.000Z07:00") != "2015-05-20T13:29:35.120+08:00" {
		t.Errorf("parking state: %+v", state)
	}
}

// TestSameFactSameID: WeChat Pay retries, and may re-notify one fact under a
// new notification id; both must give the same event id and dedupe key.
func TestSameFactSameID(t *testing.T) {
	for _, m := range events.Mappings() {
		t.Run(m.EventType, func(t *testing.T) {
			plaintext := sample(t, m.EventType)
			n1, n2 := notification(m.EventType), notification(m.EventType)
			n2.ID, n2.CreateTime = "EV-2018022511223399999", "2015-05-20T13:45:00+08:00"
			a, b := mustBuild(t, n1, plaintext), mustBuild(t, n2, plaintext)
			if a.ID != b.ID || a.DedupeKey != b.DedupeKey {
				t.Fatalf("same fact, different identity: %s/%s vs %s/%s", a.ID, a.DedupeKey, b.ID, b.DedupeKey)
			}
			if a.NotificationID == b.NotificationID {
				t.Fatal("NotificationID should follow the notification")
			}
			other := n1
			other.MchID = "1900000101"
			if c := mustBuild(t, other, forMerchant(t, plaintext, other.MchID)); c.ID == a.ID {
				t.Fatal("another merchant's fact has the same ID")
			}
		})
	}
}

func TestDistinctFactsDistinctIDs(t *testing.T) {
	tests := []struct {
		name, eventType, field, value string
	}{
		{"payment.failed of another order", "TRANSACTION.FAIL", "out_trade_no", `"20150806125399"`},
		{"another refund", "REFUND.CLOSED", "refund_id", `"50200207182018070300011301099"`},
		{"parking state at another time", "VEHICLE.ENTRANCE_STATE_CHANGE", "state_update_time", `"2015-05-20T13:29:35.121+08:00"`},
		{"parking state blocked", "VEHICLE.ENTRANCE_STATE_CHANGE", "parking_state", `"BLOCKED"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := sample(t, tt.eventType)
			a := mustBuild(t, notification(tt.eventType), base)
			b := mustBuild(t, notification(tt.eventType), setField(t, base, tt.field, tt.value))
			if a.ID == b.ID || a.DedupeKey == b.DedupeKey {
				t.Fatalf("distinct facts share identity %s (%s)", a.ID, a.DedupeKey)
			}
		})
	}
	// The same instant written with another offset or precision is the same fact.
	base := sample(t, "VEHICLE.ENTRANCE_STATE_CHANGE")
	a := mustBuild(t, notification("VEHICLE.ENTRANCE_STATE_CHANGE"), base)
	b := mustBuild(t, notification("VEHICLE.ENTRANCE_STATE_CHANGE"), setField(t, base, "state_update_time", `"2015-05-20T05:29:35.12Z"`))
	if a.ID != b.ID {
		t.Fatalf("same instant, different keys: %s vs %s", a.DedupeKey, b.DedupeKey)
	}
}

func TestParseTime(t *testing.T) {
	tests := []struct {
		in, want string // want "" means ErrMalformed
	}{
		{"2015-05-20T13:29:35+08:00", "2015-05-20T13:29:35+08:00"},
		{"2015-05-20T13:29:35.120+08:00", "2015-05-20T13:29:35.120+08:00"},
		{"2015-05-20T13:29:35.5Z", "2015-05-20T13:29:35.5Z"},
		{"2015-05-20t13:29:35z", "2015-05-20T13:29:35Z"},
		{"2015-05-20T13:29:35.123456789-05:30", "2015-05-20T13:29:35.123456789-05:30"},
		{"2015-05-20T13:29:35+0800", "2015-05-20T13:29:35+08:00"},
		{"20180225112233", "2018-02-25T11:22:33+08:00"}, // violation/education doc samples: Beijing time
		{"2018-02-25 11:22:33", "2018-02-25T11:22:33+08:00"},
		{"2018-02-25T11:22:33", "2018-02-25T11:22:33+08:00"},
		{"", ""},
		{"yesterday", ""},
		{"2018-02-30T11:22:33+08:00", ""},
		{"2018-02-25T24:00:00+08:00", ""},
		{"2018-02-25T11:22:60+08:00", ""},
		{"2018-02-25T11:22:33+24:00", ""},
		{" 2018-02-25T11:22:33+08:00", ""},
		{"1519528953", ""},
		{"201802251122", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := events.ParseTime(tt.in)
			if tt.want == "" {
				if !errors.Is(err, events.ErrMalformed) {
					t.Fatalf("ParseTime = %v, %v; want ErrMalformed", got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("ParseTime = %q, %v; want %q", got, err, tt.want)
			}
			// Normalised output parses to itself.
			again, err := events.ParseTime(got.String())
			if err != nil || again.String() != tt.want || !again.Time().Equal(got.Time()) {
				t.Fatalf("re-parse = %q, %v", again, err)
			}
		})
	}
}

// TestOddTimesNormalised: the official samples' odd formats reach Data and
// Event.Time as RFC 3339 without losing the value.
func TestOddTimesNormalised(t *testing.T) {
	t.Run("punish_time without offset", func(t *testing.T) {
		e := mustBuild(t, notification("VIOLATION.PUNISH"), setField(t, sample(t, "VIOLATION.PUNISH"), "punish_time", `"20180225112233"`))
		assertDataField(t, e, "punish_time", "2018-02-25T11:22:33+08:00")
		if want := mustTime(t, "2018-02-25T11:22:33+08:00"); !e.Time.Equal(want) {
			t.Fatalf("Time = %v, want %v", e.Time, want)
		}
	})
	t.Run("milliseconds kept", func(t *testing.T) {
		e := mustBuild(t, notification("VEHICLE.ENTRANCE_STATE_CHANGE"), sample(t, "VEHICLE.ENTRANCE_STATE_CHANGE"))
		assertDataField(t, e, "state_update_time", "2015-05-20T13:29:35.120+08:00")
		if e.Time.Nanosecond() != 120_000_000 {
			t.Fatalf("Time = %v lost its milliseconds", e.Time)
		}
		var ce struct{ Time string }
		b, _ := e.CloudEvent()
		if err := json.Unmarshal(b, &ce); err != nil || ce.Time != "2015-05-20T13:29:35.120+08:00" {
			t.Fatalf("CloudEvent time = %q, %v", ce.Time, err)
		}
	})
	t.Run("envelope create_time without offset", func(t *testing.T) {
		n := notification("REFUND.CLOSED")
		n.CreateTime = "20180225112233"
		e := mustBuild(t, n, sample(t, "REFUND.CLOSED"))
		if want := mustTime(t, "2018-02-25T11:22:33+08:00"); !e.Time.Equal(want) {
			t.Fatalf("Time = %v, want %v", e.Time, want)
		}
	})
	t.Run("nested parking_info times", func(t *testing.T) {
		var obj map[string]any
		_ = json.Unmarshal(sample(t, "TRANSACTION.PAY_BACK"), &obj)
		obj["parking_info"].(map[string]any)["end_time"] = "2017-08-26 12:43:39"
		b, _ := json.Marshal(obj)
		e := mustBuild(t, notification("TRANSACTION.PAY_BACK"), b)
		var out struct {
			ParkingInfo struct {
				EndTime string `json:"end_time"`
			} `json:"parking_info"`
		}
		if err := json.Unmarshal(e.Data, &out); err != nil || out.ParkingInfo.EndTime != "2017-08-26T12:43:39+08:00" {
			t.Fatalf("parking_info.end_time = %q, %v", out.ParkingInfo.EndTime, err)
		}
	})
}

func assertDataField(t *testing.T, e events.Event, field, want string) {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(e.Data, &obj); err != nil {
		t.Fatal(err)
	}
	if obj[field] != want {
		t.Fatalf("data.%s = %v, want %q", field, obj[field], want)
	}
}

// TestUnknownFieldsPreserved: fields no type lists, at any depth, reach Data
// unchanged, numbers digit for digit.
func TestUnknownFieldsPreserved(t *testing.T) {
	plaintext := []byte(`{
		"sub_mchid": "1900009231",
		"record_id": "200201820200101080076610000",
		"punish_time": "2015-05-20T13:29:35+08:00",
		"risk_description\t": "涉嫌一元购",
		"new_field": {"nested": [1, 2.50, "x"], "big": 123456789012345678901234567890},
		"flag": true,
		"nothing": null
	}`)
	e := mustBuild(t, notification("VIOLATION.PUNISH"), plaintext)
	for _, want := range []string{
		`"risk_description\t":"涉嫌一元购"`,
		`"new_field":{"big":123456789012345678901234567890,"nested":[1,2.50,"x"]}`,
		`"flag":true`,
		`"nothing":null`,
	} {
		if !strings.Contains(string(e.Data), want) {
			t.Errorf("Data %s lacks %s", e.Data, want)
		}
	}
	// Unknown fields inside known objects too.
	pay := []byte(`{"transaction_id":"4200000001","mchid":"` + mchID + `","trade_state":"SUCCESS","amount":{"total":100,"settlement_total":99},"payer":{"openid":"o1","unionid":"u1"}}`)
	e = mustBuild(t, notification("TRANSACTION.SUCCESS"), pay)
	for _, want := range []string{`"settlement_total":99`, `"unionid":"u1"`} {
		if !strings.Contains(string(e.Data), want) {
			t.Errorf("Data %s lacks %s", e.Data, want)
		}
	}
}

// TestBuildIsIdempotent: building from an event's own Data gives the same
// event, so normalisation is stable and a replayed DLQ entry maps the same way.
func TestBuildIsIdempotent(t *testing.T) {
	for name, plaintext := range samples.All() {
		n := notification(samples.EventType(name))
		for _, a := range mustBuildAll(t, n, setField(t, plaintext, "punish_time", `"20180225112233"`)) {
			data := []byte(a.Data)
			if strings.Contains(name, "combine") {
				data = []byte(`{"sub_orders":[` + string(a.Data) + `]}`) // a sub-order rebuilds as a combined payment of one
			}
			b := mustBuild(t, n, data)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s: rebuilt event differs:\n%+v\n%+v", name, a, b)
			}
		}
	}
}

func TestMalformed(t *testing.T) {
	secret := "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o" // an openid: personal data that must not leak into errors
	pay := func(fields string) []byte {
		return []byte(`{"payer":{"openid":"` + secret + `"}` + fields + `}`)
	}
	tests := []struct {
		name       string
		eventType  string
		plaintext  []byte
		wantInText string // the field the error must name
	}{
		{"missing transaction_id", "TRANSACTION.SUCCESS", pay(``), "transaction_id"},
		{"empty transaction_id", "TRANSACTION.SUCCESS", pay(`,"transaction_id":""`), "transaction_id"},
		{"null transaction_id", "TRANSACTION.SUCCESS", pay(`,"transaction_id":null`), "transaction_id"},
		{"transaction_id a number", "TRANSACTION.SUCCESS", pay(`,"transaction_id":4200000001`), "transaction_id"},
		{"amount as string", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","amount":{"total":"100"}`), "amount.total"},
		{"non-integer amount", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","amount":{"total":100.5}`), "amount.total"},
		{"amount in exponent form", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","amount":{"total":1e2}`), "amount.total"},
		{"amount beyond int64", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","amount":{"total":99999999999999999999}`), "amount.total"},
		{"nested promotion amount", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","promotion_detail":[{"amount":1},{"amount":"1"}]`), "promotion_detail[1].amount"},
		{"amount not an object", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","amount":100`), "amount"},
		{"bad success_time", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","success_time":"` + secret + `"`), "success_time"},
		{"success_time a number", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","success_time":1519528953`), "success_time"},
		{"key in another letter case", "TRANSACTION.SUCCESS", pay(`,"transaction_id":"42","Transaction_ID":"43"`), "transaction_id"},
		{"failed payment without trade_state", "TRANSACTION.FAIL", []byte(`{"out_trade_no":"42"}`), "trade_state"},
		{"failed payment without out_trade_no", "TRANSACTION.FAIL", []byte(`{"transaction_id":"42","trade_state":"FAIL"}`), "out_trade_no"},
		{"parking deduction without out_trade_no", "TRANSACTION.SUCCESS", []byte(`{"trade_scene":"PARKING","transaction_id":"42"}`), "out_trade_no"},
		{"combined payment without sub_orders", "TRANSACTION.SUCCESS", []byte(`{"combine_out_trade_no":"C1"}`), "sub_orders"},
		{"combined payment, sub_orders not an array", "TRANSACTION.SUCCESS", []byte(`{"combine_out_trade_no":"C1","sub_orders":{}}`), "sub_orders"},
		{"combined payment, a sub-order not an object", "TRANSACTION.SUCCESS", []byte(`{"combine_out_trade_no":"C1","sub_orders":[{"transaction_id":"42"},"x"]}`), "sub_orders[1]"},
		{"combined payment, a sub-order without transaction_id", "TRANSACTION.SUCCESS", []byte(`{"combine_out_trade_no":"C1","combine_mchid":"` + mchID + `","sub_orders":[{"transaction_id":"42","trade_state":"SUCCESS","amount":{"total_amount":1}},{"out_trade_no":"o2"}]}`), "sub_orders[1]"},
		{"sub_mchid not a subject token", "REFUND.SUCCESS", []byte(`{"refund_id":"5","refund_status":"SUCCESS","sp_mchid":"` + mchID + `","sub_mchid":"19.00","amount":{"refund":1}}`), "sub_mchid"},
		{"refund without refund_status", "REFUND.SUCCESS", []byte(`{"refund_id":"5020"}`), "refund_status"},
		{"refund without refund_id", "REFUND.CLOSED", []byte(`{"refund_status":"CLOSED"}`), "refund_id"},
		{"violation without record_id", "VIOLATION.APPEAL", []byte(`{"sub_mchid":"1900009231"}`), "record_id"},
		{"parking without state_update_time", "VEHICLE.ENTRANCE_STATE_CHANGE", setField(t, sample(t, "VEHICLE.ENTRANCE_STATE_CHANGE"), "state_update_time", ""), "state_update_time"},
		{"parking without parking_state", "VEHICLE.ENTRANCE_STATE_CHANGE", setField(t, sample(t, "VEHICLE.ENTRANCE_STATE_CHANGE"), "parking_state", ""), "parking_state"},
		{"free_duration as string", "VEHICLE.ENTRANCE_STATE_CHANGE", setField(t, sample(t, "VEHICLE.ENTRANCE_STATE_CHANGE"), "free_duration", `"3600"`), "free_duration"},
		{"over-long key field", "REFUND.CLOSED", []byte(`{"refund_id":"` + strings.Repeat("9", 129) + `","refund_status":"CLOSED"}`), "refund_id"},
		{"not JSON", "TRANSACTION.SUCCESS", []byte(`{"transaction_id":"` + secret), "JSON"},
		{"JSON array", "TRANSACTION.SUCCESS", []byte(`[{"transaction_id":"42"}]`), "object"},
		{"JSON null", "TRANSACTION.SUCCESS", []byte(`null`), "object"},
		{"trailing data", "TRANSACTION.SUCCESS", []byte(`{"transaction_id":"42"}{"transaction_id":"43"}`), "after"},
		{"empty", "TRANSACTION.SUCCESS", nil, "JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := events.Build(notification(tt.eventType), tt.plaintext)
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("Build err = %v, want ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.wantInText) {
				t.Errorf("error %q does not name %q", err, tt.wantInText)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "4200000001") {
				t.Errorf("error %q leaks plaintext", err)
			}
		})
	}
}

func TestMalformedNotification(t *testing.T) {
	plaintext := sample(t, "REFUND.CLOSED") // no success_time: needs create_time
	tests := []struct {
		name   string
		modify func(*events.Notification)
	}{
		{"empty mchid", func(n *events.Notification) { n.MchID = "" }},
		{"mchid with a dot", func(n *events.Notification) { n.MchID = "1900.0100" }},
		{"mchid with a wildcard", func(n *events.Notification) { n.MchID = ">" }},
		{"mchid too long", func(n *events.Notification) { n.MchID = strings.Repeat("1", 33) }},
		{"empty notification id", func(n *events.Notification) { n.ID = "" }},
		{"create_time needed but unparseable", func(n *events.Notification) { n.CreateTime = "soon" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := notification("REFUND.CLOSED")
			tt.modify(&n)
			if _, err := events.Build(n, plaintext); !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("Build err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestUnsupportedEventType(t *testing.T) {
	// The plaintext of wechatpay-go's notify test vector (/work/shared/vectors/wechatpay-go-notify.json).
	payscore := []byte(`{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c","create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}`)
	for _, eventType := range []string{"PAYSCORE.USER_OPEN_SERVICE", "VEHICLE.USER_STATE_CHANGE", "transaction.success", "", "TRANSACTION.SUCCESS "} {
		t.Run(eventType, func(t *testing.T) {
			if events.Supported(eventType) {
				t.Fatalf("Supported(%q) = true", eventType)
			}
			_, err := events.Build(notification(eventType), payscore)
			if !errors.Is(err, events.ErrUnsupportedEventType) || errors.Is(err, events.ErrMalformed) {
				t.Fatalf("Build err = %v, want ErrUnsupportedEventType only", err)
			}
		})
	}
}

func TestCloudEvent(t *testing.T) {
	e := mustBuild(t, notification("TRANSACTION.SUCCESS"), sample(t, "TRANSACTION.SUCCESS.global"))
	b, err := e.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	var ce map[string]json.RawMessage
	if err := json.Unmarshal(b, &ce); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"specversion":      "1.0",
		"id":               e.ID,
		"source":           "/wechatpay/1900000100",
		"type":             "com.wechatpay.payment.succeeded",
		"subject":          "1008450740201411110005820873",
		"time":             "2018-06-08T10:34:56+08:00",
		"datacontenttype":  "application/json",
		"dataschema":       "https://github.com/wxpay-events/wxpay-events/blob/main/schemas/payment.succeeded.json",
		"wxnotificationid": "EV-2018022511223320873",
		"wxeventtype":      "TRANSACTION.SUCCESS",
	}
	for attr, v := range want {
		var got string
		if err := json.Unmarshal(ce[attr], &got); err != nil || got != v {
			t.Errorf("%s = %s, want %q", attr, ce[attr], v)
		}
	}
	if len(ce) != len(want)+1 || string(ce["data"]) != string(e.Data) {
		t.Errorf("attributes %v; data %s", slices.Sorted(maps.Keys(ce)), ce["data"])
	}
	if strings.Contains(string(b), `\u`) {
		t.Errorf("CloudEvent escapes text: %s", b)
	}
}

func TestTimeJSON(t *testing.T) {
	var v struct {
		T events.Time `json:"t"`
	}
	if err := json.Unmarshal([]byte(`{"t":"20180225112233"}`), &v); err != nil || v.T.String() != "2018-02-25T11:22:33+08:00" {
		t.Fatalf("unmarshal = %v, %v", v.T, err)
	}
	if b, _ := json.Marshal(v); string(b) != `{"t":"2018-02-25T11:22:33+08:00"}` {
		t.Fatalf("marshal = %s", b)
	}
	if err := json.Unmarshal([]byte(`{"t":null}`), &v); err != nil || !v.T.IsZero() {
		t.Fatalf("null = %v, %v", v.T, err)
	}
	if b, _ := json.Marshal(v); string(b) != `{"t":null}` {
		t.Fatalf("marshal zero = %s", b)
	}
	for _, bad := range []string{`{"t":"soon"}`, `{"t":12}`} {
		if err := json.Unmarshal([]byte(bad), &v); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("unmarshal %s err = %v, want ErrMalformed", bad, err)
		}
	}
}

func BenchmarkBuild(b *testing.B) {
	plaintext := sample(b, "TRANSACTION.SUCCESS")
	n := notification("TRANSACTION.SUCCESS")
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		evs, err := events.Build(n, plaintext)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := evs[0].CloudEvent(); err != nil {
			b.Fatal(err)
		}
	}
}
