package ctl_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/ctl"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

type simSummary struct {
	Notifications []struct {
		EventType string `json:"event_type"`
		ID        string `json:"id"`
		Delivered bool   `json:"delivered"`
		Attempts  []struct {
			Status int `json:"status"`
		} `json:"attempts"`
	} `json:"notifications"`
	Delivered int `json:"delivered"`
	Refused   int `json:"refused"`
}

func simJSON(t *testing.T, r result) simSummary {
	t.Helper()
	var s simSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("simulate -o json: %v\n%s", err, r.stdout)
	}
	return s
}

// savedPlatform writes the pipeline's platform where simulate --platform-dir reads it.
func savedPlatform(t *testing.T, p *pipelinetest.Pipeline) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "platform")
	if _, err := p.Platform.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSimulateAgainstARealReceiver(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	dir := savedPlatform(t, p)
	sim := func(args ...string) result {
		t.Helper()
		return ctlRun(t, p.NATS.URL(), append([]string{"simulate", "--platform-dir", dir, "--url", p.URL}, args...)...)
	}

	t.Run("one of every event type", func(t *testing.T) {
		r := sim()
		mustCode(t, r, 0, "simulate")
		if !strings.Contains(r.stdout, "10 delivered") {
			t.Fatalf("output:\n%s", r.stdout)
		}
		p.WaitFor(20*time.Second, "ten events", func() bool { return p.Count(topology.EventsStream) == 10 && p.Settled() })
		types := map[string]bool{}
		for _, e := range p.Events() {
			types[e.Type] = true
		}
		if len(types) != 10 {
			t.Fatalf("event types: %v", types)
		}
	})

	t.Run("count gives new facts, duplicate gives one", func(t *testing.T) {
		r := sim("--type", "refund.succeeded", "--count", "2", "--duplicate", "3", "-o", "json")
		mustCode(t, r, 0, "simulate --count 2 --duplicate 3")
		s := simJSON(t, r)
		ids := map[string]bool{}
		for _, n := range s.Notifications {
			ids[n.ID] = true
		}
		if s.Delivered != 6 || len(ids) != 6 {
			t.Fatalf("%d delivered under %d ids: %s", s.Delivered, len(ids), r.stdout)
		}
		p.WaitFor(20*time.Second, "two more events", func() bool { return p.Count(topology.EventsStream) >= 12 && p.Settled() })
		if n := p.Count(topology.EventsStream); n != 12 {
			t.Fatalf("%d events, want 12", n)
		}
	})

	t.Run("WeChat types, samples and certificate signatures", func(t *testing.T) {
		mustCode(t, sim("--type", "TRANSACTION.SUCCESS.global", "--sign-with", "certificate"), 0, "sample name")
		mustCode(t, sim("--type", "REFUND.CLOSED"), 0, "WeChat event type")
		mustCode(t, sim("--type", "payment.unknown"), 2, "unknown type")
		mustCode(t, sim("--type", "PAYSCORE.USER_PAID"), 2, "type without a sample or --plaintext")
		plain := filepath.Join(t.TempDir(), "payscore.json")
		if err := os.WriteFile(plain, []byte(`{"out_order_no":"x"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		mustCode(t, sim("--type", "PAYSCORE.USER_PAID", "--plaintext", plain), 0, "own plaintext")
		p.WaitFor(20*time.Second, "dead-lettered as unsupported", func() bool { return p.Count(topology.DLQStream) == 1 })
	})

	t.Run("probes and stale notifications are refused", func(t *testing.T) {
		for _, flag := range []string{"--probe", "--stale"} {
			r := sim(flag, "--type", "refund.succeeded", "-o", "json")
			mustCode(t, r, 0, flag)
			s := simJSON(t, r)
			if s.Refused != 1 || s.Notifications[0].Attempts[0].Status != 401 || len(s.Notifications[0].Attempts) != 1 {
				t.Fatalf("%s: %s", flag, r.stdout)
			}
		}
	})

	t.Run("not delivered is exit 1", func(t *testing.T) {
		r := ctlRun(t, p.NATS.URL(), "simulate", "--platform-dir", dir, "--url", strings.Replace(p.URL, pipelinetest.MchID, "1900000999", 1), "--type", "refund.succeeded", "--no-retry")
		mustCode(t, r, 1, "simulate to an unknown merchant")
		if !strings.Contains(r.stdout, "404") {
			t.Fatalf("output:\n%s", r.stdout)
		}
	})

	t.Run("load, open loop", func(t *testing.T) {
		// The archive's copies of earlier subtests' notifications may still be on their way: counting
		// before they land would expect too few.
		p.WaitFor(30*time.Second, "the archive caught up", p.ArchiveCaughtUp)
		before := p.Count(topology.ArchiveStream)
		r := sim("--type", "refund.succeeded", "--rate", "50", "--concurrency", "4", "--duration", "2s", "-o", "json")
		mustCode(t, r, 0, "simulate load")
		var s struct {
			Scheduled, Sent, Late, Errors int
			ByStatus                      map[string]int `json:"by_status"`
			Elapsed                       float64        `json:"elapsed_seconds"`
			Throughput                    float64
			LatencyMS                     struct{ P50, P90, P99, P999, Max float64 } `json:"latency_ms"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			t.Fatal(err)
		}
		if s.Scheduled != 100 || s.Sent != 100 || s.ByStatus["204"] != 100 || s.Late != 0 || s.Errors != 0 {
			t.Fatalf("summary: %s", r.stdout)
		}
		l := s.LatencyMS
		if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Fatalf("percentiles: %+v", l)
		}
		if r.took > 8*time.Second || s.Elapsed < 1.9 {
			t.Fatalf("a 2 s load took %s (elapsed %.2fs)", r.took, s.Elapsed)
		}
		// Every 204 was stored in WECHATPAY_INBOUND; the archive's copies follow through the server's
		// sourcing, which a loaded CI machine has delayed by more than 10 s.
		p.WaitFor(30*time.Second, "every load request stored", func() bool {
			return p.Count(topology.ArchiveStream) >= before+100 && p.ArchiveCaughtUp()
		})
		if n := p.Count(topology.ArchiveStream); n != before+100 {
			t.Fatalf("the archive holds %d more notifications for 100 requests", n-before)
		}

		r = sim("--type", "refund.succeeded", "--rate", "20", "--duration", "500ms")
		mustCode(t, r, 0, "simulate load, table")
		for _, want := range []string{"p99.9", "204 ×10", "answers/s"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("table lacks %q:\n%s", want, r.stdout)
			}
		}
	})
}

func TestSimulateRetriesUntilTheReceiverAnswers(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	dir := savedPlatform(t, p)
	p.NATS.Stop() // the receiver answers 503 while it cannot store
	var stdout, stderr pipelinetest.SyncBuffer
	done := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		// 100 times faster: 150 ms, 150 ms, 300 ms, 1.8 s, …
		done <- ctl.Main(ctx, []string{"simulate", "--platform-dir", dir, "--url", p.URL, "--type", "refund.succeeded", "--time-scale", "100"},
			ctl.Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr})
	}()
	p.WaitFor(20*time.Second, "a first attempt refused", func() bool { return strings.Contains(stdout.String(), "attempt 1: 503") })
	p.NATS.Restart()
	var code int
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("simulate did not finish")
	}
	if code != 0 || !strings.Contains(stdout.String(), ": 204 in") || !strings.Contains(stdout.String(), "1 delivered") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	if n := p.Count(topology.InboundStream); n != 1 {
		t.Fatalf("inbound holds %d", n)
	}
}

func TestSimulateKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	r := ctlRun(t, "nats://127.0.0.1:1", "simulate", "keys", "--out", dir, "--mchid", "1900000200")
	mustCode(t, r, 0, "simulate keys")
	if !strings.Contains(r.stdout, "export WECHATPAY_PUBLIC_KEY_ID=PUB_KEY_ID_") {
		t.Fatalf("output:\n%s", r.stdout)
	}
	p, _, err := wechatsim.LoadPlatform(dir, "1900000200")
	if err != nil {
		t.Fatal(err)
	}
	mustCode(t, ctlRun(t, "nats://127.0.0.1:1", "simulate", "keys", "--out", dir, "--mchid", "1900000200"), 1, "keys over existing keys")
	mustCode(t, ctlRun(t, "nats://127.0.0.1:1", "simulate", "keys", "--out", dir, "--mchid", "1900000200", "--force"), 0, "keys --force")
	q, _, err := wechatsim.LoadPlatform(dir, "1900000200")
	if err != nil || q.PublicKeyID == p.PublicKeyID {
		t.Fatalf("--force did not replace the keys: %v", err)
	}
	mustCode(t, ctlRun(t, "nats://127.0.0.1:1", "simulate", "keys"), 2, "keys without --out")
	for _, bad := range [][]string{{"--count", "0"}, {"--duplicate", "0"}, {"--probe", "--stale"}, {"--sign-with", "sm2"}, {"--rate", "10", "--duration", "0s"}} {
		mustCode(t, ctlRun(t, "nats://127.0.0.1:1", append([]string{"simulate", "--platform-dir", dir, "--mchid", "1900000200"}, bad...)...), 2, "simulate "+strconv.Quote(strings.Join(bad, " ")))
	}
}

// simulate --save keeps the request it sent as a capture that wxpayctl verify checks: the way to produce a
// capture without a proxy in front of the receiver.
func TestSimulateSaveMakesAVerifiableCapture(t *testing.T) {
	keys, captures := t.TempDir(), filepath.Join(t.TempDir(), "captures")
	mustCode(t, ctlRun(t, "nats://127.0.0.1:1", "simulate", "keys", "--out", keys, "--mchid", "1900000200"), 0, "keys")
	// Nothing listens on port 1: the attempt fails, the capture is written all the same.
	r := ctlRun(t, "nats://127.0.0.1:1", "simulate", "--platform-dir", keys, "--mchid", "1900000200", "--type", "refund.succeeded",
		"--no-retry", "--url", "http://127.0.0.1:1/notify/1900000200", "--save", captures)
	if !strings.Contains(r.stdout, "saved ") {
		t.Fatalf("simulate --save printed:\n%s\n%s", r.stdout, r.stderr)
	}
	heads, _ := filepath.Glob(filepath.Join(captures, "*.headers"))
	if len(heads) != 1 {
		t.Fatalf("%d header files in %s", len(heads), captures)
	}
	body := strings.TrimSuffix(heads[0], ".headers") + ".body"
	p, files, err := wechatsim.LoadPlatform(keys, "1900000200")
	if err != nil {
		t.Fatal(err)
	}
	env := p.Env(files)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v := invocation{env: env}.run(ctx, t, "verify", "--headers", heads[0], "--body", body, "--mchid", "1900000200")
	mustCode(t, v, 0, "verify of the saved capture")
	if !strings.Contains(v.stdout, "OK") {
		t.Errorf("verify printed:\n%s", v.stdout)
	}
}
