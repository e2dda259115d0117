package console_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// chromium finds Debian's chromium. CI (CI=true) must have it — scripts/test.sh installs it — so there a
// missing browser fails the test; elsewhere the test skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; scripts/test.sh installs it (apt-get install chromium chromium-driver)")
	}
	t.Skip("chromium is not installed (apt-get install chromium); CI runs this test")
	return ""
}

// browser is a headless Chromium tab that fails the test on any script error or refused resource (a
// Content-Security-Policy violation is logged as an error).
type browser struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromium(t)),
		chromedp.WindowSize(1360, 860),
		chromedp.Flag("disable-dev-shm-usage", true), // containers have a small /dev/shm
		chromedp.Flag("force-device-scale-factor", "1"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b := &browser{ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) { // starts the browser
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error()
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError {
				msg = string(e.Entry.Source) + ": " + e.Entry.Text + " " + e.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// do runs actions within a deadline, failing the test with what was being done.
func (b *browser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %s: %v\n%s", what, err, b.state())
	}
}

// state describes the page for a failure message: its text and the errors it reported.
func (b *browser) state() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		text = "(the page cannot be read: " + err.Error() + ")"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return "the page:\n" + text + "\nits errors:\n" + strings.Join(b.errors, "\n")
}

// text reads the text of the element sel selects.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("browser: text of %s: %v", sel, err)
	}
	return v
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("browser: %s: %v", expr, err)
	}
	return v
}

// until waits for a JavaScript condition to hold.
func until(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(15*time.Second))
}

func (b *browser) checkErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.errors {
		// A stream cut at the end of the test is not the page's fault.
		if !strings.Contains(e, "api/events/stream") {
			t.Errorf("the page reported an error: %s", e)
		}
	}
}

// screenshot saves the viewport as dir/name.png when CONSOLE_SCREENSHOTS names a directory (the
// README's pictures: CONSOLE_SCREENSHOTS=$PWD/docs go test -run TestBrowser ./internal/console).
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("CONSOLE_SCREENSHOTS")
	if dir == "" {
		return
	}
	b.do(t, "let animations end", until(`document.getAnimations().length === 0`))
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser is the on-call engineer's round trip in a real browser: open the console, watch events
// arrive live, open a dead letter, replay it, and see its event arrive.
func TestBrowser(t *testing.T) {
	started := time.Now()
	b := newBrowser(t) // first: a missing browser skips before anything starts
	w := startWorld(t)
	css := func(format string, a ...any) chromedp.CSS { return chromedp.CSS(fmt.Sprintf(format, a...)) }

	b.do(t, "open the console from dev's link", chromedp.Navigate(w.url+"/#token="+testToken),
		chromedp.WaitVisible(css(`#stream-status[data-state="live"]`)), chromedp.WaitVisible(css(`#auth-state.ok`)))
	if address := eval[string](t, b, `location.href`); strings.Contains(address, testToken) {
		t.Errorf("the token stays in the address bar: %s", address)
	}

	// A simulated WeChat Pay sends one notification of every sample (17 events: the combined payment has two
	// sub-orders); the payment is the one to look at.
	all := samples.All()
	var txid string
	for _, name := range slices.Sorted(maps.Keys(all)) {
		plain := wechatsim.Fresh(all[name], pipelinetest.MchID, time.Now())
		if name == "TRANSACTION.SUCCESS" {
			txid = field(t, plain, "transaction_id")
		}
		w.post(t, samples.EventType(name), plain)
	}
	payment := css(`#events-body tr[data-subject="%s"]`, txid)
	b.do(t, "see the payment arrive live and open it",
		chromedp.WaitVisible(payment), chromedp.Click(payment), chromedp.WaitVisible(css(`#event-detail`)))
	if j := b.text(t, `#event-json`); !strings.Contains(j, `"type": "com.wechatpay.payment.succeeded"`) || !strings.Contains(j, txid) {
		t.Fatalf("the CloudEvent shown:\n%s", j)
	}
	b.do(t, "wait for every demo event", until(`document.querySelectorAll('#events-body tr').length >= 17`))
	b.screenshot(t, "console-live")

	refundRow := css(`#dlq-body tr[data-seq="%d"]`, w.refundSeq)
	// The list is redrawn when a listing arrives (the count's and the page's both may), so the row is
	// clicked in the page, in one step with finding it, rather than by a node id found a moment earlier.
	b.do(t, "open the dead letter",
		chromedp.Click(css(`#nav-dlq`)), chromedp.WaitVisible(refundRow),
		until(fmt.Sprintf(`(() => { const r = document.querySelector('#dlq-body tr[data-seq="%d"]'); if (r) r.click(); return !!r; })()`, w.refundSeq)),
		chromedp.WaitVisible(css(`#dlq-detail`)), chromedp.WaitVisible(css(`#dlq-headers dt`)))
	detail, body := b.text(t, `#dlq-detail`), b.text(t, `#dlq-body-raw`)
	if !strings.Contains(detail, "decrypt_failed") || !strings.Contains(detail, "Wechatpay-Signature") || !strings.Contains(body, `"ciphertext"`) {
		t.Fatalf("the dead letter's detail:\n%s", detail)
	}
	if strings.Contains(detail, w.refundID) {
		t.Fatalf("the page shows the dead letter's plaintext (%s)", w.refundID)
	}
	b.screenshot(t, "console-dead-letters")

	b.do(t, "replay it",
		chromedp.Click(css(`#dlq-replay`)), chromedp.WaitVisible(css(`#modal-ok`)), chromedp.Click(css(`#modal-ok`)),
		until(`document.getElementById('dlq-message').textContent.startsWith('Replayed')`), chromedp.WaitNotPresent(refundRow))
	if result := b.text(t, `#dlq-message`); !strings.HasPrefix(result, "Replayed 1 of 1") {
		t.Fatalf("after the replay the page says %q", result)
	}
	if n := eval[int](t, b, `document.querySelectorAll('#dlq-body tr').length`); n != 1 {
		t.Errorf("%d dead letters listed after the replay, want the unsupported one only", n)
	}

	b.do(t, "see the replayed refund arrive live",
		chromedp.Click(css(`#nav-live`)), chromedp.WaitVisible(css(`#events-body tr[data-subject="%s"]`, w.refundID)))

	b.do(t, "look at health",
		chromedp.Click(css(`#nav-health`)), chromedp.WaitVisible(css(`#health-programs [data-program="consumer"] table`)),
		chromedp.WaitVisible(css(`#health-streams [data-stream="WECHATPAY_EVENTS"]`)))
	if os.Getenv("CONSOLE_SCREENSHOTS") != "" {
		// Rates need traffic between two scrapes: some payments and a forged signature now, and the
		// page's next refresh, five seconds on, shows their rates.
		for range 12 {
			w.post(t, "TRANSACTION.SUCCESS", wechatsim.Fresh(all["TRANSACTION.SUCCESS"], pipelinetest.MchID, time.Now()))
		}
		forged := w.Build("TRANSACTION.SUCCESS", all["TRANSACTION.SUCCESS"], wechatsim.Options{})
		forged.Header.Set("Wechatpay-Signature", "Zm9yZ2Vk")
		if code := w.Post(forged); code != http.StatusUnauthorized {
			t.Fatalf("a forged signature got %d", code)
		}
		b.do(t, "wait for rates", until(`[...document.querySelectorAll('#health-programs td.num')].some(td => /^[1-9].*\/s$/.test(td.textContent))`))
	}
	if streams := b.text(t, `#health-streams`); !strings.Contains(streams, "WECHATPAY_INBOUND") || !strings.Contains(streams, "WECHATPAY_DLQ") {
		t.Fatalf("health shows:\n%s", streams)
	}
	b.screenshot(t, "console-health")
	b.checkErrors(t)
	t.Logf("the round trip took %s", time.Since(started).Round(time.Millisecond))
}
