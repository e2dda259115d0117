package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/ctl"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
)

var (
	consoleLinkRe = regexp.MustCompile(`console\s+(http://127\.0\.0\.1:\d+/)#token=(\S+)`)
	consoleURLRe  = regexp.MustCompile(`console on (http://\S+/)`)
)

// consoleCall sends one request to a console: a JSON body with the token when token is set.
func consoleCall(t *testing.T, method, url, token string, body any) (int, string) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

// checkDevConsole checks dev's console line: a loopback link whose fragment carries a token that
// replay needs and accepts.
func checkDevConsole(t *testing.T, banner string) {
	t.Helper()
	m := consoleLinkRe.FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("no console link in the banner:\n%s", banner)
	}
	base, token := m[1], m[2]
	if code, body := consoleCall(t, http.MethodGet, base+"api/health", "", nil); code != http.StatusOK || !strings.Contains(body, "WECHATPAY_EVENTS") {
		t.Fatalf("dev's console health: %d %s", code, body)
	}
	dry := map[string]any{"dry_run": true}
	if code, _ := consoleCall(t, http.MethodPost, base+"api/dlq/replay", "", dry); code != http.StatusUnauthorized {
		t.Errorf("dev's console replays without its token: %d", code)
	}
	if code, body := consoleCall(t, http.MethodPost, base+"api/dlq/replay", token, dry); code != http.StatusOK {
		t.Errorf("dev's console refuses its own token: %d %s", code, body)
	}
}

// TestConsoleCommand runs wxpayctl console against NATS: it prints where it listens, serves, refuses a
// replay without the token, and stops cleanly on Ctrl-C.
func TestConsoleCommand(t *testing.T) {
	ns := natstest.Start(t)
	mustCode(t, ctlRun(t, ns.URL(), "streams", "apply"), 0, "streams apply")
	tokenFile := filepath.Join(t.TempDir(), "console.token")
	const token = "0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr pipelinetest.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- ctl.Main(ctx, []string{"--nats-url", ns.URL(), "console", "--addr", "127.0.0.1:0", "--token-file", tokenFile},
			ctl.Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr})
	}()
	wait.For(t, "console to print its address", func() bool { return consoleURLRe.MatchString(stdout.String()) },
		wait.Options{Timeout: 20 * time.Second, OnTimeout: func() string { return stdout.String() + stderr.String() }})
	base := consoleURLRe.FindStringSubmatch(stdout.String())[1]
	if code, _ := consoleCall(t, http.MethodGet, base+"api/dlq", "", nil); code != http.StatusOK {
		t.Errorf("GET /api/dlq: %d", code)
	}
	if code, _ := consoleCall(t, http.MethodPost, base+"api/dlq/replay", "", map[string]any{"dry_run": true}); code != http.StatusUnauthorized {
		t.Errorf("replay without the token: %d", code)
	}
	if code, body := consoleCall(t, http.MethodPost, base+"api/dlq/replay", token, map[string]any{"dry_run": true}); code != http.StatusOK {
		t.Errorf("replay with the token: %d %s", code, body)
	}
	cancel()
	select {
	case code := <-done:
		if code != ctl.ExitOK || !strings.Contains(stdout.String(), "console: stopped") {
			t.Fatalf("console exited %d on Ctrl-C\n%s\n%s", code, stdout.String(), stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("console did not stop within 15 s")
	}
}

// console refuses to start where it would be unsafe or could not work, saying what to change.
func TestConsoleCommandRefuses(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short.token")
	if err := os.WriteFile(short, []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := natstest.Start(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"every interface without a token", nil, []string{"--addr", "0.0.0.0:0"}, ctl.ExitUsage, "CONSOLE_TOKEN_FILE"},
		{"every interface with a short CONSOLE_TOKEN", map[string]string{"CONSOLE_TOKEN": "abc"}, []string{"--addr", "0.0.0.0:0"}, ctl.ExitUsage, "too short"},
		{"a short token file", nil, []string{"--token-file", short}, ctl.ExitUsage, "--token-file"},
		{"a missing token file", nil, []string{"--token-file", filepath.Join(dir, "missing")}, ctl.ExitRuntime, "missing"},
		{"an admin URL that is not HTTP", nil, []string{"--receiver-admin", "ftp://receiver"}, ctl.ExitUsage, "ftp://receiver"},
		{"a bad log format", nil, []string{"--log-format", "xml"}, ctl.ExitUsage, "--log-format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"--nats-url", ns.URL(), "console", "--addr", "127.0.0.1:0"}, tc.args...)
			r := invocation{env: tc.env}.run(ctx, t, args...)
			mustCode(t, r, tc.code, tc.name)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("the error does not name %q:\n%s", tc.want, r.stderr)
			}
		})
	}
}
