package events_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// cloudEventsSchema compiles the CloudEvents 1.0 JSON format schema from the CloudEvents specification
// (testdata/cloudevents, source in its README) as draft-07, with format assertion on.
func cloudEventsSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "cloudevents", "cloudevents.json"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	const url = "https://cloudevents.invalid/cloudevents.json"
	if err := c.AddResource(url, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// contextAttributes are the CloudEvents 1.0 core attributes a structured JSON event may carry besides
// extensions.
var contextAttributes = []string{"specversion", "id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "data", "data_base64"}

// extensionName is the CloudEvents 1.0 attribute naming rule: lower-case ASCII letters and digits, and
// (a SHOULD the project keeps) at most 20 characters.
var extensionName = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// TestCloudEventsConformance: every event built from the simulator's samples and from WeChat's published
// samples is a CloudEvents 1.0 JSON event by the specification's own schema, with extension names the
// specification allows.
func TestCloudEventsConformance(t *testing.T) {
	sch := cloudEventsSchema(t)
	inputs := map[string][]byte{}
	merchant := map[string]string{}
	for name, b := range samples.All() {
		inputs["simulator/"+name] = b
		merchant["simulator/"+name] = mchID
	}
	for name, b := range realSamples(t) {
		inputs["real/"+name] = b
		merchant["real/"+name] = realWant[name].mchid
	}
	for _, name := range slices.Sorted(maps.Keys(inputs)) {
		t.Run(name, func(t *testing.T) {
			n := notification(samples.EventType(filepath.Base(name)))
			n.MchID = merchant[name]
			for _, e := range mustBuildAll(t, n, inputs[name]) {
				ce, err := e.CloudEvent()
				if err != nil {
					t.Fatal(err)
				}
				v, err := jsonschema.UnmarshalJSON(bytes.NewReader(ce))
				if err != nil {
					t.Fatal(err)
				}
				if err := sch.Validate(v); err != nil {
					t.Errorf("not a CloudEvents 1.0 JSON event: %v\n%s", err, ce)
				}
				var attrs map[string]json.RawMessage
				if err := json.Unmarshal(ce, &attrs); err != nil {
					t.Fatal(err)
				}
				for a := range attrs {
					if !slices.Contains(contextAttributes, a) && !extensionName.MatchString(a) {
						t.Errorf("extension attribute %q breaks the CloudEvents naming rule", a)
					}
				}
			}
		})
	}
	// The check has teeth: the old extension name and a relative dataschema fail it.
	if extensionName.MatchString("wechatpaynotificationid") {
		t.Error("a 23-character extension name passes")
	}
	bad, _ := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(`{"specversion":"1.0","id":"x","type":"t","source":"/s","dataschema":"payment.succeeded.json"}`)))
	if sch.Validate(bad) == nil {
		t.Error("a relative dataschema passes the CloudEvents schema")
	}
}
