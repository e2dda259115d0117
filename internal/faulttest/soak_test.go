package faulttest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
)

// soakDuration is -soak, else SOAK, else the 10-second CI version.
func soakDuration(t *testing.T) time.Duration {
	if *soakFlag > 0 {
		return *soakFlag
	}
	if v := os.Getenv("SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK=%q: %v", v, err)
		}
		return d
	}
	return 10 * time.Second
}

type sample struct {
	at                   time.Duration
	recvGor, consGor     float64
	recvHeap, consHeap   float64
	events, acknowledged int
}

// The receiver and the consumer, as the real programs in their own processes, under steady load: their
// goroutines return to the baseline once the load stops, and their heaps do not grow steadily.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	const rate = 40 // notifications per second
	bin := programs(t)
	p := pipelinetest.StartWith(t, pipelinetest.Options{NoReceiver: true})
	renv := p.ReceiverEnv()
	recv := pipelinetest.StartProcess(t, "receiver", filepath.Join(bin, "receiver"), nil, renv)
	started := recv.WaitLog(30*time.Second, "receiver listening")
	url := fmt.Sprintf("http://%s/notify/%s", started["addr"], pipelinetest.MchID)
	recvAdmin := fmt.Sprintf("http://%s", started["admin_addr"])
	cenv := map[string]string{}
	for k, v := range p.Env {
		cenv[k] = v
	}
	cons := pipelinetest.StartProcess(t, "consumer", filepath.Join(bin, "consumer"), nil, cenv)
	consAdmin := fmt.Sprintf("http://%s", cons.WaitLog(30*time.Second, "consumer started")["admin_addr"])
	logs := func() string { return recv.Output() + cons.Output() }

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	a := audit.New(client)
	l := newLoad(t, p.Pipeline, a)
	l.url = url
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()

	measure := func(at time.Duration) sample {
		rm, cm := scrape(t, recvAdmin), scrape(t, consAdmin)
		return sample{at: at,
			recvGor: metricValue(rm, "go_goroutines"), consGor: metricValue(cm, "go_goroutines"),
			recvHeap: metricValue(rm, "go_memstats_heap_alloc_bytes"), consHeap: metricValue(cm, "go_memstats_heap_alloc_bytes"),
			events: int(eventCount(p.Pipeline)), acknowledged: a.Codes()[http.StatusNoContent]}
	}

	// Warm up (connections, pools, caches), then take the baseline with the load's connections closed.
	l.start(ctx, 0, 20, 4)()
	settle(t, p.Pipeline, a, time.Minute, logs)
	client.CloseIdleConnections()
	var base sample
	waitFor(t, 10*time.Second, 100*time.Millisecond, "goroutines steady after the warm-up", func() bool {
		prev := base
		base = measure(0)
		return prev.recvGor == base.recvGor && prev.consGor == base.consGor
	})

	// Steady load: one fact every 1/rate, sent by a pool of senders, sampled meanwhile.
	every := max(dur/40, 250*time.Millisecond)
	var samples []sample
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				l.fact(ctx, i)
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(time.Second / rate)
	sampleTick := time.NewTicker(every)
	next := 20
	for time.Since(start) < dur {
		select {
		case <-tick.C:
			select {
			case jobs <- next:
				next++
			default: // the senders are behind; do not queue up unboundedly
			}
		case <-sampleTick.C:
			samples = append(samples, measure(time.Since(start)))
		}
	}
	tick.Stop()
	sampleTick.Stop()
	close(jobs)
	wg.Wait()
	if n := l.gaveUp.Load(); n > 0 {
		t.Fatalf("%d notifications not acknowledged", n)
	}
	r := settle(t, p.Pipeline, a, 2*time.Minute, logs)
	client.CloseIdleConnections()

	// Goroutines back to the baseline (a few may come and go: timers, the lag poller, pool reapers).
	const slack = 5
	var end sample
	deadline := time.Now().Add(15 * time.Second)
	for {
		end = measure(time.Since(start))
		if end.recvGor <= base.recvGor+slack && end.consGor <= base.consGor+slack {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines after the load: receiver %v (baseline %v), consumer %v (baseline %v)",
				end.recvGor, base.recvGor, end.consGor, base.consGor)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	var table strings.Builder
	fmt.Fprintf(&table, "%9s %8s %8s %10s %10s %7s %7s\n", "t", "recv gor", "cons gor", "recv heap", "cons heap", "acked", "events")
	for _, s := range append(append([]sample{base}, samples...), end) {
		fmt.Fprintf(&table, "%9s %8.0f %8.0f %9.1fM %9.1fM %7d %7d\n", s.at.Round(time.Millisecond), s.recvGor, s.consGor,
			s.recvHeap/(1<<20), s.consHeap/(1<<20), s.acknowledged, s.events)
	}
	t.Logf("soak %s at %d/s: %d notifications, %d events\n%s", dur, rate, l.sent.Load(), r.Events, table.String())

	for _, prog := range []struct {
		name string
		heap func(sample) float64
	}{
		{"receiver", func(s sample) float64 { return s.recvHeap }},
		{"consumer", func(s sample) float64 { return s.consHeap }},
	} {
		if growing(samples, prog.heap) {
			t.Errorf("%s heap grows steadily: the floor of each quarter of the run rises", prog.name)
		}
	}
}

// growing reports whether the heap's floor (the lowest sample, closest to the live heap after a GC) rises
// from each quarter of the run to the next and ends more than 50% + 4 MiB above where it started.
func growing(samples []sample, heap func(sample) float64) bool {
	if len(samples) < 8 {
		return false
	}
	q := len(samples) / 4
	var floors []float64
	for i := 0; i < 4; i++ {
		lo := heap(samples[i*q])
		for _, s := range samples[i*q : (i+1)*q] {
			lo = min(lo, heap(s))
		}
		floors = append(floors, lo)
	}
	for i := 1; i < 4; i++ {
		if floors[i] <= floors[i-1] {
			return false
		}
	}
	return floors[3] > 1.5*floors[0]+4<<20
}
