package receiver_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// fakeStore records what the handler stores and fails or reports a duplicate on request.
type fakeStore struct {
	mu    sync.Mutex
	msgs  []*nats.Msg
	ids   []string
	fail  bool
	dup   bool
	calls int
}

func (s *fakeStore) Store(_ context.Context, msg *nats.Msg, msgID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail {
		return false, errors.New("fake store: unavailable")
	}
	s.msgs = append(s.msgs, &nats.Msg{Subject: msg.Subject, Data: bytes.Clone(msg.Data), Header: msg.Header})
	s.ids = append(s.ids, msgID)
	return s.dup, nil
}

const (
	fuzzMchID   = "1900000100"
	fuzzPubID   = "PUB_KEY_ID_0100FUZZ"
	fuzzMaxBody = 4096
)

// fuzzKeys are the keys the fuzzed handler trusts: a test key from testdata (the harness signs with it
// when asked, so that the fuzzer explores what lies behind a valid signature) under fuzzPubID, and the
// official SDK's platform certificate, whose signed notification is a seed.
type fuzzKeys struct {
	key         *rsa.PrivateKey
	certificate *x509.Certificate
	cert        *rsa.PublicKey
	certSerial  string
	now         int64
	vector      struct {
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
}

func loadFuzzKeys(f *testing.F) *fuzzKeys {
	raw, err := os.ReadFile("../verify/testdata/wechatpay-go-notify.json")
	if err != nil {
		f.Fatal(err)
	}
	var v struct {
		NowUnix int64  `json:"now_unix"`
		CertPEM string `json:"platform_certificate_pem"`
	}
	k := &fuzzKeys{}
	if err := json.Unmarshal(raw, &v); err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(raw, &k.vector); err != nil {
		f.Fatal(err)
	}
	cert, serial, err := verify.LoadCertificatePEM([]byte(v.CertPEM))
	if err != nil {
		f.Fatal(err)
	}
	k.certificate, k.cert, k.certSerial, k.now = cert, cert.PublicKey.(*rsa.PublicKey), serial, v.NowUnix
	pemKey, err := os.ReadFile("testdata/fuzz-signing-key.pem")
	if err != nil {
		f.Fatal(err)
	}
	block, _ := pem.Decode(pemKey)
	if block == nil {
		f.Fatal("testdata/fuzz-signing-key.pem is not PEM")
	}
	if k.key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		f.Fatal(err)
	}
	return k
}

func (k *fuzzKeys) sign(ts, nonce string, body []byte) string {
	digest := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, k.key, crypto.SHA256, digest[:])
	if err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// validlySigned checks a signature independently of package verify: the rules of the contract, applied
// to the header values as the handler received them.
func (k *fuzzKeys) validlySigned(h http.Header, body []byte) bool {
	get := func(name string) string { return strings.TrimSpace(h.Get(name)) }
	ts, nonce, sig, serial, typ := get("Wechatpay-Timestamp"), get("Wechatpay-Nonce"), get("Wechatpay-Signature"), get("Wechatpay-Serial"), get("Wechatpay-Signature-Type")
	if ts == "" || nonce == "" || sig == "" || serial == "" || (typ != "" && typ != verify.SignatureType) {
		return false
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || t < k.now-300 || t > k.now+300 || strings.HasPrefix(sig, verify.ProbePrefix) {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	var pub *rsa.PublicKey
	switch {
	case serial == fuzzPubID:
		pub = &k.key.PublicKey
	case strings.EqualFold(serial, k.certSerial):
		pub = k.cert
	default:
		return false
	}
	digest := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(body) + "\n"))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], raw) == nil
}

// FuzzHandler drives the receiver's HTTP handler with arbitrary bodies and signature headers (signed by
// the harness when sign is set) and a store that may fail or report duplicates. The handler must never
// panic, must answer only the contract's codes with WeChat's error body, must store only validly signed
// notifications, byte for byte, and must answer 204 only for what the store accepted.
func FuzzHandler(f *testing.F) {
	k := loadFuzzKeys(f)
	ver, err := verify.New(verify.KeySet{PublicKeyID: fuzzPubID, PublicKey: &k.key.PublicKey, Certificates: verify.StaticCertificates(k.certificate)},
		verify.WithClock(func() time.Time { return time.Unix(k.now, 0) }))
	if err != nil {
		f.Fatal(err)
	}
	metrics := receiver.NewMetrics(prometheus.NewRegistry())
	ts := strconv.FormatInt(k.now, 10)
	envelope := `{"id":"3119dfba-e649-5eec-ab1e-3412bc4d2e17","create_time":"2021-06-24T16:37:26+08:00","event_type":"TRANSACTION.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`
	vh := k.vector.Headers
	f.Add(uint8(0), []byte(k.vector.Body), vh["Wechatpay-Timestamp"], vh["Wechatpay-Nonce"], vh["Wechatpay-Signature"], vh["Wechatpay-Serial"], "", false, false, false)
	f.Add(uint8(0), []byte(envelope), ts, "n0nce", "", "", verify.SignatureType, true, false, false)
	f.Add(uint8(1), []byte(envelope), ts, "n0nce", "", "", "", true, false, true)
	f.Add(uint8(0), []byte(envelope), ts, "n0nce", "", "", "", true, true, false)
	f.Add(uint8(2), []byte(envelope), ts, "n0nce", "", "", "", true, false, false)

	f.Fuzz(func(t *testing.T, path uint8, body []byte, ts, nonce, sig, serial, sigType string, sign, storeFails, dup bool) {
		store := &fakeStore{fail: storeFails, dup: dup}
		h := receiver.NewHandler(receiver.HandlerOptions{
			Verifiers: map[string]receiver.Verifier{fuzzMchID: ver}, Store: store, MaxBody: fuzzMaxBody,
			PublishTimeout: time.Second, Log: zerolog.Nop(), Metrics: metrics,
		})
		if sign {
			sig = k.sign(ts, nonce, body)
			if serial == "" {
				serial = fuzzPubID
			}
		}
		target := "/notify/" + fuzzMchID
		switch path % 3 {
		case 1:
			target = "/notify"
		case 2:
			target = "/notify/" + url.PathEscape(serial) // any other merchant
		}
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		for name, v := range map[string]string{"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": sig,
			"Wechatpay-Serial": serial, "Wechatpay-Signature-Type": sigType, "Request-ID": nonce} {
			if v != "" {
				req.Header.Set(name, v)
			}
		}
		req.Header.Set("X-Other", "not stored")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		code := rec.Code

		switch code {
		case 204, 400, 401, 404, 413, 503:
		default:
			t.Fatalf("answered %d", code)
		}
		if code != http.StatusNoContent {
			var fail struct{ Code, Message string }
			if err := json.Unmarshal(rec.Body.Bytes(), &fail); err != nil || fail.Code != "FAIL" || fail.Message == "" || utf8.RuneCountInString(fail.Message) > 64 {
				t.Fatalf("%d with body %q, not {code: FAIL, message ≤ 64}", code, rec.Body.String())
			}
		}
		mchid := strings.TrimPrefix(target, "/notify/")
		if target == "/notify" {
			mchid = fuzzMchID
		}
		if store.calls > 0 {
			if store.calls > 1 || mchid != fuzzMchID || len(body) > fuzzMaxBody || !k.validlySigned(req.Header, body) {
				t.Fatalf("stored (%d calls) a notification that is not validly signed for %s", store.calls, fuzzMchID)
			}
		}
		switch {
		case code == http.StatusNoContent && (store.calls != 1 || storeFails):
			t.Fatalf("204 although the store did not accept it")
		case code == http.StatusServiceUnavailable && (store.calls != 1 || !storeFails):
			t.Fatalf("503 although the store was not asked or did not fail")
		case store.calls == 1 && !storeFails && code != http.StatusNoContent:
			t.Fatalf("stored, but answered %d", code)
		}
		if len(store.msgs) == 1 {
			m := store.msgs[0]
			if !bytes.Equal(m.Data, body) {
				t.Fatalf("stored body differs from the raw body")
			}
			if !strings.HasPrefix(m.Subject, "wechatpay.inbound."+fuzzMchID+".") || strings.ContainsAny(m.Subject, " \t\r\n*>") || strings.Contains(m.Subject, "..") {
				t.Fatalf("stored under subject %q", m.Subject)
			}
			if !strings.HasPrefix(store.ids[0], fuzzMchID+":") || len(store.ids[0]) <= len(fuzzMchID)+1 {
				t.Fatalf("stored with Nats-Msg-Id %q", store.ids[0])
			}
			for name := range m.Header {
				if !strings.HasPrefix(name, "Wechatpay-") && name != "Request-Id" && name != "Request-ID" {
					t.Fatalf("stored header %s", name)
				}
			}
		}
	})
}
