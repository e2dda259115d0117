package envelope_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name, body string
		wantErr    bool
		eventType  string
	}{
		{name: "official shape", body: `{"id":"EV-2018022511223320873","create_time":"2015-05-20T13:29:35+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"abc","associated_data":"","nonce":"fdasflkja484"}}`, eventType: "TRANSACTION.SUCCESS"},
		{name: "odd create_time kept as text", body: `{"id":"x1","create_time":"20180225112233","event_type":"VIOLATION.PUNISH","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`, eventType: "VIOLATION.PUNISH"},
		{name: "unknown fields ignored", body: `{"id":"x1","event_type":"A","extra":{"deep":[1]},"resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`, eventType: "A"},
		// Exact keys: a case variant of a known key would otherwise re-route the message or change its id.
		{name: "EVENT_TYPE beside event_type", body: `{"id":"x","event_type":"TRANSACTION.SUCCESS","EVENT_TYPE":"REFUND.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`, wantErr: true},
		{name: "ID beside id", body: `{"id":"x","ID":"other","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`, wantErr: true},
		{name: "Event_Type alone", body: `{"id":"x","Event_Type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`, wantErr: true},
		{name: "id twice", body: `{"id":"x","id":"y","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`, wantErr: true},
		{name: "resource key in another case", body: `{"id":"x","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"n","Nonce":"m"}}`, wantErr: true},
		// The resource is what the consumer decrypts: without it the notification can never become an event.
		{name: "resource missing", body: `{"id":"x","event_type":"A"}`, wantErr: true},
		{name: "resource null", body: `{"id":"x","event_type":"A","resource":null}`, wantErr: true},
		{name: "resource not an object", body: `{"id":"x","event_type":"A","resource":"abc"}`, wantErr: true},
		{name: "resource without ciphertext", body: `{"id":"x","event_type":"A","resource":{"algorithm":"AEAD_AES_256_GCM","nonce":"n"}}`, wantErr: true},
		{name: "resource with an empty algorithm", body: `{"id":"x","event_type":"A","resource":{"algorithm":"","ciphertext":"YQ==","nonce":"n"}}`, wantErr: true},
		{name: "missing id", body: `{"event_type":"TRANSACTION.SUCCESS"}`, wantErr: true},
		{name: "missing event_type", body: `{"id":"x"}`, wantErr: true},
		{name: "wildcard in event_type", body: `{"id":"x","event_type":"TRANSACTION.>"}`, wantErr: true},
		{name: "space in id", body: `{"id":"a b","event_type":"A"}`, wantErr: true},
		{name: "newline in id", body: `{"id":"a\r\nNats-Msg-Id: y","event_type":"A"}`, wantErr: true},
		{name: "empty subject token", body: `{"id":"x","event_type":"A..B"}`, wantErr: true},
		{name: "leading dot", body: `{"id":"x","event_type":".A"}`, wantErr: true},
		{name: "id too long", body: `{"id":"` + strings.Repeat("a", 65) + `","event_type":"A"}`, wantErr: true},
		{name: "not JSON", body: `id=1`, wantErr: true},
		{name: "array", body: `[1,2]`, wantErr: true},
		{name: "id is a number", body: `{"id":1,"event_type":"A"}`, wantErr: true},
		{name: "invalid UTF-8 in event type", body: "{\"id\":\"x\",\"event_type\":\"A\xff\"}", wantErr: true},
		{name: "create_time as a number", body: `{"id":"x","event_type":"A","create_time":20180225112233}`, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := envelope.Parse([]byte(c.body))
			if c.wantErr {
				if !errors.Is(err, envelope.ErrMalformed) {
					t.Fatalf("Parse = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.EventType != c.eventType {
				t.Fatalf("EventType = %q", e.EventType)
			}
		})
	}
}

func TestSubjectToken(t *testing.T) {
	e := envelope.Envelope{EventType: "VEHICLE.ENTRANCE_STATE_CHANGE"}
	if got := e.SubjectToken(); got != "vehicle.entrance_state_change" {
		t.Fatalf("SubjectToken = %q", got)
	}
}

// FuzzParse feeds internet-facing bytes to the envelope parser: it must never panic, and whatever it
// accepts must be safe to put in a NATS subject and a Nats-Msg-Id header and carry a resource to decrypt.
// (FuzzParseEnvelope in internal/receiver checks that the receiver's fast path agrees with it.)
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2021-06-24T16:37:26+08:00","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`))
	f.Add([]byte(`{"id":"x","event_type":"TRANSACTION.SUCCESS","EVENT_TYPE":"REFUND.SUCCESS","resource":{"algorithm":"A","ciphertext":"YQ==","nonce":"n"}}`))
	f.Add([]byte(`{"id":"x","id":"y","event_type":"A","resource":{"algorithm":"A","ciphertext":"YQ==","nonce":"n","Nonce":"m"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := envelope.Parse(body)
		if err != nil {
			if !errors.Is(err, envelope.ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		for _, s := range []string{e.ID, e.EventType} {
			if s == "" || !utf8.ValidString(s) || strings.ContainsAny(s, " \t\r\n*>") {
				t.Fatalf("accepted unsafe token %q", s)
			}
		}
		if strings.Contains(e.SubjectToken(), "..") {
			t.Fatalf("empty subject token in %q", e.SubjectToken())
		}
		if e.Resource.Algorithm == "" || e.Resource.Ciphertext == "" || e.Resource.Nonce == "" {
			t.Fatalf("accepted an envelope without a resource to decrypt")
		}
	})
}

// BenchmarkParse parses the envelope of a canonical payment notification, as the consumer does once per
// delivery.
func BenchmarkParse(b *testing.B) {
	p, err := wechatsim.NewPlatform("1900000100")
	if err != nil {
		b.Fatal(err)
	}
	n, err := p.Build("TRANSACTION.SUCCESS", samples.All()["TRANSACTION.SUCCESS"], wechatsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(n.Body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope.Parse(n.Body); err != nil {
			b.Fatal(err)
		}
	}
}
