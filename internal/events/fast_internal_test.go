package events

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// allSamples is every sample plaintext with its event type: the simulator's and testdata/real's.
func allSamples(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for name, b := range samples.All() {
		out[name] = b
	}
	paths, err := filepath.Glob(filepath.Join("testdata", "real", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no real samples: %v", err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out["real:"+strings.TrimSuffix(filepath.Base(p), ".json")] = b
	}
	return out
}

// sampleEventType is the event type a sample name starts with ("TRANSACTION.SUCCESS.combine").
func sampleEventType(name string) string {
	parts := strings.SplitN(strings.TrimPrefix(name, "real:"), ".", 3)
	return parts[0] + "." + parts[1]
}

// merchantsOf lists the merchants a plaintext may be addressed to, as its fields say, and one more for a
// violation, which names none.
func merchantsOf(plaintext []byte) []string {
	var m map[string]any
	_ = json.Unmarshal(plaintext, &m)
	if subs, _ := m["sub_orders"].([]any); len(subs) > 0 {
		if sub, ok := subs[0].(map[string]any); ok {
			m["sub_orders[0].mchid"] = sub["mchid"]
		}
	}
	var out []string
	for _, k := range []string{"combine_mchid", "sp_mchid", "mchid", "sub_mchid", "sub_orders[0].mchid"} {
		if s, ok := m[k].(string); ok && validMchID(s) {
			out = append(out, s)
		}
	}
	return append(out, "1900000100")
}

// TestFastAcceptsSamples: every sample WeChat Pay publishes takes the single pass, and gives what the
// reference path gives.
func TestFastAcceptsSamples(t *testing.T) {
	for name, b := range allSamples(t) {
		t.Run(name, func(t *testing.T) {
			r, ok := lookup(sampleEventType(name))
			if !ok {
				t.Fatalf("no row for %s", name)
			}
			for _, mchid := range merchantsOf(b) {
				if _, err := referenceFacts(r, b, mchid); err != nil {
					continue
				}
				if _, ok := r.decode.fast(b, mchid); !ok {
					t.Fatal("the single pass declined a published sample")
				}
				sameFacts(t, r, b, mchid)
				return
			}
			t.Fatal("no merchant makes the reference accept the sample")
		})
	}
}

// TestFastEdges: shapes the single pass handles itself (escapes, reordering, nulls, nesting) agree with
// the reference, and shapes it must leave to the reference are declined.
func TestFastEdges(t *testing.T) {
	pay := samples.All()["TRANSACTION.SUCCESS"]
	base := strings.TrimSuffix(strings.TrimSpace(string(pay)), "}")
	accepted := map[string]string{
		"escapes":          base + `,"x":"a\"b\\c\/d\n\u00e9\ud83d\ude00\ud800x\u2028 \u0001"}`,
		"line separator":   base + ",\"y\":\"a\u2028b\u2029c\"}",
		"unknown nesting":  base + `,"z":{"b":[1,-0.5e+3,true,false,null,{}],"a":[]}}`,
		"null fields":      `{"transaction_id":"1","trade_state":"SUCCESS","mchid":"1900000100","amount":{"total":1},"payer":null,"promotion_detail":null,"success_time":null,"x":null}`,
		"empty slice":      `{"transaction_id":"1","trade_state":"SUCCESS","mchid":"1900000100","amount":{"total":1},"promotion_detail":[]}`,
		"null slice item":  `{"transaction_id":"1","trade_state":"SUCCESS","mchid":"1900000100","amount":{"total":1},"promotion_detail":[null,{}]}`,
		"odd time":         `{"transaction_id":"1","trade_state":"SUCCESS","mchid":"1900000100","amount":{"total":1},"success_time":"20180225112233","create_time":"2018-06-08t10:34:56.120z"}`,
		"white space":      " \t\n{ \"transaction_id\" : \"1\" ,\"trade_state\":\"SUCCESS\",\"mchid\":\"1900000100\",\"amount\":{\"total\":1}\r} \n",
		"already sorted":   `{"amount":{"total":1},"mchid":"1900000100","trade_state":"SUCCESS","transaction_id":"1"}`,
		"combined, merged": `{"combine_mchid":"1900000100","combine_out_trade_no":"c","scene_info":{"device_id":"d"},"extra":1,"sub_orders":[{"mchid":"1","transaction_id":"a","trade_state":"SUCCESS","amount":{"total_amount":1}},{"mchid":"2","transaction_id":"b","trade_state":"SUCCESS","amount":{"total_amount":2},"scene_info":null}]}`,
		"combined, twice":  `{"combine_mchid":"1900000100","combine_out_trade_no":"c","sub_orders":[{"transaction_id":"a","trade_state":"SUCCESS","amount":{"total_amount":1}},{"transaction_id":"a","trade_state":"SUCCESS","amount":{"total_amount":1}}]}`,
	}
	for name, pt := range accepted {
		t.Run(name, func(t *testing.T) {
			r, _ := lookup("TRANSACTION.SUCCESS")
			if _, ok := r.decode.fast([]byte(pt), "1900000100"); !ok {
				t.Fatal("declined")
			}
			sameFacts(t, r, []byte(pt), "1900000100")
		})
	}
	declined := map[string]string{
		"duplicate key":     base + `,"mchid":"1900000100"}`,
		"letter case":       base + `,"MchID":"1900000100"}`,
		"non-ASCII key":     base + `,"ſcene_info":1}`,
		"escaped key":       base + `,"\u0061":1}`,
		"invalid UTF-8":     base + ",\"x\":\"\xff\"}",
		"trailing data":     string(pay) + "{}",
		"amount as text":    base + `,"amount":{"total":"1"}}`,
		"fractional amount": base + `,"amount":{"total":1.0}}`,
		"bad time":          base + `,"success_time":"soon"}`,
		"too deep":          base + `,"x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`,
		"bad number":        base + `,"x":01}`,
		"bad literal":       base + `,"x":nul}`,
		"control character": base + ",\"x\":\"\x01\"}",
		"null sub-order":    `{"combine_mchid":"1900000100","combine_out_trade_no":"c","sub_orders":[null]}`,
		"no sub-orders":     `{"combine_mchid":"1900000100","combine_out_trade_no":"c"}`,
		"inconsistent":      strings.Replace(string(pay), `"SUCCESS"`, `"NOTPAY"`, 1),
	}
	for name, pt := range declined {
		t.Run(name, func(t *testing.T) {
			r, _ := lookup("TRANSACTION.SUCCESS")
			if _, ok := r.decode.fast([]byte(pt), "1900000100"); ok {
				t.Fatal("accepted")
			}
		})
	}
}

// FuzzFastMatchesReference: whatever the plaintext and row, when the single pass accepts a plaintext the
// reference path accepts it too, with the same facts byte for byte.
func FuzzFastMatchesReference(f *testing.F) {
	for name, b := range allSamples(f) {
		for i, r := range table {
			if r.eventType == sampleEventType(name) {
				f.Add(uint8(i), b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, row uint8, plaintext []byte) {
		r := table[int(row)%len(table)]
		for _, mchid := range merchantsOf(plaintext) {
			if _, ok := r.decode.fast(plaintext, mchid); ok {
				sameFacts(t, r, plaintext, mchid)
			}
		}
	})
}

func sameFacts(t *testing.T, r row, plaintext []byte, mchid string) {
	t.Helper()
	got, ok := r.decode.fast(plaintext, mchid)
	want, err := referenceFacts(r, plaintext, mchid)
	if err != nil {
		t.Fatalf("the single pass accepted what the reference refuses: %v", err)
	}
	if !ok || len(got) != len(want) {
		t.Fatalf("%d facts (ok %v), reference %d", len(got), ok, len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if !bytes.Equal(g.data, w.data) {
			t.Errorf("fact %d data\n%s\nreference\n%s", i, g.data, w.data)
		}
		if !slices.Equal(g.key, w.key) || g.subject != w.subject || g.sub != w.sub {
			t.Errorf("fact %d: key %q subject %q sub %q; reference %q %q %q", i, g.key, g.subject, g.sub, w.key, w.subject, w.sub)
		}
		gn, go_ := g.time.Zone()
		wn, wo := w.time.Zone()
		if !g.time.Equal(w.time) || gn != wn || go_ != wo || g.time.String() != w.time.String() {
			t.Errorf("fact %d time %v, reference %v", i, g.time, w.time)
		}
	}
}
