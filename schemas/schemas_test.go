package schemas_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/schemas"
)

func load(t *testing.T) *schemas.Set {
	t.Helper()
	s, err := schemas.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

// build returns the one event of a single-fact sample.
func build(t *testing.T, name string) events.Event {
	t.Helper()
	evs := buildAll(t, name)
	if len(evs) != 1 {
		t.Fatalf("sample %s gives %d events, want 1", name, len(evs))
	}
	return evs[0]
}

// buildAll returns the events of a sample: one per business fact.
func buildAll(t *testing.T, name string) []events.Event {
	t.Helper()
	b, ok := samples.All()[name]
	if !ok {
		t.Fatalf("no sample %q", name)
	}
	e, err := events.Build(events.Notification{
		ID: "EV-2018022511223320873", EventType: samples.EventType(name),
		CreateTime: "2015-05-20T13:29:35+08:00", MchID: "1900000100",
	}, b)
	if err != nil {
		t.Fatalf("Build %s: %v", name, err)
	}
	return e
}

// TestOneSchemaPerDomainType: the data schemas are exactly those the mapping
// table names.
func TestOneSchemaPerDomainType(t *testing.T) {
	var want []string
	for _, m := range events.Mappings() {
		want = append(want, m.Schema)
	}
	slices.Sort(want)
	if got := load(t).Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v\nwant %v", got, want)
	}
}

// TestSamplesValidate: every sample, as normalised by events.Build, validates,
// alone and inside the CloudEvent the consumer publishes.
func TestSamplesValidate(t *testing.T) {
	s := load(t)
	for _, name := range slices.Sorted(maps.Keys(samples.All())) {
		t.Run(name, func(t *testing.T) {
			for _, e := range buildAll(t, name) {
				if err := s.ValidateData(e.Schema, e.Data); err != nil {
					t.Errorf("ValidateData: %v", err)
				}
				ce, err := e.CloudEvent()
				if err != nil {
					t.Fatal(err)
				}
				if err := s.ValidateCloudEvent(ce); err != nil {
					t.Errorf("ValidateCloudEvent: %v\n%s", err, ce)
				}
			}
		})
	}
}

// edit returns data with the value at a dotted path set to raw JSON, or
// removed when raw is "".
func edit(t *testing.T, data []byte, path, raw string) []byte {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	keys := strings.Split(path, ".")
	m := obj
	for _, k := range keys[:len(keys)-1] {
		m = m[k].(map[string]any)
	}
	last := keys[len(keys)-1]
	if raw == "" {
		delete(m, last)
	} else {
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatal(err)
		}
		m[last] = v
	}
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDataSchemasRejects: a negative case per schema, on an otherwise valid
// sample: a missing id field, an amount (or other integer) as a string, and
// a time that is not RFC 3339 (format assertion is on).
func TestDataSchemasRejects(t *testing.T) {
	s := load(t)
	tests := []struct {
		sample, path, raw string
	}{
		{"TRANSACTION.SUCCESS", "transaction_id", ""},
		{"TRANSACTION.SUCCESS", "amount.total", `"100"`},
		{"TRANSACTION.SUCCESS", "amount.total", `100.5`},
		{"TRANSACTION.SUCCESS", "success_time", `"20180608103456"`},
		{"TRANSACTION.SUCCESS.global", "id", ""},
		{"TRANSACTION.SUCCESS.global", "amount.exchange_rate.rate", `"8000000"`},
		{"TRANSACTION.SUCCESS.partner", "transaction_id", `""`},
		{"TRANSACTION.SUCCESS.parking", "out_trade_no", ""},
		{"TRANSACTION.SUCCESS.parking", "parking_info.start_time", `"2017-08-26 10:43:39"`},
		{"TRANSACTION.FAIL", "out_trade_no", ""},
		{"TRANSACTION.FAIL", "trade_state", ""},
		{"TRANSACTION.FAIL", "amount.payer_total", `"518799"`},
		{"TRANSACTION.PAY_BACK", "out_trade_no", `""`},
		{"TRANSACTION.PAY_BACK", "amount.total", `"528800"`},
		{"TRANSACTION.PAY_BACK", "parking_info.charging_duration", `"3600"`},
		{"REFUND.SUCCESS", "refund_id", ""},
		{"REFUND.SUCCESS", "amount.refund", `"999"`},
		{"REFUND.SUCCESS.global", "amount.payer_refund", `"528800"`},
		{"REFUND.ABNORMAL", "refund_id", ""},
		{"REFUND.ABNORMAL", "amount.total", `"999"`},
		{"REFUND.CLOSED", "refund_status", ""},
		{"REFUND.CLOSED", "amount.refund", `"999"`},
		{"VIOLATION.PUNISH", "record_id", ""},
		{"VIOLATION.PUNISH", "punish_time", `"2015-05-20 13:29:35"`},
		{"VIOLATION.INTERCEPT", "record_id", ""},
		{"VIOLATION.INTERCEPT", "record_id", `200201820200101080076610000`},
		{"VIOLATION.APPEAL", "record_id", ""},
		{"VIOLATION.APPEAL", "punish_time", `"yesterday"`},
		{"VEHICLE.ENTRANCE_STATE_CHANGE", "parking_id", ""},
		{"VEHICLE.ENTRANCE_STATE_CHANGE", "state_update_time", ""},
		{"VEHICLE.ENTRANCE_STATE_CHANGE", "free_duration", `"3600"`},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		e := build(t, tt.sample)
		covered[e.Schema] = true
		t.Run(tt.sample+"/"+tt.path+"="+tt.raw, func(t *testing.T) {
			bad := edit(t, e.Data, tt.path, tt.raw)
			err := s.ValidateData(e.Schema, bad)
			if !errors.Is(err, schemas.ErrInvalid) {
				t.Fatalf("ValidateData err = %v, want ErrInvalid\n%s", err, bad)
			}
			if strings.Contains(err.Error(), "oUpF8u") || strings.Contains(err.Error(), "528800") {
				t.Errorf("error quotes the document: %v", err)
			}
		})
	}
	for _, name := range s.Names() {
		if !covered[name] {
			t.Errorf("no negative case for %s", name)
		}
	}
}

func TestDataSchemasAllowUnknownAndNull(t *testing.T) {
	s := load(t)
	e := build(t, "TRANSACTION.SUCCESS")
	for _, d := range [][]byte{
		edit(t, e.Data, "combine_mchid", `"1900000109"`),
		edit(t, e.Data, "amount.settlement_total", `99`),
		edit(t, e.Data, "attach", `null`),
		edit(t, e.Data, "scene_info", `null`),
	} {
		if err := s.ValidateData(e.Schema, d); err != nil {
			t.Errorf("ValidateData(%s): %v", d, err)
		}
	}
}

func TestValidateDataErrors(t *testing.T) {
	s := load(t)
	if err := s.ValidateData("payment.unknown.json", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("unknown schema: %v", err)
	}
	if err := s.ValidateData("defs.json", []byte(`{}`)); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("defs.json is not a data schema: %v", err)
	}
	if err := s.ValidateData("refund.closed.json", []byte(`{"refund_id":`)); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("not JSON: %v", err)
	}
	if err := s.ValidateData("refund.closed.json", []byte(`[]`)); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("array: %v", err)
	}
}

func TestCloudEventRejects(t *testing.T) {
	s := load(t)
	e := build(t, "REFUND.SUCCESS")
	ce, err := e.CloudEvent()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, raw string
	}{
		{"missing id", "id", ""},
		{"id not a UUID", "id", `"1900000100:refund.succeeded:5020"`},
		{"wrong specversion", "specversion", `"0.3"`},
		{"time not RFC 3339", "time", `"20180608103456"`},
		{"type and dataschema disagree", "dataschema", `"https://github.com/wxpay-events/wxpay-events/blob/main/schemas/refund.closed.json"`},
		{"type and event type disagree", "wxeventtype", `"REFUND.CLOSED"`},
		{"unknown type", "type", `"com.wechatpay.refund.reversed"`},
		{"source not /wechatpay/<mchid>", "source", `"/wechatpay/1900000100/x"`},
		{"missing notification id", "wxnotificationid", ""},
		{"dataschema not absolute", "dataschema", `"refund.succeeded.json"`},
		{"sub-merchant not a merchant id", "wxsubmchid", `"1.2"`},
		{"data without refund_id", "data.refund_id", ""},
		{"data amount as string", "data.amount.refund", `"999"`},
		{"data not an object", "data", `"x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.ValidateCloudEvent(edit(t, ce, tt.path, tt.raw)); !errors.Is(err, schemas.ErrInvalid) {
				t.Fatalf("ValidateCloudEvent err = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.ValidateCloudEvent([]byte(`{"specversion":`)); !errors.Is(err, schemas.ErrInvalid) {
		t.Errorf("not JSON: %v", err)
	}
}

func TestFS(t *testing.T) {
	for _, m := range events.Mappings() {
		if _, err := fs.Stat(schemas.FS(), m.Schema); err != nil {
			t.Errorf("%s: %v", m.Schema, err)
		}
	}
	for _, name := range []string{schemas.EnvelopeSchema, "asyncapi.yaml"} {
		if _, err := fs.Stat(schemas.FS(), name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// asyncAPI is the part of asyncapi.yaml the tests look at.
type asyncAPI struct {
	AsyncAPI string `yaml:"asyncapi"`
	Channels map[string]struct {
		Address  string         `yaml:"address"`
		Messages map[string]any `yaml:"messages"`
	} `yaml:"channels"`
	Components struct {
		Messages map[string]struct {
			Name    string         `yaml:"name"`
			Headers map[string]any `yaml:"headers"`
		} `yaml:"messages"`
	} `yaml:"components"`
}

func TestAsyncAPI(t *testing.T) {
	raw, err := fs.ReadFile(schemas.FS(), "asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc asyncAPI
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("asyncapi.yaml is not YAML: %v", err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Errorf("asyncapi = %q, want 3.0.0", doc.AsyncAPI)
	}
	wantAddress := map[string]string{
		"WECHATPAY_INBOUND": "wechatpay.inbound.{mchid}.{eventType}",
		"WECHATPAY_EVENTS":  "wechatpay.events.{type}.{mchid}.{sub}",
		"WECHATPAY_DLQ":     "wechatpay.dlq.{reason}.{mchid}",
	}
	if got := slices.Sorted(maps.Keys(doc.Channels)); !slices.Equal(got, slices.Sorted(maps.Keys(wantAddress))) {
		t.Errorf("channels %v, want the three streams", got)
	}
	for stream, addr := range wantAddress {
		if doc.Channels[stream].Address != addr {
			t.Errorf("%s address %q, want %q", stream, doc.Channels[stream].Address, addr)
		}
	}

	// One message per domain type on WECHATPAY_EVENTS.
	var names []string
	for id := range doc.Channels["WECHATPAY_EVENTS"].Messages {
		names = append(names, doc.Components.Messages[id].Name)
	}
	var want []string
	for _, m := range events.Mappings() {
		want = append(want, m.Type)
	}
	if slices.Sort(names); !slices.Equal(names, slices.Sorted(slices.Values(want))) {
		t.Errorf("WECHATPAY_EVENTS messages %v, want %v", names, want)
	}

	// The DLQ headers.
	dlq, _ := yaml.Marshal(doc.Components.Messages["deadLetter"].Headers)
	for _, h := range []string{"Dlq-Reason", "Dlq-Error", "Dlq-Original-Subject", "Dlq-Deliveries", "Dlq-At"} {
		if !strings.Contains(string(dlq), h+":") {
			t.Errorf("deadLetter headers lack %s", h)
		}
	}

	// Every file the document refers to is embedded next to it.
	for _, m := range regexp.MustCompile(`\$ref: '\./([^'#]+)`).FindAllStringSubmatch(string(raw), -1) {
		if _, err := fs.Stat(schemas.FS(), m[1]); err != nil {
			t.Errorf("asyncapi.yaml refers to missing %s", m[1])
		}
	}
}
