package faulttest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
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
	recvFDs, consFDs     float64
	redisMem             float64 // used_memory of redis-server
	natsRSS              float64 // RSS of the test process, which runs the embedded nats-server
	jsStore              float64 // bytes JetStream stores on disk
	inbound              float64 // bytes in WECHATPAY_INBOUND: work not yet finished
	events, acknowledged int
}

// The receiver and the consumer, as the real programs in their own processes, under steady load: their
// goroutines return to the baseline once the load stops, their heaps and file descriptors do not grow
// steadily, and WECHATPAY_INBOUND holds no more than the work in flight. The table in the log follows
// goroutines, heaps, descriptors, Redis's memory and NATS's over the run; -soak=1h (or SOAK=1h) makes it
// an hour:
//
//	go test -race -run TestSoak -timeout 90m ./internal/faulttest -soak=1h -v
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	const rate = 40 // notifications per second
	bin := programs(t)
	// A long soak runs nats-server as a process of its own, so that its memory is its own; the CI version
	// uses the embedded one, whose memory is the test process's.
	nats := embeddedNATS
	var natsURL string
	if dur >= time.Minute {
		natsURL, nats = startNATSProcess(t)
	}
	p := pipelinetest.StartWith(t, pipelinetest.Options{NoReceiver: true, NATSURL: natsURL})
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

	rc := redis.NewClient(&redis.Options{Addr: p.Redis.Addr()})
	t.Cleanup(func() { _ = rc.Close() })
	measure := func(at time.Duration) sample {
		rm, cm := scrape(t, recvAdmin), scrape(t, consAdmin)
		smp := sample{at: at,
			recvGor: metricValue(rm, "go_goroutines"), consGor: metricValue(cm, "go_goroutines"),
			recvHeap: metricValue(rm, "go_memstats_heap_alloc_bytes"), consHeap: metricValue(cm, "go_memstats_heap_alloc_bytes"),
			recvFDs: metricValue(rm, "process_open_fds"), consFDs: metricValue(cm, "process_open_fds"),
			inbound: float64(streamBytes(t, p.Pipeline, topology.InboundStream)),
			events:  int(eventCount(p.Pipeline)), acknowledged: a.Codes()[http.StatusNoContent]}
		if mem, err := rc.InfoMap(context.Background(), "memory").Result(); err == nil {
			smp.redisMem, _ = strconv.ParseFloat(mem["Memory"]["used_memory"], 64)
		}
		if v, err := nats(p.Pipeline); err == nil {
			smp.natsRSS = float64(v.Mem)
			if v.JetStream.Stats != nil {
				smp.jsStore = float64(v.JetStream.Stats.Store)
			}
		}
		return smp
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
	fmt.Fprintf(&table, "%9s %8s %8s %10s %10s %8s %8s %10s %10s %10s %10s %7s %7s\n", "t", "recv gor", "cons gor", "recv heap", "cons heap",
		"recv fds", "cons fds", "redis mem", "nats rss", "js store", "inbound", "acked", "events")
	for _, s := range append(append([]sample{base}, samples...), end) {
		fmt.Fprintf(&table, "%9s %8.0f %8.0f %9.1fM %9.1fM %8.0f %8.0f %9.1fM %9.1fM %9.1fM %9.0fK %7d %7d\n", s.at.Round(time.Millisecond),
			s.recvGor, s.consGor, s.recvHeap/(1<<20), s.consHeap/(1<<20), s.recvFDs, s.consFDs,
			s.redisMem/(1<<20), s.natsRSS/(1<<20), s.jsStore/(1<<20), s.inbound/(1<<10), s.acknowledged, s.events)
	}
	natsIs := "nats-server's own process"
	if natsURL == "" {
		natsIs = "the test process, which runs the embedded nats-server, the load and the audit"
	}
	t.Logf("soak %s at %d/s: %d notifications, %d events (nats rss: %s)\n%s", dur, rate, l.sent.Load(), r.Events, natsIs, table.String())

	for _, prog := range []struct {
		name string
		heap func(sample) float64
	}{
		{"receiver heap", func(s sample) float64 { return s.recvHeap }},
		{"consumer heap", func(s sample) float64 { return s.consHeap }},
		{"receiver file descriptors", func(s sample) float64 { return s.recvFDs }},
		{"consumer file descriptors", func(s sample) float64 { return s.consFDs }},
	} {
		if growing(samples, prog.heap) {
			t.Errorf("%s grow steadily: the floor of each quarter of the run rises", prog.name)
		}
	}
	// Finished work leaves WECHATPAY_INBOUND: once the archive has confirmed the last copies (its flow
	// control answers within a second of the load stopping), it holds nothing.
	waitFor(t, 10*time.Second, 50*time.Millisecond, "WECHATPAY_INBOUND empty after every notification was processed and copied", func() bool {
		return streamBytes(t, p.Pipeline, topology.InboundStream) == 0
	})
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

// natsVarz reads a nats-server's /varz: memory and JetStream usage.
type natsVarz func(p *pipelinetest.Pipeline) (*server.Varz, error)

func embeddedNATS(p *pipelinetest.Pipeline) (*server.Varz, error) { return p.NATS.Server().Varz(nil) }

// startNATSProcess runs nats-server (built from the version in go.mod) with JetStream and a monitoring
// port, stopped by t.Cleanup, and returns its client URL and a reader of its /varz.
func startNATSProcess(t *testing.T) (string, natsVarz) {
	t.Helper()
	dir := t.TempDir()
	if err := pipelinetest.BuildPrograms(dir, "github.com/nats-io/nats-server/v2"); err != nil {
		t.Fatalf("build nats-server: %v", err)
	}
	ports := make([]int, 2)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(ports[0]), "-m", strconv.Itoa(ports[1]), "-js", "-sd", filepath.Join(dir, "store")}
	pipelinetest.StartProcess(t, "nats-server", filepath.Join(dir, "nats-server"), args, nil)
	url := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	varz := fmt.Sprintf("http://127.0.0.1:%d/varz", ports[1])
	waitFor(t, 30*time.Second, 50*time.Millisecond, "nats-server answering", func() bool {
		resp, err := http.Get(varz)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err == nil
	})
	return url, func(*pipelinetest.Pipeline) (*server.Varz, error) {
		resp, err := http.Get(varz)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var v server.Varz
		return &v, json.NewDecoder(resp.Body).Decode(&v)
	}
}
