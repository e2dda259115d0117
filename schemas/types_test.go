package schemas_test

import (
	"encoding/json"
	"io/fs"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/schemas"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// goTypes is the Go type of each event type's data, written out so that the
// test also notices a type wxevents forgot.
var goTypes = map[wxevents.Type]wxevents.Data{
	wxevents.TypePaymentSucceeded:     wxevents.PaymentSucceeded{},
	wxevents.TypePaymentFailed:        wxevents.PaymentFailed{},
	wxevents.TypePaymentRepaid:        wxevents.PaymentRepaid{},
	wxevents.TypeRefundSucceeded:      wxevents.RefundSucceeded{},
	wxevents.TypeRefundAbnormal:       wxevents.RefundAbnormal{},
	wxevents.TypeRefundClosed:         wxevents.RefundClosed{},
	wxevents.TypeViolationPunished:    wxevents.ViolationPunished{},
	wxevents.TypeViolationIntercepted: wxevents.ViolationIntercepted{},
	wxevents.TypeViolationAppealed:    wxevents.ViolationAppealed{},
	wxevents.TypeParkingStateChanged:  wxevents.ParkingStateChanged{},
}

// TestSchemasMatchGoTypes proves the published JSON Schemas and package
// wxevents' Go types describe the same documents: every property a schema
// declares (through $ref, allOf, anyOf and oneOf alike) is a field of the Go
// type with a compatible JSON type, and every field of the Go type is a
// property of the schema, recursively through objects and arrays. The same
// holds for the CloudEvents envelope (cloudevent.json) and wxevents.Event.
func TestSchemasMatchGoTypes(t *testing.T) {
	r := loadRaw(t)
	if got := slices.Sorted(maps.Keys(goTypes)); !slices.Equal(got, slices.Sorted(slices.Values(wxevents.Types()))) {
		t.Fatalf("wxevents.Types() = %v, the test knows %v", wxevents.Types(), got)
	}
	for _, typ := range wxevents.Types() {
		t.Run(string(typ), func(t *testing.T) {
			v := goTypes[typ]
			if v.DomainType() != typ {
				t.Fatalf("%T.DomainType() = %s", v, v.DomainType())
			}
			file := string(typ) + ".json"
			if wxevents.DataSchemaBase+file != typ.DataSchema() {
				t.Errorf("DataSchema() = %s, want the file %s", typ.DataSchema(), file)
			}
			for _, p := range r.compare(r.root(t, file), reflect.TypeOf(v), "") {
				t.Error(p)
			}
		})
	}
	t.Run("envelope", func(t *testing.T) {
		for _, p := range r.compare(r.root(t, schemas.EnvelopeSchema), reflect.TypeFor[wxevents.Event](), "") {
			t.Error(p)
		}
	})
}

// TestCompareFindsDrift: the comparison is not vacuous — a missing field, an
// extra field and a field of another JSON type are each reported.
func TestCompareFindsDrift(t *testing.T) {
	r := loadRaw(t)
	root := r.root(t, "violation.punished.json")
	tests := []struct {
		name string
		typ  reflect.Type
		want string
	}{
		{"field missing from Go", reflect.TypeFor[struct {
			SubMchID string `json:"sub_mchid"`
		}](), "company_name: declared by the schema, not a field of the Go type"},
		{"field missing from schema", reflect.TypeFor[struct {
			Violation wxevents.Violation `json:"-"`
			Extra     string             `json:"extra"`
		}](), "extra: a field of the Go type, not declared by the schema"},
		{"wrong JSON type", reflect.TypeFor[struct {
			RecordID int64 `json:"record_id"`
		}](), "record_id: Go int64 wants JSON integer, the schema allows [string]"},
		{"time without date-time", reflect.TypeFor[struct {
			CompanyName time.Time `json:"company_name"`
		}](), "company_name: Go time.Time wants a date-time string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := r.compare(root, tt.typ, "")
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Fatalf("problems %q lack %q", problems, tt.want)
			}
		})
	}
}

// rawSchemas holds every schema file as decoded JSON, by file name.
type rawSchemas map[string]map[string]any

func loadRaw(t *testing.T) rawSchemas {
	t.Helper()
	names, err := fs.Glob(schemas.FS(), "*.json")
	if err != nil {
		t.Fatal(err)
	}
	r := rawSchemas{}
	for _, name := range names {
		b, err := fs.ReadFile(schemas.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r[name] = doc
	}
	return r
}

// node is a schema object with the file its relative references resolve in.
type node struct {
	file string
	m    map[string]any
}

func (r rawSchemas) root(t *testing.T, file string) node {
	t.Helper()
	doc, ok := r[file]
	if !ok {
		t.Fatalf("no schema %s", file)
	}
	return node{file, doc}
}

// ref resolves a "$ref" of the form "[file]#/$defs/name".
func (r rawSchemas) ref(from node, ref string) (node, bool) {
	file, pointer, _ := strings.Cut(ref, "#")
	if file == "" {
		file = from.file
	}
	cur, ok := r[file]
	if !ok {
		return node{}, false
	}
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		if tok == "" {
			continue
		}
		next, ok := cur[tok].(map[string]any)
		if !ok {
			return node{}, false
		}
		cur = next
	}
	return node{file, cur}, true
}

// applying returns n and every subschema that applies to the same instance:
// the targets of $ref and the branches of allOf, anyOf and oneOf,
// recursively. Their properties and types together say what the instance
// may hold.
func (r rawSchemas) applying(n node) []node {
	out := []node{n}
	if ref, ok := n.m["$ref"].(string); ok {
		if target, ok := r.ref(n, ref); ok {
			out = append(out, r.applying(target)...)
		}
	}
	for _, kw := range []string{"allOf", "anyOf", "oneOf"} {
		branches, _ := n.m[kw].([]any)
		for _, b := range branches {
			if bm, ok := b.(map[string]any); ok {
				out = append(out, r.applying(node{n.file, bm})...)
			}
		}
	}
	return out
}

// jsonTypes are the non-null JSON types n allows, from "type", "const" and
// "enum" of every applying subschema; empty when none says.
func (r rawSchemas) jsonTypes(n node) []string {
	set := map[string]bool{}
	add := func(v any) {
		switch v.(type) {
		case string:
			set["string"] = true
		case float64:
			set["number"] = true
		case bool:
			set["boolean"] = true
		case map[string]any:
			set["object"] = true
		case []any:
			set["array"] = true
		}
	}
	for _, a := range r.applying(n) {
		switch ty := a.m["type"].(type) {
		case string:
			set[ty] = true
		case []any:
			for _, x := range ty {
				if s, ok := x.(string); ok {
					set[s] = true
				}
			}
		}
		if c, ok := a.m["const"]; ok {
			add(c)
		}
		if e, ok := a.m["enum"].([]any); ok {
			for _, x := range e {
				add(x)
			}
		}
	}
	delete(set, "null")
	return slices.Sorted(maps.Keys(set))
}

func (r rawSchemas) properties(n node) map[string][]node {
	out := map[string][]node{}
	for _, a := range r.applying(n) {
		props, _ := a.m["properties"].(map[string]any)
		for name, p := range props {
			if pm, ok := p.(map[string]any); ok {
				out[name] = append(out[name], node{a.file, pm})
			}
		}
	}
	return out
}

func (r rawSchemas) items(n node) []node {
	var out []node
	for _, a := range r.applying(n) {
		if it, ok := a.m["items"].(map[string]any); ok {
			out = append(out, node{a.file, it})
		}
	}
	return out
}

func (r rawSchemas) format(n node) string {
	for _, a := range r.applying(n) {
		if f, ok := a.m["format"].(string); ok {
			return f
		}
	}
	return ""
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// compare reports every difference between the schema declarations ns of
// one instance and the Go type t it decodes into.
func (r rawSchemas) compare(n node, t reflect.Type, path string) []string {
	return r.compareAll([]node{n}, t, path)
}

func (r rawSchemas) compareAll(ns []node, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var problems []string
	var want string
	switch {
	case t == timeType:
		for _, n := range ns {
			if !slices.Equal(r.jsonTypes(n), []string{"string"}) || r.format(n) != "date-time" {
				problems = append(problems, path+": Go time.Time wants a date-time string")
			}
		}
		return problems
	case t == rawType:
		want = "object" // an event's data
	case t.Kind() == reflect.String:
		want = "string"
	case t.Kind() == reflect.Int64:
		want = "integer"
	case t.Kind() == reflect.Slice:
		want = "array"
	case t.Kind() == reflect.Struct:
		want = "object"
	default:
		return []string{path + ": Go kind " + t.Kind().String() + " has no JSON Schema counterpart here"}
	}
	for _, n := range ns {
		if got := r.jsonTypes(n); !slices.Equal(got, []string{want}) {
			problems = append(problems, path+": Go "+t.String()+" wants JSON "+want+", the schema allows "+fmtTypes(got))
		}
	}
	switch {
	case t == rawType:
	case t.Kind() == reflect.Slice:
		var items []node
		for _, n := range ns {
			items = append(items, r.items(n)...)
		}
		if len(items) == 0 {
			return append(problems, path+": the schema does not say what the array holds")
		}
		problems = append(problems, r.compareAll(items, t.Elem(), path+"[]")...)
	case t.Kind() == reflect.Struct:
		declared := map[string][]node{}
		for _, n := range ns {
			for name, p := range r.properties(n) {
				declared[name] = append(declared[name], p...)
			}
		}
		fields := jsonFields(t)
		for _, name := range slices.Sorted(maps.Keys(declared)) {
			ft, ok := fields[name]
			if !ok {
				problems = append(problems, join(path, name)+": declared by the schema, not a field of the Go type")
				continue
			}
			problems = append(problems, r.compareAll(declared[name], ft, join(path, name))...)
		}
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			if _, ok := declared[name]; !ok {
				problems = append(problems, join(path, name)+": a field of the Go type, not declared by the schema")
			}
		}
	}
	return problems
}

func fmtTypes(ts []string) string { return "[" + strings.Join(ts, " ") + "]" }

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// jsonFields maps the JSON names of a struct's fields to their types, as
// encoding/json names them.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
