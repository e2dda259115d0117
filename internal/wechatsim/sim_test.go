package wechatsim_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/option"
	"github.com/wechatpay-apiv3/wechatpay-go/utils"

	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/verify"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

var (
	platformOnce sync.Once
	platform     *wechatsim.Platform
)

func sharedPlatform(t *testing.T) *wechatsim.Platform {
	t.Helper()
	platformOnce.Do(func() {
		p, err := wechatsim.NewPlatform("1900000100")
		if err != nil {
			t.Fatal(err)
		}
		platform = p
	})
	return platform
}

func TestFreshMakesANewFactOfEverySample(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for name, plain := range samples.All() {
		t.Run(name, func(t *testing.T) {
			et := samples.EventType(name)
			n := events.Notification{ID: "n1", EventType: et, CreateTime: "2026-03-01T20:00:00+08:00", MchID: "1900000100"}
			origs, err := events.Build(n, plain)
			if err != nil {
				t.Fatal(err)
			}
			a, b := wechatsim.Fresh(plain, "1900000100", now), wechatsim.Fresh(plain, "1900000100", now)
			eas, err := events.Build(n, a)
			if err != nil {
				t.Fatalf("fresh plaintext does not map: %v\n%s", err, a)
			}
			ebs, err := events.Build(n, b)
			if err != nil {
				t.Fatal(err)
			}
			orig, ea, eb := origs[0], eas[0], ebs[0]
			if ea.DedupeKey == orig.DedupeKey || ea.DedupeKey == eb.DedupeKey {
				t.Fatalf("dedupe keys not fresh: %s / %s / %s", orig.DedupeKey, ea.DedupeKey, eb.DedupeKey)
			}
			if len(ea.Subject) != len(orig.Subject) || ea.Subject[:2] != orig.Subject[:2] {
				t.Errorf("subject %q is not shaped like %q", ea.Subject, orig.Subject)
			}
			if ea.Type != orig.Type {
				t.Errorf("type %s, want %s", ea.Type, orig.Type)
			}
			// Business times become now, whatever the sample said.
			if et != "REFUND.ABNORMAL" && et != "REFUND.CLOSED" && !ea.Time.Equal(now) { // these two have no business time
				t.Errorf("time %s, want %s", ea.Time, now)
			}
			// The layout is kept: same number of lines.
			if bytes.Count(a, []byte("\n")) != bytes.Count(plain, []byte("\n")) {
				t.Error("layout changed")
			}
		})
	}
}

func TestFreshKeepsRepeatedValuesEqual(t *testing.T) {
	plain := []byte(`{"transaction_id": "4200000000201708263212345678", "out_trade_no": "4200000000201708263212345678", "mchid": "1"}`)
	var m map[string]string
	if err := json.Unmarshal(wechatsim.Fresh(plain, "1900000100", time.Now()), &m); err != nil {
		t.Fatal(err)
	}
	if m["transaction_id"] != m["out_trade_no"] || m["transaction_id"] == "4200000000201708263212345678" || m["mchid"] != "1900000100" {
		t.Fatalf("%v", m)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	p := sharedPlatform(t)
	dir := filepath.Join(t.TempDir(), "dev")
	files, err := p.Save(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wechatsim.LoadPlatform(dir, "1900000999"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load of an absent merchant: %v", err)
	}
	q, qfiles, err := wechatsim.LoadPlatform(dir, p.MchID)
	if err != nil {
		t.Fatal(err)
	}
	if qfiles != files || q.PublicKeyID != p.PublicKeyID || q.CertSerial != p.CertSerial || !bytes.Equal(q.APIv3Key, p.APIv3Key) {
		t.Fatalf("loaded platform differs: %+v", q)
	}
	// What the loaded platform sends, the saved configuration verifies and decrypts.
	n, err := q.Build("REFUND.SUCCESS", samples.All()["REFUND.SUCCESS"], wechatsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(files.PublicKeyFile)
	pub, err := verify.LoadPublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.KeySet{PublicKeyID: p.PublicKeyID, PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(context.Background(), verify.HeadersFrom(n.Header), n.Body); err != nil {
		t.Fatalf("verify: %v", err)
	}
	key, _ := os.ReadFile(files.APIv3KeyFile)
	c, err := decrypt.New(key)
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.Parse(n.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := env.Resource
	if _, err := c.Open(r.Algorithm, r.Nonce, r.AssociatedData, r.Ciphertext); err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	envText, _ := os.ReadFile(wechatsim.EnvFile(dir, p.MchID))
	if !strings.Contains(string(envText), "WECHATPAY_PUBLIC_KEY_ID="+p.PublicKeyID) || strings.Contains(string(envText), string(p.APIv3Key)) {
		t.Fatalf("env file:\n%s", envText)
	}
}

func TestDeliverFollowsTheRetryScheduleUntil2xx(t *testing.T) {
	p := sharedPlatform(t)
	var calls atomic.Int32
	var mu sync.Mutex
	var stamps, nonces []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		stamps = append(stamps, r.Header.Get("Wechatpay-Timestamp"))
		nonces = append(nonces, r.Header.Get("Wechatpay-Nonce"))
		mu.Unlock()
		if calls.Add(1) < 4 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	n, _ := p.Build("REFUND.SUCCESS", samples.All()["REFUND.SUCCESS"], wechatsim.Options{})
	const scale = 1000 // 15 s → 15 ms
	start := time.Now()
	attempts := p.Deliver(context.Background(), srv.URL, n, wechatsim.DeliverOptions{Retry: true, TimeScale: scale})
	elapsed := time.Since(start)
	if len(attempts) != 4 || !attempts[3].OK() || attempts[0].OK() {
		t.Fatalf("attempts: %+v", attempts)
	}
	want := (15*time.Second + 15*time.Second + 30*time.Second) / scale
	if elapsed < want {
		t.Fatalf("4 attempts in %s, the schedule needs at least %s", elapsed, want)
	}
	for i, a := range attempts[1:] {
		if a.Waited != wechatsim.RetrySchedule[i]/scale {
			t.Errorf("attempt %d waited %s", a.N, a.Waited)
		}
	}
	if nonces[0] == nonces[1] {
		t.Error("a retry reused the signature nonce; WeChat signs each attempt anew")
	}

	// Without Retry: one attempt, whatever the answer.
	calls.Store(0)
	if a := p.Deliver(context.Background(), srv.URL, n, wechatsim.DeliverOptions{}); len(a) != 1 || a[0].Status != 503 {
		t.Fatalf("no-retry attempts: %+v", a)
	}
}

func TestLoadIsOpenLoop(t *testing.T) {
	p := sharedPlatform(t)
	plain := samples.All()["REFUND.SUCCESS"]
	// Signing costs milliseconds; these receivers do not verify, so a few notifications go round and
	// the measurement is of the schedule, not of the signer.
	var pool []wechatsim.Notification
	for range 8 {
		n, err := p.Build("REFUND.SUCCESS", wechatsim.Fresh(plain, p.MchID, time.Now()), wechatsim.Options{})
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, n)
	}
	var i atomic.Int64
	next := func() (wechatsim.Notification, error) { return pool[i.Add(1)%int64(len(pool))], nil }

	t.Run("fast receiver", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
		defer srv.Close()
		res, err := wechatsim.Load(context.Background(), wechatsim.LoadOptions{URL: srv.URL, Rate: 200, Concurrency: 4, Duration: time.Second, Next: next})
		if err != nil {
			t.Fatal(err)
		}
		if res.Scheduled != 200 || res.Sent != 200 || res.ByStatus[204] != 200 || res.Late != 0 || res.Errors != 0 {
			t.Fatalf("%+v", res)
		}
		l := res.Latency
		if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
			t.Fatalf("percentiles out of order: %+v", l)
		}
		if res.Elapsed < 990*time.Millisecond || res.Elapsed > 3*time.Second {
			t.Fatalf("elapsed %s for a 1 s schedule", res.Elapsed)
		}
	})

	t.Run("a stall shows in the tail latency", func(t *testing.T) {
		// One request stalls for 500 ms with one connection. A closed loop would record one slow request
		// and then carry on at the receiver's pace; open loop, the requests due during the stall wait too,
		// and their latency says so.
		var first atomic.Bool
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if first.CompareAndSwap(false, true) {
				time.Sleep(500 * time.Millisecond)
			}
			w.WriteHeader(http.StatusNoContent)
		}))
		defer srv.Close()
		res, err := wechatsim.Load(context.Background(), wechatsim.LoadOptions{URL: srv.URL, Rate: 100, Concurrency: 1, Duration: time.Second, Next: next})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 100 {
			t.Fatalf("%+v", res)
		}
		// About 50 requests were due during the stall: the p50 is still fast but the p90 is not.
		if res.Latency.P90 < 100*time.Millisecond || res.Latency.Max < 500*time.Millisecond {
			t.Fatalf("the stall is hidden: %+v", res.Latency)
		}
	})

	t.Run("bounded by duration and timeout", func(t *testing.T) {
		block := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}))
		defer srv.Close()
		defer close(block)
		start := time.Now()
		res, err := wechatsim.Load(context.Background(), wechatsim.LoadOptions{URL: srv.URL, Rate: 50, Concurrency: 2, Duration: 500 * time.Millisecond, Timeout: 300 * time.Millisecond, Next: next})
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("took %s", took)
		}
		if res.Errors == 0 || res.Late == 0 || res.Sent+res.Late != res.Scheduled {
			t.Fatalf("%+v", res)
		}
	})
}

// The simulated certificate API answers wechatpay-go's own client as WeChat Pay would: the SDK signs the
// request, checks the answer's signature with the platform certificates and decrypts each certificate with
// the APIv3 key; a rotation serves both certificates and signs with the new one until the old is retired.
func TestCertificateAPIWithTheSDK(t *testing.T) {
	p, err := wechatsim.NewPlatform("1900000700")
	if err != nil {
		t.Fatal(err)
	}
	api, err := wechatsim.NewCertificateAPI(p)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	m, err := p.Merchant()
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := p.RotateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	client, err := core.NewClient(context.Background(), option.WithMerchantCredential(p.MchID, m.CertSerial, m.Key),
		option.WithWechatPayCertificate([]*x509.Certificate{p.Cert, rotated.Cert}))
	if err != nil {
		t.Fatal(err)
	}
	list := func(path string) map[string]string {
		t.Helper()
		res, err := client.Get(context.Background(), srv.URL+path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer res.Response.Body.Close()
		if res.Response.Header.Get("Wechatpay-Serial") != rotated.Serial {
			t.Fatalf("answer signed under %s, want the newest %s", res.Response.Header.Get("Wechatpay-Serial"), rotated.Serial)
		}
		var body struct {
			Data []struct {
				SerialNo           string `json:"serial_no"`
				EffectiveTime      string `json:"effective_time"`
				ExpireTime         string `json:"expire_time"`
				EncryptCertificate struct {
					Algorithm      string `json:"algorithm"`
					Nonce          string `json:"nonce"`
					AssociatedData string `json:"associated_data"`
					Ciphertext     string `json:"ciphertext"`
				} `json:"encrypt_certificate"`
			} `json:"data"`
		}
		if err := json.NewDecoder(res.Response.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, d := range body.Data {
			ec := d.EncryptCertificate
			if ec.Algorithm != "AEAD_AES_256_GCM" || ec.AssociatedData != "certificate" || len(ec.Nonce) != 12 ||
				d.EffectiveTime == "" || d.ExpireTime == "" {
				t.Fatalf("entry %+v is not shaped like WeChat Pay's", d)
			}
			plain, err := utils.DecryptAES256GCM(string(p.APIv3Key), ec.AssociatedData, ec.Nonce, ec.Ciphertext)
			if err != nil {
				t.Fatal(err)
			}
			out[d.SerialNo] = plain
		}
		return out
	}
	for _, path := range []string{wechatsim.CertificatesPath, wechatsim.GlobalCertificatesPath} {
		got := list(path)
		if len(got) != 2 || got[p.CertSerial] != string(p.CertPEM) || got[rotated.Serial] != string(rotated.PEM) {
			t.Fatalf("GET %s listed %d certificates", path, len(got))
		}
	}
	if err := p.RetireCertificate(p.CertSerial); err != nil {
		t.Fatal(err)
	}
	if got := list(wechatsim.CertificatesPath); len(got) != 1 || got[rotated.Serial] == "" {
		t.Fatalf("after retiring the old certificate: %d listed", len(got))
	}

	// Another key under the merchant's serial: 401 with WeChat's error body.
	bad, err := core.NewClient(context.Background(), option.WithMerchantCredential(p.MchID, m.CertSerial, p.Key), option.WithoutValidator())
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.Get(context.Background(), srv.URL+wechatsim.CertificatesPath)
	var apiErr *core.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized || apiErr.Code != "SIGN_ERROR" || apiErr.Message == "" {
		t.Fatalf("wrong key: %v", err)
	}
	reqs := api.Requests()
	if len(reqs) != 4 || reqs[1].Path != wechatsim.GlobalCertificatesPath || reqs[3].Status != http.StatusUnauthorized {
		t.Fatalf("requests = %+v", reqs)
	}
}
