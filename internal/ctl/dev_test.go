package ctl_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/ctl"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

var domainTypes = []string{
	"payment.succeeded", "payment.failed", "payment.repaid", "refund.succeeded", "refund.abnormal", "refund.closed",
	"violation.punished", "violation.intercepted", "violation.appealed", "parking.state_changed",
}

// devRun is a running `wxpayctl dev`.
type devRun struct {
	stdout, stderr *pipelinetest.SyncBuffer
	cancel         context.CancelFunc
	done           chan struct{} // closed when dev has returned code
	code           int
}

// startDev runs dev on random ports in dir; cancelling stands for SIGINT.
func startDev(t *testing.T, dir string, env map[string]string, extra ...string) *devRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devRun{stdout: &pipelinetest.SyncBuffer{}, stderr: &pipelinetest.SyncBuffer{}, cancel: cancel, done: make(chan struct{})}
	args := append([]string{"dev", "--dir", dir, "--nats-url", "nats://127.0.0.1:0",
		"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--consumer-admin-addr", "127.0.0.1:0", "--console-addr", "127.0.0.1:0"}, extra...)
	go func() {
		defer close(d.done)
		d.code = ctl.Main(ctx, args, ctl.Env{Getenv: func(k string) string { return env[k] }, Stdout: d.stdout, Stderr: d.stderr})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
		}
	})
	return d
}

// waitOutput waits until stdout holds every string in want.
func (d *devRun) waitOutput(t *testing.T, timeout time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := d.stdout.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(out, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("dev exited %d before printing %q\nstdout:\n%s\nstderr:\n%s", d.code, missing, out, d.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev did not print %q within %s\nstdout:\n%s\nstderr:\n%s", missing, timeout, out, d.stderr.String())
		}
	}
}

// stop cancels dev as SIGINT would and returns its exit code.
func (d *devRun) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case <-d.done:
		return d.code
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30 s of SIGINT")
		return -1
	}
}

var (
	publicKeyIDRe = regexp.MustCompile(`PUB_KEY_ID_[0-9]+`)
	natsURLRe     = regexp.MustCompile(`export NATS_URL=(\S+)`)
	notifyRe      = regexp.MustCompile(`POST (http://\S+)`)
)

// waitStreams polls `wxpayctl streams info` until cond holds for the number of events and the consumer's
// pending plus unacknowledged messages.
func waitStreams(t *testing.T, natsURL, what string, cond func(events, pending int) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := ctlRun(t, natsURL, "streams", "info", "-o", "json")
		var rows []struct {
			Stream     string `json:"stream"`
			Messages   int    `json:"messages"`
			Pending    int    `json:"consumer_pending"`
			AckPending int    `json:"consumer_ack_pending"`
		}
		_ = json.Unmarshal([]byte(r.stdout), &rows)
		events, pending := -1, -1
		for _, row := range rows {
			switch row.Stream {
			case "WECHATPAY_EVENTS":
				events = row.Messages
			case "WECHATPAY_INBOUND":
				pending = row.Pending + row.AckPending
			}
		}
		if events >= 0 && pending >= 0 && cond(events, pending) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %d events, %d pending", what, events, pending)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// demoEvents is what one demo publishes: one event per simulator sample (16), and the combined payment
// has two sub-orders.
const demoEvents = 17

func TestDevDemo(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir, nil, "--demo")
	d.waitOutput(t, 60*time.Second, append([]string{"one event of each of the 10 types arrived", "generated now", "dedupe          embedded"}, domainTypes...)...)
	keyID := publicKeyIDRe.FindString(d.stdout.String())
	natsURL := natsURLRe.FindStringSubmatch(d.stdout.String())

	checkDevConsole(t, d.stdout.String())

	// While dev runs, the other commands find its NATS.
	if natsURL == nil {
		t.Fatalf("no NATS_URL in the banner:\n%s", d.stdout.String())
	}
	r := ctlRun(t, natsURL[1], "tail", "--from-start", "--count", strconv.Itoa(demoEvents))
	mustCode(t, r, 0, "tail against dev")
	for _, typ := range domainTypes {
		if !strings.Contains(r.stdout, typ) {
			t.Errorf("tail against dev lacks %s", typ)
		}
	}

	// The embedded dedupe store holds in the real consumer: one fact under three notification ids.
	notify := notifyRe.FindStringSubmatch(d.stdout.String())
	r = ctlRun(t, natsURL[1], "simulate", "--platform-dir", dir, "--url", notify[1], "--type", "refund.succeeded", "--duplicate", "3")
	mustCode(t, r, 0, "simulate --duplicate 3 against dev")
	waitStreams(t, natsURL[1], "the duplicates settled", func(events, pending int) bool { return events >= demoEvents+1 && pending == 0 })
	waitStreams(t, natsURL[1], "exactly one more event", func(events, _ int) bool { return events == demoEvents+1 })

	if code := d.stop(t); code != ctl.ExitOK {
		t.Fatalf("dev exited %d on SIGINT\nstderr:\n%s", code, d.stderr.String())
	}
	if !strings.Contains(d.stdout.String(), "dev: stopped") {
		t.Errorf("no graceful stop message:\n%s", d.stdout.String())
	}

	// A restart keeps the merchant's keys and the state, and dedupes on Redis when REDIS_URL answers.
	redis := redistest.Start(t)
	d = startDev(t, dir, map[string]string{"REDIS_URL": redis.URL()}, "--demo")
	d.waitOutput(t, 60*time.Second, "one event of each of the 10 types arrived", "loaded from", "dedupe          Redis")
	if got := publicKeyIDRe.FindString(d.stdout.String()); got != keyID {
		t.Fatalf("public key id %s after a restart, was %s", got, keyID)
	}
	natsURL = natsURLRe.FindStringSubmatch(d.stdout.String())
	r = ctlRun(t, natsURL[1], "streams", "info", "-o", "json")
	mustCode(t, r, 0, "streams info against dev")
	var streams []struct {
		Stream   string `json:"stream"`
		Messages int    `json:"messages"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &streams); err != nil {
		t.Fatal(err)
	}
	for _, s := range streams {
		if s.Stream == "WECHATPAY_EVENTS" && s.Messages != 2*demoEvents+1 {
			t.Errorf("%d events after two demos and a duplicate: the first run's were not kept", s.Messages)
		}
	}
	if code := d.stop(t); code != ctl.ExitOK {
		t.Fatalf("dev exited %d on SIGINT", code)
	}
}

func TestDevRefusesATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := invocation{}.run(ctx, t, "dev", "--dir", t.TempDir(), "--nats-url", "nats://"+ln.Addr().String())
	mustCode(t, r, ctl.ExitRuntime, "dev on a taken NATS port")
	if !strings.Contains(r.stderr, "--nats-url") {
		t.Errorf("the error does not say how to fix it: %s", r.stderr)
	}
	mustCode(t, invocation{}.run(ctx, t, "dev", "--nats-url", "http://x"), ctl.ExitUsage, "dev with a non-NATS URL")
}

// A taken default receiver port (8080 is popular) moves dev to a free one, named in the banner; the
// commands it suggests name the NATS server it really uses, and dev.env holds NATS_URL for a shell.
func TestDevMovesFromATakenDefaultPort(t *testing.T) {
	if ln, err := net.Listen("tcp", ":8080"); err == nil { // else something else holds it already: as good
		defer func() { _ = ln.Close() }()
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr pipelinetest.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- ctl.Main(ctx, []string{"dev", "--dir", dir, "--nats-url", "nats://127.0.0.1:0",
			"--admin-addr", "127.0.0.1:0", "--consumer-admin-addr", "127.0.0.1:0"},
			ctl.Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr})
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stdout.String(), "try, in another terminal") {
		if time.Now().After(deadline) {
			t.Fatalf("no banner:\n%s\n%s", stdout.String(), stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := stdout.String()
	if strings.Contains(out, ":8080/notify") {
		t.Errorf("the banner still names the taken port:\n%s", out)
	}
	natsURL := natsURLRe.FindStringSubmatch(out)
	if natsURL == nil || !strings.Contains(out, "wxpayctl --nats-url "+natsURL[1]+" tail") {
		t.Errorf("the suggested commands do not name dev's NATS server:\n%s", out)
	}
	env, err := os.ReadFile(filepath.Join(dir, "dev.env"))
	if err != nil || !strings.Contains(string(env), "export NATS_URL="+natsURL[1]) || !strings.Contains(string(env), "export WECHATPAY_MCHID=") {
		t.Errorf("dev.env (%v):\n%s", err, env)
	}
}
