package ctl_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

func TestTail(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	url := p.NATS.URL()
	send := func(eventType string) {
		t.Helper()
		n := p.Build(eventType, wechatsim.Fresh(samples.All()[eventType], pipelinetest.MchID, time.Now()), wechatsim.Options{})
		if code := p.Post(n); code != http.StatusNoContent {
			t.Fatalf("%s: receiver answered %d", eventType, code)
		}
	}
	send("TRANSACTION.SUCCESS")
	send("REFUND.CLOSED")
	p.WaitFor(20*time.Second, "two events", func() bool { return p.Count(topology.EventsStream) == 2 })

	t.Run("from the start, one line per event", func(t *testing.T) {
		r := ctlRun(t, url, "tail", "--from-start", "--count", "2")
		mustCode(t, r, 0, "tail")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || !strings.Contains(r.stdout, "payment.succeeded") || !strings.Contains(r.stdout, "refund.closed") {
			t.Fatalf("tail printed:\n%s", r.stdout)
		}
		for _, l := range lines {
			if !strings.Contains(l, pipelinetest.MchID) {
				t.Errorf("line without the merchant: %s", l)
			}
		}
	})

	t.Run("type filters and JSON", func(t *testing.T) {
		for _, typ := range []string{"refund.*", "refund", "refund.closed", "REFUND.CLOSED", "com.wechatpay.refund.closed"} {
			r := ctlRun(t, url, "tail", typ, "--from-start", "--count", "1", "-o", "json")
			mustCode(t, r, 0, "tail "+typ)
			ce, err := wxevents.Parse([]byte(r.stdout))
			if err != nil {
				t.Fatalf("tail %s -o json: %v\n%s", typ, err, r.stdout)
			}
			if ce.Type != "com.wechatpay.refund.closed" || ce.SpecVersion != "1.0" {
				t.Fatalf("tail %s: %+v", typ, ce)
			}
		}
		// Overlapping filters are merged, not refused by the server.
		r := ctlRun(t, url, "tail", "refund.*", "refund.closed", "payment.succeeded", "--from-start", "--count", "2")
		mustCode(t, r, 0, "tail with overlapping types")
		mustCode(t, ctlRun(t, url, "tail", "refund.sucessed"), 2, "tail of a misspelt type")
		mustCode(t, ctlRun(t, url, "tail", "pay*"), 2, "tail of a partial wildcard")
	})

	t.Run("per sub-merchant", func(t *testing.T) {
		partner := wechatsim.Fresh(samples.All()["TRANSACTION.SUCCESS.partner"], pipelinetest.MchID, time.Now())
		if code := p.Post(p.Build("TRANSACTION.SUCCESS", partner, wechatsim.Options{})); code != http.StatusNoContent { // sub-merchant 1900000109
			t.Fatalf("receiver answered %d", code)
		}
		p.WaitFor(20*time.Second, "the partner event", func() bool { return p.Count(topology.EventsStream) == 3 })
		r := ctlRun(t, url, "tail", "--mchid", pipelinetest.MchID, "--sub-mchid", "1900000109", "--from-start", "--count", "1", "-o", "json")
		mustCode(t, r, 0, "tail --sub-mchid")
		if ce, err := wxevents.Parse([]byte(r.stdout)); err != nil || ce.SubMchID != "1900000109" {
			t.Fatalf("tail --sub-mchid 1900000109 printed (%v):\n%s", err, r.stdout)
		}
		r = ctlRun(t, url, "tail", "payment.succeeded", "--sub-mchid", "_", "--from-start", "--count", "1")
		mustCode(t, r, 0, "tail --sub-mchid _")
		if strings.Contains(r.stdout, "/1900000109") {
			t.Fatalf("--sub-mchid _ showed a sub-merchant's event:\n%s", r.stdout)
		}
		r = ctlRun(t, url, "tail", "--sub-mchid", "1900000109", "--from-start", "--count", "1")
		mustCode(t, r, 0, "tail --sub-mchid, table")
		if !strings.Contains(r.stdout, pipelinetest.MchID+"/1900000109") {
			t.Fatalf("the line does not name the sub-merchant:\n%s", r.stdout)
		}
		mustCode(t, ctlRun(t, url, "tail", "--sub-mchid", "19.00"), 2, "tail --sub-mchid with a dot")
	})

	t.Run("new events only by default", func(t *testing.T) {
		done := make(chan result, 1)
		startWatched(t, p, topology.EventsStream, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done <- invocation{}.run(ctx, t, "--nats-url", url, "tail", "--count", "1")
		})
		send("VIOLATION.PUNISH")
		r := <-done
		mustCode(t, r, 0, "tail --count 1")
		if !strings.Contains(r.stdout, "violation.punished") || strings.Contains(r.stdout, "payment.succeeded") {
			t.Fatalf("tail printed:\n%s", r.stdout)
		}
	})

	t.Run("stops cleanly when interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan result, 1)
		startWatched(t, p, topology.EventsStream, func() { done <- invocation{}.run(ctx, t, "--nats-url", url, "tail") })
		cancel()
		select {
		case r := <-done:
			mustCode(t, r, 0, "tail interrupted")
		case <-time.After(10 * time.Second):
			t.Fatal("tail did not stop on cancel")
		}
	})
}

// consumersOn counts the consumers on stream (-1 when it cannot tell).
func consumersOn(p *pipelinetest.Pipeline, stream string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := p.JetStream().Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info, err := s.Info(ctx)
	if err != nil {
		return -1
	}
	return info.State.Consumers
}

// startWatched runs f in a goroutine once the number of consumers on stream is known, and returns once
// f's command has added its own consumer: it has subscribed, and nothing published from now on is missed.
func startWatched(t *testing.T, p *pipelinetest.Pipeline, stream string, f func()) {
	t.Helper()
	before := consumersOn(p, stream)
	go f()
	p.WaitFor(10*time.Second, "a new consumer on "+stream, func() bool { return consumersOn(p, stream) > before })
}
