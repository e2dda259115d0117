package faulttest

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
)

// Redis dies in the middle of the load and comes back empty (redistest restarts without persistence, the
// worst case: every "done" mark is forgotten). Consumers retry while it is down; the facts already
// published are not published again, because the event ids are deterministic and WECHATPAY_EVENTS drops
// a repeated id within its duplicate window.
func TestRedisRestartDuringLoad(t *testing.T) {
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

	waitFor(t, time.Minute, 5*time.Millisecond, "a quarter of the facts published", func() bool { return eventCount(p.Pipeline) >= uint64(facts/4) })
	p.Redis.Stop()
	stopped := time.Now()
	atStop := eventCount(p.Pipeline)
	// While Redis is down nothing can be claimed: the consumers retry (what was claimed before may finish).
	retried := func() int { return strings.Count(p.Logs.String(), `"outcome":"retried"`) }
	before := retried()
	waitFor(t, 30*time.Second, 20*time.Millisecond, "20 retries during the outage", func() bool { return retried() >= before+20 })
	duringOutage := eventCount(p.Pipeline) - atStop
	p.Redis.Restart()
	outage := time.Since(stopped)
	wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged", n)
	}
	onlyCodes(t, a, http.StatusNoContent) // the receiver never needs Redis
	r := settle(t, p.Pipeline, a, 2*time.Minute, p.Logs.String)
	if r.Events != facts {
		t.Errorf("%d events for %d facts", r.Events, facts)
	}
	t.Logf("%d facts, %d notifications in %s; Redis down %s at %d events, %d published meanwhile (claimed before), %d retries logged in all",
		facts, l.sent.Load(), time.Since(start).Round(time.Millisecond), outage.Round(time.Millisecond), atStop, duringOutage, retried())
}
