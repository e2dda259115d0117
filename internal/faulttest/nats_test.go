package faulttest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
)

// NATS stops in the middle of the load and comes back: while it is down the receiver answers 503, never
// 204; WeChat's retries are stored once it is back; every fact becomes exactly one event.
func TestNATSRestartDuringLoad(t *testing.T) {
	facts := size(400, 3000)
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{"CONSUMER_WORKERS": "4"}})
	co := fastConsumer(t, p.Pipeline)
	p.StartConsumer(co)
	p.StartConsumer(co)
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	wait := l.start(ctx, 0, facts, 8)

	waitFor(t, time.Minute, 10*time.Millisecond, "a quarter of the load acknowledged", func() bool {
		return a.Codes()[http.StatusNoContent] >= notifications(facts)/4
	})
	p.NATS.Stop()
	stoppedAt := time.Now()
	waitFor(t, 30*time.Second, 10*time.Millisecond, "503 answers during the outage", func() bool {
		return a.Codes()[http.StatusServiceUnavailable] >= 20 && time.Since(stoppedAt) > time.Second
	})
	restartAt := time.Now()
	p.NATS.Restart()
	outage := time.Since(stoppedAt)
	wait()
	loadTime := time.Since(start)
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications were never acknowledged", n)
	}

	// Nothing can be stored while the server is down: a 204 to a request made and answered wholly within
	// the outage would be a lie.
	var during, slow503 int
	var max503 time.Duration
	for _, ans := range a.Answers() {
		end := ans.At.Add(ans.Latency)
		if ans.At.After(stoppedAt) && end.Before(restartAt) && ans.Code == http.StatusNoContent {
			during++
		}
		if ans.Code == http.StatusServiceUnavailable {
			max503 = max(max503, ans.Latency)
			if ans.Latency > 2500*time.Millisecond {
				slow503++
			}
		}
	}
	if during > 0 {
		t.Errorf("%d notifications were answered 204 while NATS was down", during)
	}
	if slow503 > 0 {
		t.Errorf("%d 503 answers took longer than the 2 s publish timeout allows (slowest %s)", slow503, max503)
	}
	onlyCodes(t, a, http.StatusNoContent, http.StatusServiceUnavailable)
	r := settle(t, p.Pipeline, a, 90*time.Second, p.Logs.String)
	t.Logf("%d facts, %d notifications, %d requests in %s; outage %s; %d×503 (slowest %s); slowest 204 %s",
		facts, l.sent.Load(), r.Requests, loadTime.Round(time.Millisecond), outage.Round(time.Millisecond),
		r.Codes[http.StatusServiceUnavailable], max503.Round(time.Millisecond), r.Max204.Round(time.Millisecond))
	if r.Facts != facts || r.Events != facts {
		t.Errorf("%d facts accepted and %d events, want %d", r.Facts, r.Events, facts)
	}
}
