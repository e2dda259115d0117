package verify_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/verify"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

type vector struct {
	NowUnix     int64             `json:"now_unix"`
	Headers     map[string]string `json:"headers"`
	Body        string            `json:"body"`
	CertPEM     string            `json:"platform_certificate_pem"`
	CertSerial  string            `json:"platform_certificate_serial"`
	ExpectedOut string            `json:"expected_plaintext"`
}

func loadVector(t *testing.T) vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/wechatpay-go-notify.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vector
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func vectorHeaders(v vector) verify.Headers {
	h := http.Header{}
	for k, val := range v.Headers {
		h.Set(k, val)
	}
	return verify.HeadersFrom(h)
}

func at(unix int64) verify.Option {
	return verify.WithClock(func() time.Time { return time.Unix(unix, 0) })
}

// The official SDK's own signed notification must verify at its clock, with its certificate.
func TestExternalVectorCertificate(t *testing.T) {
	v := loadVector(t)
	cert, serial, err := verify.LoadCertificatePEM([]byte(v.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	if serial != v.CertSerial {
		t.Fatalf("serial = %s, want %s", serial, v.CertSerial)
	}
	ks := verify.KeySet{Certificates: verify.StaticCertificates(cert)}
	body := []byte(v.Body)

	cases := []struct {
		name string
		now  int64
		body []byte
		want error
	}{
		{"at its clock", v.NowUnix, body, nil},
		{"300 s later", v.NowUnix + 300, body, nil},
		{"300 s earlier", v.NowUnix - 300, body, nil},
		{"301 s later", v.NowUnix + 301, body, verify.ErrStaleTimestamp},
		{"301 s earlier", v.NowUnix - 301, body, verify.ErrStaleTimestamp},
		{"one body byte changed", v.NowUnix, flipByte(body, 10), verify.ErrSignatureMismatch},
		{"trailing newline added", v.NowUnix, append(append([]byte{}, body...), '\n'), verify.ErrSignatureMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ver, err := verify.New(ks, at(c.now))
			if err != nil {
				t.Fatal(err)
			}
			err = ver.Verify(context.Background(), vectorHeaders(v), c.body)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

// The same notification verifies with the SDK's public-key vector (the same RSA key) configured as a WeChat
// Pay public key whose id is the serial in the header: public-key mode with external data.
func TestExternalVectorPublicKey(t *testing.T) {
	v := loadVector(t)
	pemBytes, err := os.ReadFile("testdata/wechatpay-go-pubkey.pem")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := verify.LoadPublicKeyPEM(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	ver, err := verify.New(verify.KeySet{PublicKeyID: v.CertSerial, PublicKey: pub}, at(v.NowUnix))
	if err != nil {
		t.Fatal(err)
	}
	if err := ver.Verify(context.Background(), vectorHeaders(v), []byte(v.Body)); err != nil {
		t.Fatalf("Verify = %v", err)
	}
	// A different key id for the same key: the serial no longer names a configured key.
	ver, _ = verify.New(verify.KeySet{PublicKeyID: "PUB_KEY_ID_OTHER", PublicKey: pub}, at(v.NowUnix))
	if err := ver.Verify(context.Background(), vectorHeaders(v), []byte(v.Body)); !errors.Is(err, verify.ErrUnknownSerial) {
		t.Fatalf("Verify = %v, want ErrUnknownSerial", err)
	}
}

func flipByte(b []byte, i int) []byte {
	out := append([]byte{}, b...)
	out[i] ^= 0x01
	return out
}

var (
	platformOnce sync.Once
	platforms    [2]*wechatsim.Platform
)

// testPlatforms generates two merchants once per test binary: RSA key generation is slow.
func testPlatforms(t *testing.T) (*wechatsim.Platform, *wechatsim.Platform) {
	t.Helper()
	platformOnce.Do(func() {
		for i, id := range []string{"1900000100", "1900000200"} {
			p, err := wechatsim.NewPlatform(id)
			if err != nil {
				panic(err)
			}
			platforms[i] = p
		}
	})
	return platforms[0], platforms[1]
}

func bothKeys(p *wechatsim.Platform) verify.KeySet {
	pub, _ := verify.LoadPublicKeyPEM(p.PublicPEM)
	cert, _, _ := verify.LoadCertificatePEM(p.CertPEM)
	return verify.KeySet{PublicKeyID: p.PublicKeyID, PublicKey: pub, Certificates: verify.StaticCertificates(cert)}
}

func TestVerifyTable(t *testing.T) {
	shared, other := testPlatforms(t)
	now := time.Unix(1_800_000_000, 0)
	pc := *shared
	p := &pc
	p.Now = func() time.Time { return now }
	plain := []byte(`{"transaction_id":"4200000000000000000000000001"}`)

	build := func(o wechatsim.Options) wechatsim.Notification {
		n, err := p.Build("TRANSACTION.SUCCESS", plain, o)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	pubOnly := func() verify.KeySet { ks := bothKeys(p); ks.Certificates = nil; return ks }
	certOnly := func() verify.KeySet { ks := bothKeys(p); ks.PublicKey, ks.PublicKeyID = nil, ""; return ks }
	otherKeys := func() verify.KeySet {
		// Another merchant's keys under this merchant's key id and serial: a signature valid for another
		// merchant must not pass here.
		ks := bothKeys(other)
		ks.PublicKeyID = p.PublicKeyID
		return ks
	}

	cases := []struct {
		name   string
		keys   verify.KeySet
		n      wechatsim.Notification
		mutate func(h http.Header, body []byte) []byte
		want   error
		reason string
	}{
		{name: "public key", keys: bothKeys(p), n: build(wechatsim.Options{Key: wechatsim.SignWithPublicKeyID})},
		{name: "certificate", keys: bothKeys(p), n: build(wechatsim.Options{Key: wechatsim.SignWithCertificate})},
		{name: "public key only configured", keys: pubOnly(), n: build(wechatsim.Options{Key: wechatsim.SignWithPublicKeyID})},
		{name: "certificate only configured", keys: certOnly(), n: build(wechatsim.Options{Key: wechatsim.SignWithCertificate})},
		{name: "certificate serial in lower case", keys: certOnly(), n: build(wechatsim.Options{Key: wechatsim.SignWithCertificate}),
			mutate: func(h http.Header, b []byte) []byte {
				h.Set("Wechatpay-Serial", strings.ToLower(p.CertSerial))
				return b
			}},
		{name: "no signature type header", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { h.Del("Wechatpay-Signature-Type"); return b }},
		{name: "cert-signed, only public key configured", keys: pubOnly(), n: build(wechatsim.Options{Key: wechatsim.SignWithCertificate}),
			want: verify.ErrUnknownSerial, reason: "unknown_serial"},
		{name: "pubkey-signed, only certificate configured", keys: certOnly(), n: build(wechatsim.Options{}),
			want: verify.ErrUnknownSerial, reason: "unknown_serial"},
		{name: "unknown serial", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { h.Set("Wechatpay-Serial", "PUB_KEY_ID_NOPE"); return b },
			want:   verify.ErrUnknownSerial, reason: "unknown_serial"},
		{name: "signed by another merchant's key", keys: otherKeys(), n: build(wechatsim.Options{}),
			want: verify.ErrSignatureMismatch, reason: "signature_mismatch"},
		{name: "probe", keys: bothKeys(p), n: build(wechatsim.Options{Probe: true}), want: verify.ErrProbe, reason: "probe"},
		{name: "bad base64", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { h.Set("Wechatpay-Signature", "not*base64!"); return b },
			want:   verify.ErrBadBase64, reason: "bad_base64"},
		{name: "body changed", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { return flipByte(b, 5) },
			want:   verify.ErrSignatureMismatch, reason: "signature_mismatch"},
		{name: "nonce changed", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { h.Set("Wechatpay-Nonce", "x"+h.Get("Wechatpay-Nonce")); return b },
			want:   verify.ErrSignatureMismatch, reason: "signature_mismatch"},
		{name: "stale", keys: bothKeys(p), n: build(wechatsim.Options{Timestamp: now.Add(-301 * time.Second)}),
			want: verify.ErrStaleTimestamp, reason: "stale_timestamp"},
		{name: "from the future", keys: bothKeys(p), n: build(wechatsim.Options{Timestamp: now.Add(301 * time.Second)}),
			want: verify.ErrStaleTimestamp, reason: "stale_timestamp"},
		{name: "timestamp not a number", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { h.Set("Wechatpay-Timestamp", "2021-06-24"); return b },
			want:   verify.ErrBadTimestamp, reason: "bad_timestamp"},
		{name: "SM2 signature type", keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte {
				h.Set("Wechatpay-Signature-Type", "WECHATPAY2-SM2-WITH-SM3")
				return b
			},
			want: verify.ErrUnsupportedSignatureType, reason: "unsupported_signature_type"},
	}
	for _, name := range []string{"Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"} {
		cases = append(cases, struct {
			name   string
			keys   verify.KeySet
			n      wechatsim.Notification
			mutate func(h http.Header, body []byte) []byte
			want   error
			reason string
		}{name: "missing " + name, keys: bothKeys(p), n: build(wechatsim.Options{}),
			mutate: func(h http.Header, b []byte) []byte { h.Del(name); return b },
			want:   verify.ErrMissingHeader, reason: "missing_header"})
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ver, err := verify.New(c.keys, verify.WithClock(func() time.Time { return now }))
			if err != nil {
				t.Fatal(err)
			}
			h := c.n.Header.Clone()
			body := c.n.Body
			if c.mutate != nil {
				body = c.mutate(h, body)
			}
			err = ver.Verify(context.Background(), verify.HeadersFrom(h), body)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			if got := verify.Reason(err); got != c.reason {
				t.Fatalf("Reason = %q, want %q", got, c.reason)
			}
			// Errors name the check, never echo the body or the signature.
			if strings.Contains(err.Error(), string(body)) ||
				(h.Get("Wechatpay-Signature") != "" && strings.Contains(err.Error(), h.Get("Wechatpay-Signature"))) {
				t.Fatalf("error text echoes the request: %v", err)
			}
		})
	}
}

func TestUnknownSerialNamesConfiguredKeys(t *testing.T) {
	p, _ := testPlatforms(t)
	ver, err := verify.New(bothKeys(p))
	if err != nil {
		t.Fatal(err)
	}
	n, err := p.Build("REFUND.SUCCESS", []byte(`{}`), wechatsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := n.Header.Clone()
	h.Set("Wechatpay-Serial", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
	err = ver.Verify(context.Background(), verify.HeadersFrom(h), n.Body)
	for _, want := range []string{"5157F09EFDC096DE15EBE81A47057A7232F1B8E1", p.PublicKeyID, p.CertSerial} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestNewRefusesEmptyKeySet(t *testing.T) {
	if _, err := verify.New(verify.KeySet{}); !errors.Is(err, verify.ErrNoKeys) {
		t.Fatalf("New(empty) = %v, want ErrNoKeys", err)
	}
	p, _ := testPlatforms(t)
	ks := bothKeys(p)
	ks.PublicKeyID = ""
	ks.Certificates = nil
	if _, err := verify.New(ks); !errors.Is(err, verify.ErrNoKeys) {
		t.Fatalf("New(public key without id) = %v, want ErrNoKeys", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	p, err := wechatsim.NewPlatform("1900000100")
	if err != nil {
		b.Fatal(err)
	}
	ver, err := verify.New(bothKeys(p))
	if err != nil {
		b.Fatal(err)
	}
	n, err := p.Build("TRANSACTION.SUCCESS", make([]byte, 900), wechatsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	h := verify.HeadersFrom(n.Header)
	b.ReportAllocs()
	for b.Loop() {
		if err := ver.Verify(context.Background(), h, n.Body); err != nil {
			b.Fatal(err)
		}
	}
}

// mutableCerts is a CertificateGetter whose certificates a refresh can add to.
type mutableCerts struct {
	mu sync.Mutex
	m  map[string]*x509.Certificate
}

func (c *mutableCerts) Get(_ context.Context, serial string) (*x509.Certificate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	x, ok := c.m[serial]
	return x, ok
}

func (c *mutableCerts) GetAll(context.Context) map[string]*x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]*x509.Certificate{}
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func (c *mutableCerts) GetNewestSerial(context.Context) string { return "" }

func (c *mutableCerts) add(serial string, x *x509.Certificate) {
	c.mu.Lock()
	c.m[serial] = x
	c.mu.Unlock()
}

// fakeRefresher counts calls and does what the test says.
type fakeRefresher struct {
	calls atomic.Int32
	do    func(ctx context.Context) error
}

func (f *fakeRefresher) Refresh(ctx context.Context) error {
	f.calls.Add(1)
	return f.do(ctx)
}

// An unknown certificate serial on a well-formed notification asks the Refresher once and looks again;
// nothing that is malformed, stale, a probe or a public key id does.
func TestUnknownSerialRefreshesOnce(t *testing.T) {
	p, _ := testPlatforms(t)
	now := time.Unix(1_800_000_000, 0)
	pc := *p
	pc.Now = func() time.Time { return now }
	cert, serial, err := verify.LoadCertificatePEM(pc.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	build := func(o wechatsim.Options) wechatsim.Notification {
		o.Key = wechatsim.SignWithCertificate
		n, err := pc.Build("TRANSACTION.SUCCESS", []byte(`{}`), o)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	errRateLimited := errors.New("rate-limited for test")
	cases := []struct {
		name      string
		n         wechatsim.Notification
		mutate    func(h http.Header)
		refresh   func(certs *mutableCerts) func(context.Context) error
		known     bool
		want      error
		wantCalls int32
		wantText  string
	}{
		{name: "known serial", n: build(wechatsim.Options{}), known: true},
		{name: "refresh brings the certificate", n: build(wechatsim.Options{}),
			refresh: func(c *mutableCerts) func(context.Context) error {
				return func(context.Context) error { c.add(serial, cert); return nil }
			}, wantCalls: 1},
		{name: "refresh brings nothing new", n: build(wechatsim.Options{}),
			want: verify.ErrUnknownSerial, wantCalls: 1, wantText: "certificates refreshed, still unknown"},
		{name: "refresh refused", n: build(wechatsim.Options{}),
			refresh: func(*mutableCerts) func(context.Context) error {
				return func(context.Context) error { return errRateLimited }
			}, want: verify.ErrUnknownSerial, wantCalls: 1, wantText: "rate-limited for test"},
		{name: "refresh takes too long", n: build(wechatsim.Options{}),
			refresh: func(*mutableCerts) func(context.Context) error {
				return func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
			}, want: verify.ErrUnknownSerial, wantCalls: 1, wantText: "deadline exceeded"},
		{name: "probe", n: build(wechatsim.Options{Probe: true}), want: verify.ErrProbe},
		{name: "stale", n: build(wechatsim.Options{Timestamp: now.Add(-10 * time.Minute)}), want: verify.ErrStaleTimestamp},
		{name: "missing nonce", n: build(wechatsim.Options{}), mutate: func(h http.Header) { h.Del("Wechatpay-Nonce") },
			want: verify.ErrMissingHeader},
		{name: "public key id", n: build(wechatsim.Options{}), mutate: func(h http.Header) { h.Set("Wechatpay-Serial", "PUB_KEY_ID_0123") },
			want: verify.ErrUnknownSerial},
		{name: "serial not hex", n: build(wechatsim.Options{}), mutate: func(h http.Header) { h.Set("Wechatpay-Serial", "../../etc") },
			want: verify.ErrUnknownSerial},
		{name: "signature not base64", n: build(wechatsim.Options{}), mutate: func(h http.Header) { h.Set("Wechatpay-Signature", "not*base64") },
			want: verify.ErrUnknownSerial},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			certs := &mutableCerts{m: map[string]*x509.Certificate{}}
			if c.known {
				certs.add(serial, cert)
			}
			r := &fakeRefresher{do: func(context.Context) error { return nil }}
			if c.refresh != nil {
				r.do = c.refresh(certs)
			}
			v, err := verify.New(verify.KeySet{Certificates: certs, Refresher: r},
				verify.WithClock(func() time.Time { return now }), verify.WithRefreshWait(50*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			h := c.n.Header.Clone()
			if c.mutate != nil {
				c.mutate(h)
			}
			began := time.Now()
			err = v.Verify(context.Background(), verify.HeadersFrom(h), c.n.Body)
			if took := time.Since(began); took > 2*time.Second {
				t.Fatalf("Verify took %s", took)
			}
			if (c.want == nil && err != nil) || !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			if got := r.calls.Load(); got != c.wantCalls {
				t.Fatalf("Refresh called %d times, want %d", got, c.wantCalls)
			}
			if c.wantText != "" && !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("error %q does not say %q", err, c.wantText)
			}
		})
	}
}
