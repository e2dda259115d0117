package faulttest

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// A 3-node JetStream cluster with every stream and the durable consumer at R3. During the load the node
// leading WECHATPAY_INBOUND is killed; once it is back, another node is restarted. Clients know all three
// URLs. Nothing acknowledged is lost, nothing is published twice.
func TestClusterNodeLoss(t *testing.T) {
	facts := size(400, 3000)
	c := natstest.StartCluster(t, 3)
	p := pipelinetest.StartWith(t, pipelinetest.Options{
		NATSURL: c.URLs(),
		Env:     map[string]string{"STREAM_REPLICAS": "3", "CONSUMER_WORKERS": "4"},
	})
	co := fastConsumer(t, p.Pipeline)
	p.StartConsumer(co)
	p.StartConsumer(co)
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	wait := l.start(ctx, 0, facts, 8)
	acked := func(frac int) func() bool {
		return func() bool { return a.Codes()[http.StatusNoContent] >= notifications(facts)*frac/100 }
	}

	waitFor(t, time.Minute, 10*time.Millisecond, "20% acknowledged", acked(20))
	killed := c.Index(streamLeader(t, p.Pipeline, topology.InboundStream))
	if killed < 0 {
		killed = 0
	}
	c.Stop(killed)
	killedAt := time.Now()
	t.Logf("killed %s (leader of %s)", c.Name(killed), topology.InboundStream)

	waitFor(t, 2*time.Minute, 10*time.Millisecond, "50% acknowledged, the node down for 2 s", func() bool {
		return acked(50)() && time.Since(killedAt) > 2*time.Second
	})
	c.Start(killed)
	down := time.Since(killedAt)

	waitFor(t, 2*time.Minute, 10*time.Millisecond, "70% acknowledged", acked(70))
	other := c.Index(streamLeader(t, p.Pipeline, topology.InboundStream))
	if other < 0 || other == killed {
		other = (killed + 1) % c.Size()
	}
	restartAt := time.Now()
	c.Restart(other)
	t.Logf("restarted %s in %s", c.Name(other), time.Since(restartAt).Round(time.Millisecond))

	wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged", n)
	}
	onlyCodes(t, a, http.StatusNoContent, http.StatusServiceUnavailable)
	r := settle(t, p.Pipeline, a, 2*time.Minute, p.Logs.String)
	if r.Events != facts {
		t.Errorf("%d events for %d facts", r.Events, facts)
	}
	t.Logf("%d facts, %d notifications, %d requests (%d×503) in %s; %s down %s",
		facts, l.sent.Load(), r.Requests, r.Codes[http.StatusServiceUnavailable], time.Since(start).Round(time.Millisecond),
		c.Name(killed), down.Round(time.Millisecond))
}

// streamLeader is the server name leading stream, or "" when it cannot be told.
func streamLeader(t *testing.T, p *pipelinetest.Pipeline, stream string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := p.JetStream().Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}
