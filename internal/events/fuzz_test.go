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
// must build again, identically, from its own Data.
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
		e, err := events.Build(n, plaintext)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrUnsupportedEventType) {
				t.Fatalf("Build error %v is none of the sentinels", err)
			}
			return
		}
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
		again, err := events.Build(n, e.Data)
		if err != nil {
			t.Fatalf("rebuild from Data: %v", err)
		}
		if again.ID != e.ID || string(again.Data) != string(e.Data) || !again.Time.Equal(e.Time) {
			t.Fatalf("rebuild differs:\n%s %s\n%s %s", e.DedupeKey, e.Data, again.DedupeKey, again.Data)
		}
	})
}
