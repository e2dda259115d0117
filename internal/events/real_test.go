package events_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/schemas"
)

// realSamples reads testdata/real: resources copied unedited from WeChat Pay's published samples and
// widely used SDKs' sample files (testdata/real/SOURCES.md names each source). They are kept apart from
// the simulator's samples, which were edited to fit; these prove the mapping against what WeChat
// publishes.
func realSamples(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "real", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no real samples: %v", err)
	}
	out := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(p), ".json")] = b
	}
	return out
}

// realWant is what the contract says each published sample becomes, written out by hand from
// CONTRACT.md's dedupe-key column rather than read from the code's table: per event, the dedupe key, the
// subject (business id) and the sub-merchant. Each notification is addressed to the merchant its resource
// names (violations name only the sanctioned sub-merchant, so theirs go to mchID).
type realEvent struct{ key, subject, sub string }

var realWant = map[string]struct {
	mchid  string // the merchant the notification is addressed to: the resource's sp_mchid, combine_mchid or mchid
	events []realEvent
}{
	// Direct, partner and cross-border payments: transaction_id, or id for a global payment.
	"TRANSACTION.SUCCESS.direct":              {"1230000109", []realEvent{{"1230000109:payment.succeeded:1217752501201407033233368018", "1217752501201407033233368018", ""}}},
	"TRANSACTION.SUCCESS.partner":             {"1230000109", []realEvent{{"1230000109:payment.succeeded:1217752501201407033233368018", "1217752501201407033233368018", "1900000109"}}},
	"TRANSACTION.SUCCESS.global":              {"10000100", []realEvent{{"10000100:payment.succeeded:1008450740201411110005820873", "1008450740201411110005820873", ""}}},
	"TRANSACTION.SUCCESS.global-partner":      {"10000100", []realEvent{{"10000100:payment.succeeded:1008450740201411110005820873", "1008450740201411110005820873", "20000100"}}},
	"TRANSACTION.SUCCESS.global-partner-seed": {"10000100", []realEvent{{"10000100:payment.succeeded:1008450740201411110005820873", "1008450740201411110005820873", "20000100"}}},
	// Pay Score parking deductions: no transaction_id; ordering merchant (sub_mchid) + out_trade_no
	// (+ trade_state for FAIL and PAY_BACK).
	"TRANSACTION.SUCCESS.parking":  {"10000100", []realEvent{{"10000100:payment.succeeded:10000109:20150806125346", "20150806125346", "10000109"}}},
	"TRANSACTION.FAIL.parking":     {"10000100", []realEvent{{"10000100:payment.failed:10000109:20150806125346:FAIL", "20150806125346", "10000109"}}},
	"TRANSACTION.PAY_BACK.parking": {"10000100", []realEvent{{"10000100:payment.repaid:10000109:20150806125346:PAY_BACK", "20150806125346", "10000109"}}},
	// Combined payment: one event per sub-order, keyed by the sub-order's transaction_id.
	"TRANSACTION.SUCCESS.combine": {"1900000109", []realEvent{{"1900000109:payment.succeeded:1009660380201506130728806387", "1009660380201506130728806387", ""}}},
	// wechatpay.js.org merges the direct, parking and combined shapes into one example; with sub_orders it
	// is a combined payment, whose one sub-order belongs to merchant 1900000109.
	"TRANSACTION.SUCCESS.wechatpayjs-composite": {"1900000109", []realEvent{{"1900000109:payment.succeeded:1009660380201506130728806387", "1009660380201506130728806387", ""}}},
	// Refunds: refund_id + refund_status.
	"REFUND.SUCCESS.direct":              {"1900000100", []realEvent{{"1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS", "50200207182018070300011301001", ""}}},
	"REFUND.SUCCESS.partner":             {"1900000100", []realEvent{{"1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS", "50200207182018070300011301001", "1900000109"}}},
	"REFUND.SUCCESS.global":              {"1900000100", []realEvent{{"1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS", "50200207182018070300011301001", ""}}},
	"REFUND.SUCCESS.global-partner":      {"1900000100", []realEvent{{"1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS", "50200207182018070300011301001", "1900000109"}}},
	"REFUND.SUCCESS.global-partner-seed": {"1900000100", []realEvent{{"1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS", "50200207182018070300011301001", "1900000109"}}},
	"REFUND.ABNORMAL.wechatpayjs":        {"1900000100", []realEvent{{"1900000100:refund.abnormal:50200207182018070300011301001:ABNORMAL", "50200207182018070300011301001", ""}}},
	"REFUND.CLOSED.wechatpayjs":          {"1900000100", []realEvent{{"1900000100:refund.closed:50200207182018070300011301001:CLOSED", "50200207182018070300011301001", ""}}},
	// Violations: record_id (+ the event type, which is the <type> segment); about a sub-merchant.
	"VIOLATION.PUNISH.seed":           {"1900000100", []realEvent{{"1900000100:violation.punished:200201820200101080076610000", "200201820200101080076610000", "1900009231"}}},
	"VIOLATION.PUNISH.skit":           {"1900000100", []realEvent{{"1900000100:violation.punished:200201820200101080076610000", "200201820200101080076610000", "1900009231"}}},
	"VIOLATION.INTERCEPT.wechatpayjs": {"1900000100", []realEvent{{"1900000100:violation.intercepted:200201820200101080076610000", "200201820200101080076610000", "1900009231"}}},
	"VIOLATION.APPEAL.wechatpayjs":    {"1900000100", []realEvent{{"1900000100:violation.appealed:200201820200101080076610000", "200201820200101080076610000", "1900009231"}}},
	// Parking state: parking_id + parking_state + state_update_time (UTC).
	"VEHICLE.ENTRANCE_STATE_CHANGE.skit": {"10000100", []realEvent{{"10000100:parking.state_changed:5K8264ILTKCH16CQ250:NORMAL:20150520T052935.12Z", "5K8264ILTKCH16CQ250", ""}}},
}

// TestRealSamples: every published sample maps, without an error, to the events the contract names,
// each a valid CloudEvent whose data validates against its schema and keeps every field WeChat sent.
func TestRealSamples(t *testing.T) {
	all := realSamples(t)
	if got, want := slices.Sorted(maps.Keys(all)), slices.Sorted(maps.Keys(realWant)); !slices.Equal(got, want) {
		t.Fatalf("real samples %v\nexpectations %v: keep them in step", got, want)
	}
	set, err := schemas.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		t.Run(name, func(t *testing.T) {
			n := notification(samples.EventType(name))
			n.MchID = realWant[name].mchid
			evs, err := events.Build(n, all[name])
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			want := realWant[name].events
			if len(evs) != len(want) {
				t.Fatalf("%d events, want %d", len(evs), len(want))
			}
			var sample map[string]any
			if err := json.Unmarshal(all[name], &sample); err != nil {
				t.Fatal(err)
			}
			for i, e := range evs {
				if e.DedupeKey != want[i].key || e.Subject != want[i].subject || e.SubMchID != want[i].sub {
					t.Errorf("event %d: key %q subject %q sub %q\nwant key %q subject %q sub %q",
						i, e.DedupeKey, e.Subject, e.SubMchID, want[i].key, want[i].subject, want[i].sub)
				}
				ce, err := e.CloudEvent()
				if err != nil {
					t.Fatal(err)
				}
				if err := set.ValidateCloudEvent(ce); err != nil {
					t.Errorf("event %d: %v", i, err)
				}
				var data map[string]any
				if err := json.Unmarshal(e.Data, &data); err != nil {
					t.Fatal(err)
				}
				_, combined := sample["sub_orders"]
				for k := range sample {
					if combined && !strings.HasPrefix(k, "combine_") && k != "scene_info" {
						continue // a sub-order's event keeps the combined order's fields, not its siblings' payment fields
					}
					if _, ok := data[k]; !ok {
						t.Errorf("event %d: data lost field %q", i, k)
					}
				}
			}
		})
	}
}
