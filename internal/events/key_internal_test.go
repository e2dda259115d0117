package events

import (
	"reflect"
	"testing"
)

func TestUUIDv5KnownVector(t *testing.T) {
	// RFC 9562 DNS namespace; the value Python's uuid.uuid5(NAMESPACE_DNS, "python.org") gives.
	dns := [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}
	if got, want := formatUUID(uuidV5Bytes(dns, "python.org")), "886313e1-3b8a-5372-9b90-0c9aee199e5d"; got != want {
		t.Fatalf("uuidV5 = %s, want %s", got, want)
	}
	if got, want := formatUUID(eventNamespace), "45893c22-4334-5f1e-b112-06fa80013a52"; got != want {
		t.Fatalf("eventNamespace = %s, want %s", got, want)
	}
}

func TestDedupeKeyEscaping(t *testing.T) {
	tests := []struct {
		parts []string
		want  string
	}{
		{[]string{"4200000001", "SUCCESS"}, "1900000100:payment.failed:4200000001:SUCCESS"},
		{[]string{"a:b", "c d"}, "1900000100:payment.failed:a%3Ab:c%20d"},
		{[]string{"100%", "x\ny", "*>"}, "1900000100:payment.failed:100%25:x%0Ay:%2A%3E"},
		{[]string{"粤B"}, "1900000100:payment.failed:%E7%B2%A4B"},
		{[]string{"A-Z_a.z"}, "1900000100:payment.failed:A-Z_a.z"},
	}
	for _, tt := range tests {
		if got := dedupeKey("1900000100", "payment.failed", tt.parts); got != tt.want {
			t.Errorf("dedupeKey(%q) = %q, want %q", tt.parts, got, tt.want)
		}
	}
}

func TestTableRowsAreConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range table {
		if seen[r.eventType] || seen[r.typ] {
			t.Errorf("duplicate row %s / %s", r.eventType, r.typ)
		}
		seen[r.eventType], seen[r.typ] = true, true
		if r.schema != r.typ+".json" {
			t.Errorf("%s: schema %q, want %q", r.eventType, r.schema, r.typ+".json")
		}
		if r.decode == nil {
			t.Errorf("%s: no decoder", r.eventType)
		}
	}
}

func TestMustCheckable(t *testing.T) {
	type bad struct {
		Flag bool `json:"flag"`
	}
	defer func() {
		if recover() == nil {
			t.Fatal("mustCheckable accepted a bool field")
		}
	}()
	mustCheckable(reflect.TypeFor[struct {
		Inner []*bad `json:"inner"`
	}]())
}
