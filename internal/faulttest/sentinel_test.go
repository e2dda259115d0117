package faulttest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

// Redis runs as Sentinel deployments do in production — a master, a replica, three sentinels, with
// passwords on the data nodes and on the sentinels — and the consumers (real processes) know only the
// sentinels and the master name (REDIS_ADDRS, REDIS_MASTER_NAME, REDIS_PASSWORD,
// REDIS_SENTINEL_PASSWORD). The master is killed under load: the consumers retry while nobody can
// claim, follow the promoted replica, and every notification answered 204 becomes exactly one event.
// Claims and "done" marks the master had not yet replicated are lost with it; what that costs is
// counted (lease_lost), and the event ids, repeated on a second publish and dropped by
// WECHATPAY_EVENTS' duplicate window, keep it from reaching subscribers.
func TestRedisSentinelFailover(t *testing.T) {
	facts := size(300, 3000)
	const password, sentinelPassword = "data-secret", "sentinel-secret"
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Password: password, SentinelPassword: sentinelPassword})
	p := pipelinetest.StartWith(t, pipelinetest.Options{Env: map[string]string{
		"CONSUMER_WORKERS":        "4",
		"REDIS_URL":               "",
		"REDIS_ADDRS":             strings.Join(s.Addrs(), ","),
		"REDIS_MASTER_NAME":       s.MasterName,
		"REDIS_PASSWORD":          password,
		"REDIS_SENTINEL_PASSWORD": sentinelPassword,
	}})
	one := startChildConsumer(t, p.Pipeline, "consumer-1")
	two := startChildConsumer(t, p.Pipeline, "consumer-2")
	logs := func() string { return one.Output() + two.Output() }
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	wait := l.start(ctx, 0, facts, 8)

	waitFor(t, time.Minute, 5*time.Millisecond, "a third of the facts published", func() bool { return eventCount(p.Pipeline) >= uint64(facts/3) })
	killedAt := time.Now()
	old := s.KillMaster()
	atKill := eventCount(p.Pipeline)
	promoted := s.WaitFailover(old, 30*time.Second)
	failover := time.Since(killedAt)
	wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged", n)
	}
	onlyCodes(t, a, http.StatusNoContent) // the receiver needs no Redis
	r := settle(t, p.Pipeline, a, 2*time.Minute, logs)
	if r.Events != facts || r.DLQ != 0 {
		t.Errorf("%d events and %d dead letters for %d facts", r.Events, r.DLQ, facts)
	}

	// What the failover cost: retries while no master answered, and leases lost with it.
	retried := strings.Count(logs(), `"outcome":"retried"`)
	if retried == 0 {
		t.Errorf("no notification was retried while the master was gone")
	}
	var leaseLost []string
	for _, c := range []struct {
		name string
		proc *pipelinetest.Process
	}{{"consumer-1", one}, {"consumer-2", two}} {
		for _, result := range []string{"lease_expired", "lease_taken", "already_done"} {
			series := fmt.Sprintf(`wxpay_consumer_dedupe_lease_lost_total{result=%q}`, result)
			if v := metricValue(scrape(t, adminOf(t, c.proc)), series); v > 0 {
				leaseLost = append(leaseLost, fmt.Sprintf("%s %s %.0f", c.name, result, v))
			}
		}
	}
	t.Logf("%d facts, %d notifications in %s; master %s killed at %d events, %s promoted %s later; %d retries; claims lost with the master: %v",
		facts, l.sent.Load(), time.Since(start).Round(time.Millisecond), old, atKill, promoted, failover.Round(time.Millisecond), retried, leaseLost)
}

// adminOf is the base URL of a consumer process's admin server, from its start-up log line.
func adminOf(t *testing.T, proc *pipelinetest.Process) string {
	t.Helper()
	return "http://" + proc.WaitLog(time.Second, "consumer started")["admin_addr"].(string)
}
