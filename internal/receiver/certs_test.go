package receiver_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/certs"
	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// testClock only moves when told to; the receiver's verifier and certificate refresh read it.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// downloadEnv configures p's merchant to download its platform certificates from api (no static
// certificate, no public key), as a cross-border merchant.
func downloadEnv(t *testing.T, p *wechatsim.Platform, apiURL string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	files, err := p.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, err := p.WriteMerchantKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.Merchant()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"WECHATPAY_MCHID":            p.MchID,
		"WECHATPAY_PRIVATE_KEY_FILE": keyFile,
		"WECHATPAY_CERT_SERIAL":      m.CertSerial,
		"WECHATPAY_APIV3_KEY_FILE":   files.APIv3KeyFile,
		"WECHATPAY_REGION":           "global",
		"WECHATPAY_API_BASE_URL":     apiURL,
	}
}

// WeChat Pay rotates a cross-border merchant's platform certificate and signs the next notification with
// the new one before the receiver's daily refresh: the receiver downloads once on demand (from the global
// API) and stores the notification (204). Another unknown serial in the same minute sends nothing to
// WeChat Pay, and the old certificate keeps verifying during the overlap.
func TestRotatedCertificateStoredAfterOnDemandRefresh(t *testing.T) {
	p, err := wechatsim.NewPlatform("1900000300")
	if err != nil {
		t.Fatal(err)
	}
	api, err := wechatsim.NewCertificateAPI(p)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	clk := &testClock{now: time.Now()}
	h := startWith(t, p, downloadEnv(t, p, srv.URL), receiver.Deps{Clock: clk.Now})

	old := p.CertSerial
	n := h.build("TRANSACTION.SUCCESS", wechatsim.Options{Key: wechatsim.SignWithCertificate})
	if code, body := h.post("/notify/"+p.MchID, n.Body, n.Header); code != http.StatusNoContent {
		t.Fatalf("before the rotation: %d %s", code, body)
	}
	fresh, err := p.RotateCertificate()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(61 * time.Second) // a minute after the start's download

	n = h.build("TRANSACTION.SUCCESS", wechatsim.Options{Key: wechatsim.SignWithCertificate})
	if n.Header.Get("Wechatpay-Serial") != fresh.Serial {
		t.Fatalf("signed under %s, want the new %s", n.Header.Get("Wechatpay-Serial"), fresh.Serial)
	}
	if code, body := h.post("/notify/"+p.MchID, n.Body, n.Header); code != http.StatusNoContent {
		t.Fatalf("rotated certificate: %d %s, want 204 after the refresh", code, body)
	}
	reqs := api.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests to the certificate API, want 2 (start + one refresh): %+v", len(reqs), reqs)
	}
	for _, r := range reqs {
		if r.Path != wechatsim.GlobalCertificatesPath || r.Status != http.StatusOK {
			t.Fatalf("a cross-border merchant's request: %+v", r)
		}
	}

	// Within the minute, an unknown serial is a plain 401 that costs WeChat Pay nothing.
	bogus := h.build("TRANSACTION.SUCCESS", wechatsim.Options{Key: wechatsim.SignWithCertificate})
	bogus.Header.Set("Wechatpay-Serial", "5157F09EFDC096DE15EBE81A47057A7232F1B8E1")
	if code, body := h.post("/notify/"+p.MchID, bogus.Body, bogus.Header); code != http.StatusUnauthorized {
		t.Fatalf("unknown serial: %d %s", code, body)
	}
	if got := len(api.Requests()); got != 2 {
		t.Fatalf("%d requests after a second unknown serial within the minute, want 2", got)
	}

	// During the overlap WeChat Pay may still sign with the old certificate.
	n = h.build("REFUND.SUCCESS", wechatsim.Options{Key: wechatsim.SignWithCertificate, CertSerial: old})
	if code, body := h.post("/notify/"+p.MchID, n.Body, n.Header); code != http.StatusNoContent {
		t.Fatalf("old certificate during the overlap: %d %s", code, body)
	}
	if got := h.inboundCount(); got != 3 {
		t.Fatalf("inbound holds %d messages, want 3", got)
	}
	m := h.metrics()
	for _, want := range []string{
		`wxpay_platform_cert_downloads_total{mchid="1900000300",outcome="ok",trigger="start"} 1`,
		`wxpay_platform_cert_downloads_total{mchid="1900000300",outcome="ok",trigger="on_demand"} 1`,
		`wxpay_platform_cert_refresh_rate_limited_total{mchid="1900000300"} 1`,
		`wxpay_platform_certs{mchid="1900000300"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A merchant whose first download fails does not start the receiver; the error names the account and
// WeChat Pay's answer.
func TestFirstDownloadFailureStopsTheStart(t *testing.T) {
	p := testPlatform(t)
	other, err := wechatsim.NewPlatform("1900000900")
	if err != nil {
		t.Fatal(err)
	}
	api, err := wechatsim.NewCertificateAPI(other) // does not know p's merchant
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	env := downloadEnv(t, p, srv.URL)
	cfg, err := config.LoadReceiver(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, err = receiver.BuildVerifiers(context.Background(), cfg.Accounts, receiver.CertOptions{Log: zerolog.Nop()})
	if !errors.Is(err, certs.ErrAPI) {
		t.Fatalf("BuildVerifiers = %v, want certs.ErrAPI", err)
	}
	for _, want := range []string{"WECHATPAY_MCHID", p.MchID, "HTTP 401", "SIGN_ERROR", srv.URL + wechatsim.GlobalCertificatesPath} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
