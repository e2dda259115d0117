package events_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// TestTableMatchesPublicTypes: the mapping table produces exactly the event types package wxevents
// publishes, in the same order.
func TestTableMatchesPublicTypes(t *testing.T) {
	var got []wxevents.Type
	for _, m := range events.Mappings() {
		got = append(got, wxevents.Type(m.Type))
	}
	if want := wxevents.Types(); !slices.Equal(got, want) {
		t.Fatalf("table types %v\nwxevents.Types() %v", got, want)
	}
}

// TestSubscribersDecodeWhatBuildPublishes: every event Build makes, from every simulator and published
// sample, parses with wxevents.Parse into the same attributes, decodes into the wxevents type of its event
// type, and encodes back to the very bytes that were published.
func TestSubscribersDecodeWhatBuildPublishes(t *testing.T) {
	type input struct {
		name      string
		n         events.Notification
		plaintext []byte
	}
	var inputs []input
	for name, b := range samples.All() {
		inputs = append(inputs, input{name, notification(samples.EventType(name)), b})
	}
	for name, b := range realSamples(t) {
		n := notification(samples.EventType(name))
		n.MchID = realWant[name].mchid
		inputs = append(inputs, input{"real/" + name, n, b})
	}
	slices.SortFunc(inputs, func(a, b input) int { return strings.Compare(a.name, b.name) })
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			for _, e := range mustBuildAll(t, in.n, in.plaintext) {
				raw, err := e.CloudEvent()
				if err != nil {
					t.Fatal(err)
				}
				got, err := wxevents.Parse(raw)
				if err != nil {
					t.Fatalf("Parse: %v\n%s", err, raw)
				}
				if got.ID != e.ID || string(got.DomainType()) != e.Type || got.MchID() != e.MchID ||
					got.SubMchID != e.SubMchID || got.Subject != e.Subject || !got.Time.Equal(e.Time) ||
					got.NotificationID != e.NotificationID || got.WechatEventType != e.WechatEventType ||
					got.DataSchema != events.DataSchemaBase+e.Schema || string(got.Data) != string(e.Data) {
					t.Errorf("parsed %+v\nfrom %+v", got, e)
				}
				d, err := got.Decode()
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if string(d.DomainType()) != e.Type {
					t.Errorf("%s decodes into %T", e.Type, d)
				}
				again, err := got.MarshalJSON()
				if err != nil || string(again) != string(raw) {
					t.Errorf("re-encoded %s, %v\npublished %s", again, err, raw)
				}
			}
		})
	}
}
