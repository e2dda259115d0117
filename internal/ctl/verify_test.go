package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/ctl"
)

// The official SDK's signed notification, captured as an operator would (curl -D style headers, raw
// body), checked with wxpayctl verify at its own time, later, and altered.
func TestVerifyCapturedVector(t *testing.T) {
	raw, err := os.ReadFile("../verify/testdata/wechatpay-go-notify.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		NowUnix int64             `json:"now_unix"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
		CertPEM string            `json:"platform_certificate_pem"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var hdr strings.Builder
	hdr.WriteString("POST /notify/1234567890 HTTP/1.1\r\n")
	for k, val := range v.Headers {
		fmt.Fprintf(&hdr, "%s: %s\r\n", k, val)
	}
	hdr.WriteString("\r\n")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	headers := write("req.headers", hdr.String())
	body := write("req.body", v.Body)
	tampered := write("tampered.body", strings.Replace(v.Body, "签约成功", "签约失败", 1))
	env := map[string]string{
		"WECHATPAY_MCHID":               "1234567890",
		"WECHATPAY_PLATFORM_CERT_FILES": write("cert.pem", v.CertPEM),
	}

	cases := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"at its clock", []string{"--body", body, "--now", fmt.Sprint(v.NowUnix)}, ctl.ExitOK, "OK: signature verified"},
		{"301 s later", []string{"--body", body, "--now", fmt.Sprint(v.NowUnix + 301)}, ctl.ExitFailed, "FAILED check: stale_timestamp"},
		{"body altered", []string{"--body", tampered, "--now", fmt.Sprint(v.NowUnix)}, ctl.ExitFailed, "FAILED check: signature_mismatch"},
		{"json", []string{"--body", body, "--now", fmt.Sprint(v.NowUnix + 301), "-o", "json"}, ctl.ExitFailed, `"failed_check":"stale_timestamp"`},
		{"unknown merchant", []string{"--body", body, "--mchid", "1900000999"}, ctl.ExitFailed, ""},
		{"missing file", []string{"--body", filepath.Join(dir, "nope")}, ctl.ExitRuntime, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"verify", "--headers", headers, "--mchid", "1234567890"}, c.args...)
			code := ctl.Main(context.Background(), args, ctl.Env{Getenv: func(k string) string { return env[k] }, Stdout: &out, Stderr: &errOut})
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out.String(), errOut.String())
			}
			if !strings.Contains(out.String(), c.contains) {
				t.Fatalf("output lacks %q:\n%s", c.contains, out.String())
			}
		})
	}
	var out bytes.Buffer
	if code := ctl.Main(context.Background(), []string{"verify", "--body", body}, ctl.Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &out}); code != ctl.ExitUsage {
		t.Fatalf("missing required flags: exit %d, want %d", code, ctl.ExitUsage)
	}
}
