package receiver

import (
	"bytes"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// sameAsParse fails unless parseEnvelope gives what envelope.Parse gives for body (id, event type, error
// text), and unless the fast path, when it accepts body, agrees with envelope.Parse.
func sameAsParse(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	want, wantErr := envelope.Parse(body)
	got, gotErr := parseEnvelope(body)
	if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
		t.Fatalf("error %v, envelope.Parse says %v\nbody: %q", gotErr, wantErr, body)
	}
	if got.ID != want.ID || got.EventType != want.EventType || got.SubjectToken() != want.SubjectToken() {
		t.Fatalf("(%q, %q), envelope.Parse says (%q, %q)\nbody: %q", got.ID, got.EventType, want.ID, want.EventType, body)
	}
	id, eventType, ok := scanEnvelope(body)
	if ok && (wantErr != nil || id != want.ID || eventType != want.EventType) {
		t.Fatalf("fast path accepted (%q, %q) where envelope.Parse gives (%q, %q, %v)\nbody: %q", id, eventType, want.ID, want.EventType, wantErr, body)
	}
	return ok
}

// WeChat Pay's notifications, as the simulator builds them, all take the fast path.
func TestParseEnvelopeFastPathTakesEveryEventType(t *testing.T) {
	p, err := wechatsim.NewPlatform("1900000100")
	if err != nil {
		t.Fatal(err)
	}
	for name, plain := range samples.All() {
		n, err := p.Build(samples.EventType(name), plain, wechatsim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !sameAsParse(t, n.Body) {
			t.Errorf("%s: the fast path refused a canonical notification", name)
		}
		pretty := bytes.ReplaceAll(n.Body, []byte(`,"`), []byte(",\n  \""))
		if !sameAsParse(t, append(append([]byte(" \r\n\t"), pretty...), '\n')) {
			t.Errorf("%s: the fast path refused a notification with whitespace", name)
		}
	}
}

var envelopeCases = []struct {
	name string
	body string
	fast bool
}{
	{"canonical", `{"id":"a-1","create_time":"2015-05-20T13:29:35+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v","associated_data":"","nonce":"abc"}}`, true},
	{"only id, type and resource", `{"id":"x","event_type":"A.B","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v","nonce":"abc"}}`, true},
	{"escape in summary", `{"id":"x","event_type":"A.B","summary":"\u652f\n\"q\"\\","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v","nonce":"abc"}}`, true},
	{"escaped ciphertext", `{"id":"x","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v\/","nonce":"abc"}}`, true},
	{"empty resource", `{"id":"x","event_type":"A","resource":{}}`, false},
	{"no resource", `{"id":"x","event_type":"A.B"}`, false},
	{"resource without nonce", `{"id":"x","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v"}}`, false},
	{"resource with an empty ciphertext", `{"id":"x","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"","nonce":"abc"}}`, false},
	{"EVENT_TYPE beside event_type", `{"id":"x","event_type":"TRANSACTION.SUCCESS","EVENT_TYPE":"REFUND.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v","nonce":"abc"}}`, false},
	{"ID beside id", `{"id":"x","ID":"other","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v","nonce":"abc"}}`, false},
	{"invalid UTF-8 in summary", "{\"id\":\"x\",\"event_type\":\"A\",\"summary\":\"\xff\xfe\",\"resource\":{\"algorithm\":\"AEAD_AES_256_GCM\",\"ciphertext\":\"Zm9v\",\"nonce\":\"abc\"}}", true},
	{"escaped id", `{"id":"\u0078","event_type":"A"}`, false},
	{"escaped key", `{"\u0069d":"x","event_type":"A"}`, false},
	{"key in other case", `{"ID":"x","event_type":"A"}`, false},
	{"both cases", `{"id":"x","ID":"y","event_type":"A"}`, false},
	{"duplicate id", `{"id":"x","id":"y","event_type":"A"}`, false},
	{"duplicate resource field", `{"id":"x","event_type":"A","resource":{"nonce":"a","nonce":"b"}}`, false},
	{"unknown key", `{"id":"x","event_type":"A","extra":1}`, false},
	{"unknown resource key", `{"id":"x","event_type":"A","resource":{"plaintext":"p"}}`, false},
	{"null summary", `{"id":"x","event_type":"A","summary":null}`, false},
	{"number id", `{"id":1,"event_type":"A"}`, false},
	{"resource string", `{"id":"x","event_type":"A","resource":"r"}`, false},
	{"resource null", `{"id":"x","event_type":"A","resource":null}`, false},
	{"missing id", `{"event_type":"A"}`, false},
	{"empty id", `{"id":"","event_type":"A"}`, false},
	{"space in id", `{"id":"a b","event_type":"A"}`, false},
	{"long id", `{"id":"` + strings.Repeat("a", envelope.MaxIDLength+1) + `","event_type":"A"}`, false},
	{"longest id", `{"id":"` + strings.Repeat("a", envelope.MaxIDLength) + `","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"Zm9v","nonce":"abc"}}`, true},
	{"leading dot", `{"id":"x","event_type":".A"}`, false},
	{"trailing dot", `{"id":"x","event_type":"A."}`, false},
	{"double dot", `{"id":"x","event_type":"A..B"}`, false},
	{"wildcard", `{"id":"x","event_type":"A.>"}`, false},
	{"trailing comma", `{"id":"x","event_type":"A",}`, false},
	{"trailing data", `{"id":"x","event_type":"A"} {}`, false},
	{"trailing garbage", `{"id":"x","event_type":"A"}x`, false},
	{"unterminated", `{"id":"x","event_type":"A"`, false},
	{"unterminated string", `{"id":"x","event_type":"A`, false},
	{"control character", "{\"id\":\"x\",\"event_type\":\"A\",\"summary\":\"a\tb\"}", false},
	{"bad escape", `{"id":"x","event_type":"A","summary":"\x"}`, false},
	{"short unicode escape", `{"id":"x","event_type":"A","summary":"\u12"}`, false},
	{"array", `[{"id":"x","event_type":"A"}]`, false},
	{"byte order mark", "\xef\xbb\xbf{\"id\":\"x\",\"event_type\":\"A\"}", false},
	{"empty", ``, false},
	{"empty object", `{}`, false},
	{"missing colon", `{"id" "x","event_type":"A"}`, false},
}

func TestParseEnvelopeMatchesEnvelopeParse(t *testing.T) {
	for _, c := range envelopeCases {
		t.Run(c.name, func(t *testing.T) {
			if fast := sameAsParse(t, []byte(c.body)); fast != c.fast {
				t.Errorf("fast path %v, want %v", fast, c.fast)
			}
		})
	}
}

// FuzzParseEnvelope: whatever the body, the receiver's envelope parsing agrees with envelope.Parse.
func FuzzParseEnvelope(f *testing.F) {
	for _, c := range envelopeCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sameAsParse(t, body)
	})
}

// BenchmarkParseEnvelope compares the receiver's parsing of a canonical notification with envelope.Parse.
func BenchmarkParseEnvelope(b *testing.B) {
	p, err := wechatsim.NewPlatform("1900000100")
	if err != nil {
		b.Fatal(err)
	}
	n, err := p.Build("TRANSACTION.SUCCESS", samples.All()["TRANSACTION.SUCCESS"], wechatsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		parse func([]byte) (envelope.Envelope, error)
	}{{"envelope.Parse", envelope.Parse}, {"receiver", parseEnvelope}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.parse(n.Body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
