package events_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/schemas"
)

// FuzzBuild feeds arbitrary plaintexts to Build under every event type. Build
// must not panic and must fail only with its sentinels; whatever it accepts
// must make a CloudEvent that validates against the published schemas, and
// must build again, identically, from its own Data (a combined payment's
// sub-order, from the combined order rebuilt around it).
func FuzzBuild(f *testing.F) {
	for name, b := range samples.All() {
		f.Add(samples.EventType(name), b)
	}
	set, err := schemas.Load()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, eventType string, plaintext []byte) {
		n := notification(eventType)
		evs, err := events.Build(n, plaintext)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrUnsupportedEventType) &&
				!errors.Is(err, events.ErrInconsistent) && !errors.Is(err, events.ErrTooLarge) {
				t.Fatalf("Build error %v is none of the sentinels", err)
			}
			return
		}
		if len(evs) == 0 {
			t.Fatal("Build accepted a plaintext and made no event")
		}
		ids := map[string]bool{}
		for _, e := range evs {
			if ids[e.ID] {
				t.Fatalf("two events with id %s from one plaintext", e.ID)
			}
			ids[e.ID] = true
			if !strings.HasPrefix(e.DedupeKey, mchID+":"+e.Type+":") || strings.ContainsAny(e.DedupeKey, " \r\n\t*>") {
				t.Fatalf("dedupe key %q", e.DedupeKey)
			}
			ce, err := e.CloudEvent()
			if err != nil {
				t.Fatalf("CloudEvent: %v", err)
			}
			if err := set.ValidateCloudEvent(ce); err != nil {
				t.Fatalf("accepted plaintext makes an invalid CloudEvent: %v\n%s", err, ce)
			}
			data := []byte(e.Data)
			if len(evs) > 1 || strings.Contains(string(e.Data), `"combine_out_trade_no"`) {
				data = []byte(`{"sub_orders":[` + string(e.Data) + `]}`)
			}
			again, err := events.Build(n, data)
			if err != nil {
				t.Fatalf("rebuild from Data: %v", err)
			}
			if len(again) != 1 || again[0].ID != e.ID || string(again[0].Data) != string(e.Data) || !again[0].Time.Equal(e.Time) {
				t.Fatalf("rebuild differs:\n%s %s\n%v", e.DedupeKey, e.Data, again)
			}
		}
	})
}
