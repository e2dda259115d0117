package certs_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/wechatpay-apiv3/wechatpay-go/core"

	"github.com/wxpay-events/wxpay-events/internal/certs"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
	"github.com/wxpay-events/wxpay-events/internal/verify"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// The downloader is what verify.KeySet needs on both sides.
var (
	_ core.CertificateGetter = (*certs.Downloader)(nil)
	_ verify.Refresher       = (*certs.Downloader)(nil)
)

var (
	sharedOnce sync.Once
	shared     *wechatsim.Platform
)

// sharedPlatform is one simulated merchant for the tests that do not rotate (RSA key generation is slow).
func sharedPlatform(t *testing.T) *wechatsim.Platform {
	t.Helper()
	sharedOnce.Do(func() {
		p, err := wechatsim.NewPlatform("1900000100")
		if err != nil {
			panic(err)
		}
		if _, err := p.Merchant(); err != nil {
			panic(err)
		}
		shared = p
	})
	return shared
}

// newPlatform is a merchant of the test's own, for tests that rotate its certificates.
func newPlatform(t *testing.T, mchid string) *wechatsim.Platform {
	t.Helper()
	p, err := wechatsim.NewPlatform(mchid)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// simAPI serves the simulated certificate API over real HTTP. Requests are reported on arrived when they
// come in and on served once answered, so that a test waits for them instead of sleeping.
type simAPI struct {
	*wechatsim.CertificateAPI
	srv     *httptest.Server
	arrived chan struct{}
	served  chan struct{}
	mu      sync.Mutex
	gate    chan struct{} // when not nil, requests wait for it to close
}

func serve(t *testing.T, ps ...*wechatsim.Platform) *simAPI {
	t.Helper()
	api, err := wechatsim.NewCertificateAPI(ps...)
	if err != nil {
		t.Fatal(err)
	}
	s := &simAPI{CertificateAPI: api, arrived: make(chan struct{}, 1000), served: make(chan struct{}, 1000)}
	notify := func(ch chan struct{}) {
		select {
		case ch <- struct{}{}:
		default: // nobody is counting this far
		}
	}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		notify(s.arrived)
		s.mu.Lock()
		gate := s.gate
		s.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		api.ServeHTTP(w, r)
		notify(s.served)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// hold makes the following requests wait until the returned function is called.
func (s *simAPI) hold() (release func()) {
	gate := make(chan struct{})
	s.mu.Lock()
	s.gate = gate
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.gate = nil
			s.mu.Unlock()
			close(gate)
		})
	}
}

// awaitRequests waits until n requests have been answered in all.
func (s *simAPI) awaitRequests(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for len(s.Requests()) < n {
		select {
		case <-s.served:
		case <-deadline:
			t.Fatalf("%d requests answered, waited for %d", len(s.Requests()), n)
		}
	}
}

// awaitArrivals waits until n more requests have come in.
func (s *simAPI) awaitArrivals(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for ; n > 0; n-- {
		select {
		case <-s.arrived:
		case <-deadline:
			t.Fatal("no request arrived")
		}
	}
}

// eventually waits for cond, checking it every few milliseconds; for what no event announces.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, what, cond, wait.Options{Interval: 5 * time.Millisecond})
}

// clock is a test clock that only moves when told to.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func options(t *testing.T, p *wechatsim.Platform, s *simAPI, region certs.Region) certs.Options {
	t.Helper()
	m, err := p.Merchant()
	if err != nil {
		t.Fatal(err)
	}
	return certs.Options{
		MchID: p.MchID, PrivateKey: m.Key, CertSerial: m.CertSerial, APIv3Key: p.APIv3Key,
		Region: region, BaseURL: s.srv.URL, Log: zerolog.Nop(),
	}
}

func start(t *testing.T, o certs.Options) *certs.Downloader {
	t.Helper()
	d, err := certs.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(d.Stop)
	return d
}

// A mainland account asks /v3/certificates, a cross-border one /v3/global/certificates, and both get the
// platform's certificate, decrypted and filed under its serial.
func TestDownloadBothRegions(t *testing.T) {
	p := sharedPlatform(t)
	for _, c := range []struct {
		region certs.Region
		path   string
	}{
		{"", "/v3/certificates"},
		{certs.RegionMainland, "/v3/certificates"},
		{certs.RegionGlobal, "/v3/global/certificates"},
	} {
		t.Run(string(c.region)+c.path, func(t *testing.T) {
			s := serve(t, p)
			d := start(t, options(t, p, s, c.region))
			reqs := s.Requests()
			if len(reqs) != 1 || reqs[0].Path != c.path || reqs[0].Status != http.StatusOK || reqs[0].MchID != p.MchID {
				t.Fatalf("requests = %+v, want one GET %s answered 200", reqs, c.path)
			}
			if d.URL() != s.srv.URL+c.path {
				t.Fatalf("URL = %s", d.URL())
			}
			got, ok := d.Get(context.Background(), p.CertSerial)
			if !ok || !got.Equal(p.Cert) {
				t.Fatalf("Get(%s) = %v, %v", p.CertSerial, got, ok)
			}
			if all := d.GetAll(context.Background()); len(all) != 1 {
				t.Fatalf("GetAll holds %d certificates", len(all))
			}
			if s := d.GetNewestSerial(context.Background()); s != p.CertSerial {
				t.Fatalf("GetNewestSerial = %s", s)
			}
			if st := d.Stats(); st.Downloads != 1 || st.Failures != 0 {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

func TestRegionsAndBaseURLs(t *testing.T) {
	for in, want := range map[string]string{
		"":         "https://api.mch.weixin.qq.com/v3/certificates",
		"mainland": "https://api.mch.weixin.qq.com/v3/certificates",
		"Global":   "https://apihk.mch.weixin.qq.com/v3/global/certificates",
	} {
		r, err := certs.ParseRegion(in)
		if err != nil || r.BaseURL()+r.Path() != want {
			t.Errorf("ParseRegion(%q) = %q %v: %s%s, want %s", in, r, err, r.BaseURL(), r.Path(), want)
		}
	}
	if _, err := certs.ParseRegion("hk"); !errors.Is(err, certs.ErrBadRegion) {
		t.Errorf("ParseRegion(hk) = %v", err)
	}
	for _, ok := range []string{"https://apihk.mch.weixin.qq.com", "http://127.0.0.1:8080", "https://proxy.internal:8443/"} {
		if err := certs.CheckBaseURL(ok); err != nil {
			t.Errorf("CheckBaseURL(%s) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "api.mch.weixin.qq.com", "ftp://x", "https://", "https://x/v3", "https://x?y=1", "https://u:p@x"} {
		if err := certs.CheckBaseURL(bad); !errors.Is(err, certs.ErrBadBaseURL) {
			t.Errorf("CheckBaseURL(%q) = %v, want ErrBadBaseURL", bad, err)
		} else if strings.Contains(err.Error(), "u:p") {
			t.Errorf("CheckBaseURL repeats credentials: %v", err)
		}
	}
}

// WeChat Pay refuses a request signed with another key or serial; the error says so with WeChat's code and
// a hint, never the answer's body.
func TestBadMerchantSignature(t *testing.T) {
	p := sharedPlatform(t)
	s := serve(t, p)
	wrongKey := options(t, p, s, certs.RegionMainland)
	wrongKey.PrivateKey = p.Key // the platform's key, not the merchant's
	wrongSerial := options(t, p, s, certs.RegionMainland)
	wrongSerial.CertSerial = "0123456789ABCDEF"
	for name, o := range map[string]certs.Options{"wrong key": wrongKey, "wrong serial": wrongSerial} {
		t.Run(name, func(t *testing.T) {
			_, err := certs.Start(context.Background(), o)
			if !errors.Is(err, certs.ErrAPI) {
				t.Fatalf("Start = %v, want ErrAPI", err)
			}
			for _, want := range []string{"HTTP 401", "SIGN_ERROR", "private_key_file", p.MchID, s.srv.URL + "/v3/certificates"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "message") || strings.Contains(err.Error(), "验签") || strings.Contains(err.Error(), "序列号") {
				t.Errorf("error repeats the answer's body: %v", err)
			}
		})
	}
	for _, r := range s.Requests() {
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("request answered %d, want 401", r.Status)
		}
	}
}

// Another merchant's APIv3 key cannot open the certificates: a decrypt error that names the likely cause
// and carries no key material; a key that is not 32 bytes is refused before any request.
func TestBadAPIv3Key(t *testing.T) {
	p := sharedPlatform(t)
	s := serve(t, p)
	o := options(t, p, s, certs.RegionMainland)
	wrong := []byte("0123456789abcdefghijklmnopqrstuv")
	o.APIv3Key = wrong
	_, err := certs.Start(context.Background(), o)
	if !errors.Is(err, certs.ErrDecrypt) || !strings.Contains(err.Error(), "APIv3 key") {
		t.Fatalf("Start = %v, want ErrDecrypt naming the APIv3 key", err)
	}
	for _, secret := range [][]byte{wrong, p.APIv3Key, p.CertPEM[30:60]} {
		if strings.Contains(err.Error(), string(secret)) {
			t.Fatalf("error carries key or certificate material: %v", err)
		}
	}

	before := len(s.Requests())
	o.APIv3Key = []byte("testMchAPIv3Key0") // 16 bytes: AES-128, not WeChat's AES-256
	_, err = certs.Start(context.Background(), o)
	if !errors.Is(err, certs.ErrInvalidOptions) || !strings.Contains(err.Error(), "16 bytes") || strings.Contains(err.Error(), "testMchAPIv3Key0") {
		t.Fatalf("Start(16-byte key) = %v", err)
	}
	if len(s.Requests()) != before {
		t.Fatal("a request was sent with an invalid key")
	}
}

// A nonce that is not 12 bytes would panic in Go's GCM: it must be an error, not a crash.
func TestWrongNonceLength(t *testing.T) {
	p := sharedPlatform(t)
	for _, nonce := range []string{"0123456789abcdef", "01234567890", ""} {
		t.Run(nonce, func(t *testing.T) {
			s := serve(t, p)
			s.SetFaults(wechatsim.CertificateFaults{Nonce: nonce})
			if nonce == "" {
				s.SetFaults(wechatsim.CertificateFaults{Nonce: " "}) // one byte
			}
			_, err := certs.Start(context.Background(), options(t, p, s, certs.RegionGlobal))
			if !errors.Is(err, certs.ErrMalformedResponse) || !strings.Contains(err.Error(), "nonce") {
				t.Fatalf("Start = %v, want ErrMalformedResponse about the nonce", err)
			}
		})
	}
}

// The answer's signature is checked like a notification's: a wrong signature or a stale timestamp fails
// the download; a signature probe is asked again once.
func TestAnswerSignatureVerified(t *testing.T) {
	p := sharedPlatform(t)

	s := serve(t, p)
	s.SetFaults(wechatsim.CertificateFaults{BadSignature: true})
	_, err := certs.Start(context.Background(), options(t, p, s, certs.RegionMainland))
	if !errors.Is(err, certs.ErrResponseSignature) || !errors.Is(err, verify.ErrSignatureMismatch) {
		t.Fatalf("bad signature: Start = %v", err)
	}

	s = serve(t, p)
	o := options(t, p, s, certs.RegionMainland)
	late := newClock()
	late.Advance(10 * time.Minute)
	o.Clock = late.Now
	_, err = certs.Start(context.Background(), o)
	if !errors.Is(err, certs.ErrResponseSignature) || !errors.Is(err, verify.ErrStaleTimestamp) {
		t.Fatalf("stale answer: Start = %v", err)
	}

	s = serve(t, p)
	s.SetFaults(wechatsim.CertificateFaults{Probes: 1})
	start(t, options(t, p, s, certs.RegionMainland))
	if n := len(s.Requests()); n != 2 {
		t.Fatalf("after a probe: %d requests, want 2", n)
	}
}

// rotation is a merchant whose receiver-side downloader and verifier are running, with a clock the test
// moves.
type rotation struct {
	p     *wechatsim.Platform
	s     *simAPI
	clk   *clock
	d     *certs.Downloader
	v     *verify.Verifier
	old   string
	fresh wechatsim.PlatformCert
	logs  *syncBuffer
}

func startRotation(t *testing.T, mchid string) *rotation {
	t.Helper()
	r := &rotation{p: newPlatform(t, mchid), clk: newClock(), logs: &syncBuffer{}}
	r.s = serve(t, r.p)
	o := options(t, r.p, r.s, certs.RegionMainland)
	o.Clock = r.clk.Now
	o.Log = zerolog.New(r.logs)
	r.d = start(t, o)
	var err error
	r.v, err = verify.New(verify.KeySet{Certificates: r.d, Refresher: r.d}, verify.WithClock(r.clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	r.old = r.p.CertSerial
	if r.fresh, err = r.p.RotateCertificate(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rotation) notification(t *testing.T, serial string) wechatsim.Notification {
	t.Helper()
	n, err := r.p.Build("TRANSACTION.SUCCESS", []byte(`{"transaction_id":"4200000000000000000000000001"}`),
		wechatsim.Options{Key: wechatsim.SignWithCertificate, CertSerial: serial})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (r *rotation) verify(n wechatsim.Notification) error {
	return r.v.Verify(context.Background(), verify.HeadersFrom(n.Header), n.Body)
}

// WeChat Pay starts signing with a new certificate before the periodic refresh: the first notification
// under the new serial triggers exactly one download and verifies; another unknown serial within the
// minute sends nothing; the old certificate keeps verifying during the overlap and after the listing drops
// it.
func TestRotationPickedUpOnDemand(t *testing.T) {
	r := startRotation(t, "1900000300")
	if _, ok := r.d.Get(context.Background(), r.fresh.Serial); ok {
		t.Fatal("the new certificate is known before any refresh")
	}
	r.clk.Advance(61 * time.Second) // past the start's download

	if err := r.verify(r.notification(t, r.fresh.Serial)); err != nil {
		t.Fatalf("notification under the new serial: %v", err)
	}
	if n := len(r.s.Requests()); n != 2 {
		t.Fatalf("%d requests to the certificate API, want 2 (start + one refresh)", n)
	}

	// Within the same minute, another unknown serial costs WeChat Pay nothing.
	n := r.notification(t, r.fresh.Serial)
	n.Header.Set("Wechatpay-Serial", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
	err := r.verify(n)
	if !errors.Is(err, verify.ErrUnknownSerial) || !strings.Contains(err.Error(), "rate-limited") {
		t.Fatalf("second unknown serial: %v, want ErrUnknownSerial after a rate-limited refresh", err)
	}
	if n := len(r.s.Requests()); n != 2 {
		t.Fatalf("%d requests after a second unknown serial within the minute, want still 2", n)
	}
	if st := r.d.Stats(); st.Downloads != 2 || st.RateLimited != 1 {
		t.Fatalf("Stats = %+v", st)
	}

	// Overlap: both certificates are served and both verify, with no further request.
	if err := r.verify(r.notification(t, r.old)); err != nil {
		t.Fatalf("old certificate during the overlap: %v", err)
	}
	if s := r.d.GetNewestSerial(context.Background()); s != r.fresh.Serial {
		t.Fatalf("newest = %s, want %s", s, r.fresh.Serial)
	}

	// WeChat Pay drops the old certificate from the listing; it has not expired, so it is kept, and a
	// notification signed with it just before still verifies.
	late := r.notification(t, r.old)
	if err := r.p.RetireCertificate(r.old); err != nil {
		t.Fatal(err)
	}
	r.clk.Advance(61 * time.Second)
	if err := r.d.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.verify(late); err != nil {
		t.Fatalf("old certificate after the listing dropped it: %v", err)
	}
	if n := len(r.s.Requests()); n != 3 {
		t.Fatalf("%d requests, want 3", n)
	}
	if !strings.Contains(r.logs.String(), `"kept_unlisted":["`+r.old+`"]`) {
		t.Fatalf("the kept certificate is not logged:\n%s", r.logs)
	}
}

// Refreshes at the same time share one download; whatever the timing, only one request is sent.
func TestConcurrentRefreshesSendOneRequest(t *testing.T) {
	r := startRotation(t, "1900000400")
	r.clk.Advance(time.Minute)
	r.s.awaitArrivals(t, 1) // the start's
	release := r.s.hold()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.verify(r.notification(t, r.fresh.Serial))
		}()
	}
	r.s.awaitArrivals(t, 1) // the refresh is in flight; the other callers join it or are rate-limited
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		// A verifier that stopped waiting (refresh wait) before the download ended answers 401; WeChat's
		// retry then finds the certificate. Nothing else may fail.
		if err != nil && !errors.Is(err, verify.ErrUnknownSerial) {
			t.Fatalf("Verify = %v", err)
		}
	}
	if n := len(r.s.Requests()); n != 2 {
		t.Fatalf("%d requests for 20 concurrent unknown serials, want 2 (start + one)", n)
	}
	if _, ok := r.d.Get(context.Background(), r.fresh.Serial); !ok {
		t.Fatal("the new certificate was not installed")
	}
}

// A slow API does not hold a notification beyond its wait; the download finishes in the background and
// serves the next attempt.
func TestRefreshBoundedByTheCaller(t *testing.T) {
	r := startRotation(t, "1900000500")
	r.clk.Advance(time.Minute)
	release := r.s.hold()
	defer release()

	v, err := verify.New(verify.KeySet{Certificates: r.d, Refresher: r.d}, verify.WithClock(r.clk.Now), verify.WithRefreshWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	n := r.notification(t, r.fresh.Serial)
	began := time.Now()
	err = v.Verify(context.Background(), verify.HeadersFrom(n.Header), n.Body)
	if !errors.Is(err, verify.ErrUnknownSerial) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("Verify with a stuck API = %v", err)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("Verify waited %s for the refresh", d)
	}

	// The download was not abandoned with the request: released, it lands for WeChat's retry.
	release()
	eventually(t, "the background download", func() bool { return r.d.Stats().Downloads == 2 })
	if err := v.Verify(context.Background(), verify.HeadersFrom(n.Header), n.Body); err != nil {
		t.Fatalf("WeChat's retry: %v", err)
	}
	if n := len(r.s.Requests()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

// The periodic refresh installs a rotated certificate by itself, and its failures are logged and counted.
func TestPeriodicRefresh(t *testing.T) {
	p := newPlatform(t, "1900000600")
	s := serve(t, p)
	logs := &syncBuffer{}
	o := options(t, p, s, certs.RegionGlobal)
	o.Interval = 20 * time.Millisecond
	o.Log = zerolog.New(logs)
	d := start(t, o)
	fresh, err := p.RotateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	// Downloads run one at a time, each after the previous one's install. Request seen+1 may have been
	// answered from before the rotation; seen+2 came in after it, so it listed the new certificate, and
	// once seen+3 is answered, seen+2 was installed.
	seen := len(s.Requests())
	s.awaitRequests(t, seen+3)
	if _, ok := d.Get(context.Background(), fresh.Serial); !ok {
		t.Fatal("the periodic refresh did not install the new certificate")
	}

	s.SetFaults(wechatsim.CertificateFaults{BadSignature: true})
	seen = len(s.Requests()) // the same reasoning: seen+2 failed, and seen+3 came after its log line
	s.awaitRequests(t, seen+3)
	if st := d.Stats(); st.Failures == 0 {
		t.Fatalf("failed refreshes not counted: %+v", st)
	}
	out := logs.String()
	if !strings.Contains(out, `"trigger":"periodic"`) || !strings.Contains(out, "platform certificate download failed") ||
		!strings.Contains(out, "signature mismatch") {
		t.Fatalf("failed refresh not logged:\n%s", out)
	}
	if strings.Contains(out, string(p.APIv3Key)) || strings.Contains(out, "ciphertext") {
		t.Fatalf("logs carry key material or the answer:\n%s", out)
	}
	// The certificates of the last good download are still there.
	if _, ok := d.Get(context.Background(), fresh.Serial); !ok {
		t.Fatal("a failed refresh lost the certificates")
	}
	for _, r := range s.Requests() {
		if r.Path != "/v3/global/certificates" {
			t.Fatalf("a global account asked %s", r.Path)
		}
	}
}

func TestStopped(t *testing.T) {
	p := sharedPlatform(t)
	s := serve(t, p)
	d, err := certs.Start(context.Background(), options(t, p, s, certs.RegionMainland))
	if err != nil {
		t.Fatal(err)
	}
	d.Stop()
	if err := d.Refresh(context.Background()); !errors.Is(err, certs.ErrStopped) {
		t.Fatalf("Refresh after Stop = %v", err)
	}
	if _, ok := d.Get(context.Background(), p.CertSerial); !ok {
		t.Fatal("certificates gone after Stop")
	}
}
