package wxevents_test

import (
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

// The traceparent extension is there only when the producer traces: without it an event encodes to the
// very bytes it always did, and with it the attribute comes before data and survives a round trip.
func TestTraceParentExtension(t *testing.T) {
	e, err := wxevents.Parse([]byte(refundEvent))
	if err != nil {
		t.Fatal(err)
	}
	untraced, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if string(untraced) != refundEvent {
		t.Fatalf("an event without TraceParent changed its encoding:\n got %s\nwant %s", untraced, refundEvent)
	}

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	e.TraceParent = tp
	traced, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(refundEvent, `"wxsubmchid":"1900000109",`, `"wxsubmchid":"1900000109","traceparent":"`+tp+`",`, 1)
	if string(traced) != want {
		t.Errorf("traced encoding:\n got %s\nwant %s", traced, want)
	}
	back, err := wxevents.Parse(traced)
	if err != nil {
		t.Fatal(err)
	}
	if back.TraceParent != tp {
		t.Errorf("TraceParent after a round trip = %q, want %q", back.TraceParent, tp)
	}
}
