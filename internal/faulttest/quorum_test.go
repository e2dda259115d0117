package faulttest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// readyz is the status and body of an admin server's /readyz.
func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// A 3-node cluster with everything at R3 loses 2 of its 3 servers under load. Nothing can be stored:
// the receiver answers 503 within its publish timeout and never 204, and its /readyz says the stream
// lost its majority; the consumers stop without dead-lettering anything. When the servers are back,
// every notification answered 204 becomes exactly one event.
func TestQuorumLoss(t *testing.T) {
	facts := size(240, 2000)
	const publishTimeout = time.Second
	c := natstest.StartCluster(t, 3)
	p := pipelinetest.StartWith(t, pipelinetest.Options{
		NATSURL: c.URLs(),
		Env:     map[string]string{"STREAM_REPLICAS": "3", "CONSUMER_WORKERS": "4", "PUBLISH_TIMEOUT": publishTimeout.String()},
	})
	co := fastConsumer(t, p.Pipeline)
	_, consumerAdmin := p.StartConsumerAdmin(co)
	p.StartConsumer(co)
	a := audit.New(nil)
	l := newLoad(t, p.Pipeline, a)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wait := l.start(ctx, 0, facts, 8)

	waitFor(t, time.Minute, 10*time.Millisecond, "a third of the load acknowledged", func() bool {
		return a.Codes()[http.StatusNoContent] >= notifications(facts)/3
	})
	// The leader of the inbound stream and one more: the survivor cannot elect anyone.
	leader := c.Index(streamLeader(t, p.Pipeline, topology.InboundStream))
	if leader < 0 {
		leader = 0
	}
	down := []int{leader, (leader + 1) % c.Size()}
	for _, i := range down {
		c.Stop(i)
	}
	lostAt := time.Now()
	t.Logf("stopped %s and %s; %s is alone", c.Name(down[0]), c.Name(down[1]), c.Name(3-down[0]-down[1]))

	waitFor(t, 30*time.Second, 10*time.Millisecond, "503 answers", func() bool {
		return a.Codes()[http.StatusServiceUnavailable] >= 20 && time.Since(lostAt) > 2*publishTimeout
	})
	// Both probes at once: each may wait out its 2-second deadline for a stream that answers nothing.
	var recvWhy, consWhy string
	waitFor(t, 30*time.Second, 10*time.Millisecond, "both /readyz saying why", func() bool {
		cc := make(chan int, 1)
		go func() {
			code, why := readyz(t, consumerAdmin)
			consWhy = why
			cc <- code
		}()
		code, why := readyz(t, p.ReceiverAdmin)
		recvWhy = why
		return code == http.StatusServiceUnavailable && strings.Contains(recvWhy, "majority") && <-cc == http.StatusServiceUnavailable
	})
	restoreAt := time.Now()
	for _, i := range down {
		c.Start(i)
	}
	outage := time.Since(lostAt)
	wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications never acknowledged", n)
	}

	// Nothing is stored without a majority: a 204 within the outage to a notification first sent
	// within it would be a lie. A retry of one sent before may get a true 204: its earlier attempt was
	// stored as the servers went down, and the survivor, still leading for a moment, recognises its
	// Nats-Msg-Id as a duplicate (the audit below proves each such notification became its event).
	// Every refusal comes within the publish timeout (and a little scheduling).
	answers := a.Answers()
	firstSent := map[string]time.Time{}
	for _, ans := range answers {
		if t0, ok := firstSent[ans.NotificationID]; !ok || ans.At.Before(t0) {
			firstSent[ans.NotificationID] = ans.At
		}
	}
	var during, slow int
	var slowest time.Duration
	for _, ans := range answers {
		if firstSent[ans.NotificationID].After(lostAt) && ans.At.Add(ans.Latency).Before(restoreAt) && ans.Code == http.StatusNoContent {
			during++
		}
		if ans.Code == http.StatusServiceUnavailable {
			slowest = max(slowest, ans.Latency)
			if ans.Latency > publishTimeout+500*time.Millisecond {
				slow++
			}
		}
	}
	if during > 0 {
		t.Errorf("%d notifications answered 204 while 2 of 3 servers were down", during)
	}
	if slow > 0 {
		t.Errorf("%d 503 answers took longer than the %s publish timeout (slowest %s)", slow, publishTimeout, slowest)
	}
	onlyCodes(t, a, http.StatusNoContent, http.StatusServiceUnavailable)
	r := settle(t, p.Pipeline, a, 2*time.Minute, p.Logs.String)
	if r.Events != facts || r.DLQ != 0 {
		t.Errorf("%d events and %d dead letters for %d facts", r.Events, r.DLQ, facts)
	}
	if code, body := readyz(t, p.ReceiverAdmin); code != http.StatusOK {
		t.Errorf("receiver /readyz after the servers returned: %d %s", code, body)
	}
	t.Logf("quorum lost for %s: %d×503 (slowest %s), receiver /readyz: %q; consumer /readyz: %q",
		outage.Round(time.Millisecond), r.Codes[http.StatusServiceUnavailable], slowest.Round(time.Millisecond), recvWhy, consWhy)
}
