package envelope

import (
	"reflect"
	"testing"
)

// FuzzScanMatchesReference: whatever the body, Parse (the single scan where it applies) and
// parseReference (encoding/json) give the same Envelope, and both fail or neither does.
func FuzzScanMatchesReference(f *testing.F) {
	for _, b := range []string{
		`{"id":"EV-2018022511223320873","create_time":"2015-05-20T13:29:35+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"支付成功","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"abc","associated_data":"","nonce":"fdasflkja484"}}`,
		` {"id":"x","event_type":"A","x":"y","x":"z","resource":{"algorithm":"A","ciphertext":"YQ==","nonce":"n"}} `,
		`{"id":"x","ID":"y","event_type":"A","resource":{"algorithm":"A","ciphertext":"YQ==","nonce":"n"}}`,
		`{"id":"x","event_type":"A","resource":{"algorithm":"A","ciphertext":"YQ==","nonce":"n","nonce":"m"}}`,
		`{"id":"x","event_type":"A","resource":{"algorithm":"A","ciphertext":"YQ==","nonce":"n"}}x`,
		`{"id":"x","event_type":"A","resource":{"algorithm":"A","ciphertext":"Y\u0051==","nonce":"n"}}`,
		`{"id":"x","event_type":"A","resource":{}}`,
		"{\"id\":\"x\",\"event_type\":\"A\",\"summary\":\"\xff\",\"resource\":{\"algorithm\":\"A\",\"ciphertext\":\"YQ==\",\"nonce\":\"n\"}}",
	} {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := Parse(body)
		want, wantErr := parseReference(body)
		if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
			t.Fatalf("Parse error %v, reference %v", gotErr, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Parse = %+v\nreference %+v", got, want)
		}
	})
}
