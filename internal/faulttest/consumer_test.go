package faulttest

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
)

// Consumers crash (SIGKILL of a real process, holding a pulled batch with claims taken and events half
// published) and are restarted: nothing acknowledged is lost and nothing is published twice.
func TestConsumerCrash(t *testing.T) {
	env := map[string]string{"CONSUMER_WORKERS": "8"}

	t.Run("killed mid-batch and restarted", func(t *testing.T) {
		facts := size(300, 2000)
		p := pipelinetest.StartWith(t, pipelinetest.Options{Env: env})
		a := audit.New(nil)
		l := newLoad(t, p.Pipeline, a)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l.start(ctx, 0, facts, 8)() // a backlog: nothing consumes yet
		if n := l.gaveUp.Load(); n > 0 {
			t.Fatalf("%d notifications not acknowledged", n)
		}

		first := startChildConsumer(t, p.Pipeline, "consumer-1")
		waitFor(t, time.Minute, 5*time.Millisecond, "the first consumer under way", func() bool { return eventCount(p.Pipeline) >= uint64(facts/5) })
		first.Kill()
		atKill, held := eventCount(p.Pipeline), ackPending(p.Pipeline)
		if atKill >= uint64(facts) || held == 0 {
			t.Fatalf("the consumer was killed holding nothing (%d of %d published); make the backlog bigger", atKill, facts)
		}
		second := startChildConsumer(t, p.Pipeline, "consumer-2")
		settle(t, p.Pipeline, a, 90*time.Second, func() string { return first.Output() + second.Output() })
		t.Logf("killed holding %d unacknowledged messages, with %d of %d events published", held, atKill, facts)
	})

	t.Run("two competing and one killed", func(t *testing.T) {
		facts := size(400, 3000)
		p := pipelinetest.StartWith(t, pipelinetest.Options{Env: env})
		a := audit.New(nil)
		l := newLoad(t, p.Pipeline, a)
		one := startChildConsumer(t, p.Pipeline, "consumer-1")
		two := startChildConsumer(t, p.Pipeline, "consumer-2")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		wait := l.start(ctx, 0, facts, 8)
		waitFor(t, time.Minute, 5*time.Millisecond, "a third of the facts published", func() bool { return eventCount(p.Pipeline) >= uint64(facts/3) })
		one.Kill()
		atKill, held := eventCount(p.Pipeline), ackPending(p.Pipeline)
		wait()
		if n := l.gaveUp.Load(); n > 0 {
			t.Fatalf("%d notifications not acknowledged", n)
		}
		three := startChildConsumer(t, p.Pipeline, "consumer-1 restarted")
		onlyCodes(t, a, http.StatusNoContent)
		settle(t, p.Pipeline, a, 90*time.Second, func() string { return one.Output() + two.Output() + three.Output() })
		t.Logf("one of two killed with %d of %d events published, %d messages unacknowledged", atKill, facts, held)
	})

	t.Run("one restarted repeatedly", func(t *testing.T) {
		facts := size(400, 3000)
		restarts := size(5, 20)
		p := pipelinetest.StartWith(t, pipelinetest.Options{Env: env})
		a := audit.New(nil)
		l := newLoad(t, p.Pipeline, a)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		wait := l.start(ctx, 0, facts, 8)
		var procs []*pipelinetest.Process
		var kills []uint64
		for i := 0; i < restarts; i++ {
			c := startChildConsumer(t, p.Pipeline, fmt.Sprintf("consumer run %d", i+1))
			procs = append(procs, c)
			from := eventCount(p.Pipeline)
			// Kill each run once it has made some progress, so that every run dies holding work.
			waitFor(t, time.Minute, 5*time.Millisecond, "progress", func() bool {
				return eventCount(p.Pipeline) >= from+uint64(facts/(2*restarts))
			})
			c.Kill()
			kills = append(kills, eventCount(p.Pipeline))
		}
		wait()
		if n := l.gaveUp.Load(); n > 0 {
			t.Fatalf("%d notifications not acknowledged", n)
		}
		last := startChildConsumer(t, p.Pipeline, "consumer final")
		procs = append(procs, last)
		settle(t, p.Pipeline, a, 2*time.Minute, func() string {
			var s string
			for _, c := range procs {
				s += c.Output()
			}
			return s
		})
		t.Logf("%d kills at %v events of %d", restarts, kills, facts)
	})

	t.Run("the real program killed with production settings", func(t *testing.T) {
		if !long() {
			t.Skip("runs with -long: recovery waits out the production AckWait and dedupe lease (30 s each)")
		}
		facts := 500
		bin := filepath.Join(programs(t), "consumer")
		p := pipelinetest.StartWith(t, pipelinetest.Options{Env: env})
		a := audit.New(nil)
		l := newLoad(t, p.Pipeline, a)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l.start(ctx, 0, facts, 8)()
		first := pipelinetest.StartProcess(t, "consumer", bin, nil, p.Env)
		first.WaitLog(30*time.Second, "consumer started")
		waitFor(t, time.Minute, 5*time.Millisecond, "the consumer under way", func() bool { return eventCount(p.Pipeline) >= uint64(facts/5) })
		first.Kill()
		atKill, held := eventCount(p.Pipeline), ackPending(p.Pipeline)
		second := pipelinetest.StartProcess(t, "consumer", bin, nil, p.Env)
		second.WaitLog(30*time.Second, "consumer started")
		start := time.Now()
		settle(t, p.Pipeline, a, 4*time.Minute, func() string { return first.Output() + second.Output() })
		t.Logf("killed holding %d messages at %d of %d events; recovered in %s", held, atKill, facts, time.Since(start).Round(time.Second))
	})
}
