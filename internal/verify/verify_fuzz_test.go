package verify_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// FuzzVerify feeds arbitrary headers and bodies to a verifier that knows the official SDK's platform
// certificate and the same key as a WeChat Pay public key, at the vector's clock. It must never panic,
// must name the failed check of every rejection, must not echo the body, and must accept nothing but the
// message WeChat Pay signed: the same timestamp, nonce and body bytes and the same signature bytes.
func FuzzVerify(f *testing.F) {
	raw, err := os.ReadFile("testdata/wechatpay-go-notify.json")
	if err != nil {
		f.Fatal(err)
	}
	v := loadVectorFrom(f, raw)
	cert, certSerial, err := verify.LoadCertificatePEM([]byte(v.CertPEM))
	if err != nil {
		f.Fatal(err)
	}
	pemKey, err := os.ReadFile("testdata/wechatpay-go-pubkey.pem")
	if err != nil {
		f.Fatal(err)
	}
	pub, err := verify.LoadPublicKeyPEM(pemKey)
	if err != nil {
		f.Fatal(err)
	}
	const pubID = "PUB_KEY_ID_0114232134912410000000000000"
	ver, err := verify.New(verify.KeySet{PublicKeyID: pubID, PublicKey: pub, Certificates: verify.StaticCertificates(cert)},
		verify.WithClock(func() time.Time { return time.Unix(v.NowUnix, 0) }))
	if err != nil {
		f.Fatal(err)
	}
	h := vectorHeaders(v)
	signedMsg := h.Timestamp + "\n" + h.Nonce + "\n" + v.Body + "\n"
	signedSig, _ := base64.StdEncoding.DecodeString(h.Signature)
	f.Add(h.Timestamp, h.Nonce, h.Signature, h.Serial, "", []byte(v.Body))
	f.Add(h.Timestamp, h.Nonce, h.Signature, pubID, verify.SignatureType, []byte(v.Body))

	f.Fuzz(func(t *testing.T, ts, nonce, sig, serial, sigType string, body []byte) {
		err := ver.Verify(context.Background(), verify.Headers{Timestamp: ts, Nonce: nonce, Signature: sig, Serial: serial, SignatureType: sigType}, body)
		if err != nil {
			if verify.Reason(err) == "other" {
				t.Fatalf("rejection %v names no check", err)
			}
			if len(body) >= 64 && strings.Contains(err.Error(), string(body)) {
				t.Fatalf("error text echoes the body: %v", err)
			}
			return
		}
		got, derr := base64.StdEncoding.DecodeString(sig)
		switch {
		case ts+"\n"+nonce+"\n"+string(body)+"\n" != signedMsg:
			t.Fatalf("accepted a message WeChat Pay did not sign: ts %q nonce %q body %q", ts, nonce, body)
		case derr != nil || !bytes.Equal(got, signedSig):
			t.Fatalf("accepted another signature %q", sig)
		case serial != pubID && !strings.EqualFold(serial, certSerial):
			t.Fatalf("accepted serial %q", serial)
		case sigType != "" && sigType != verify.SignatureType:
			t.Fatalf("accepted signature type %q", sigType)
		case strings.HasPrefix(sig, verify.ProbePrefix):
			t.Fatalf("accepted a probe")
		}
	})
}

func loadVectorFrom(tb testing.TB, raw []byte) vector {
	tb.Helper()
	var v vector
	if err := json.Unmarshal(raw, &v); err != nil {
		tb.Fatal(err)
	}
	return v
}
