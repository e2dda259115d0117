package faulttest

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/logging"
	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

var (
	longFlag = flag.Bool("long", false, "bigger fault runs (also LONG=1)")
	soakFlag = flag.Duration("soak", 0, "run TestSoak this long (also SOAK=10m); 10 s when unset")
)

// long reports whether the bigger runs were asked for.
func long() bool { return *longFlag || os.Getenv("LONG") == "1" }

// size picks a run size: ci by default (the whole package stays within minutes under -race on two cores),
// big with -long.
func size(ci, big int) int {
	if long() {
		return big
	}
	return ci
}

// childEnv names the role of a re-executed test binary (see TestMain).
const childEnv = "FAULTTEST_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	// The tests hand consumers their own dedupe client, so consumer.New does not route go-redis's dial
	// failures (expected while Redis is down) away from stderr; do it here.
	redis.SetLogger(redisLog{zerolog.Nop()})
	code := m.Run()
	cleanupPrograms()
	os.Exit(code)
}

// runChild runs a pipeline program in this (re-executed) test binary: a real process that the test can
// SIGKILL. The consumer is built exactly as consumer.Run builds it, from its environment, except for the
// dedupe lease, which tests shorten from 30 s (FAULTTEST_LEASE) so that a crash is recovered from in
// seconds; the durable's AckWait comes from CONSUMER_ACK_WAIT like every fleet-wide setting.
func runChild(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if role != "consumer" {
		fmt.Fprintf(os.Stderr, "unknown %s %q\n", childEnv, role)
		return 2
	}
	cfg, err := config.LoadConsumer(nil, os.Getenv, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return 1
	}
	lease, _ := time.ParseDuration(os.Getenv("FAULTTEST_LEASE"))
	rc, err := dedupe.NewUniversalClient(consumer.RedisOptions(cfg.Redis))
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return 1
	}
	defer func() { _ = rc.Close() }()
	log := logging.New(cfg.LogLevel, cfg.LogFormat, os.Stdout).With().Str("program", "consumer").Int("pid", os.Getpid()).Logger()
	redis.SetLogger(redisLog{log})
	c, err := consumer.New(ctx, cfg, log, consumer.Deps{
		Dedupe: dedupe.NewRedis(rc, dedupe.Options{Lease: lease, TTL: cfg.DedupeTTL}),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return 1
	}
	if err := c.Serve(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return 1
	}
	return 0
}

// redisLog sends go-redis's own messages to a debug log, as the consumer program does.
type redisLog struct{ log zerolog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Str("component", "go-redis").Msgf(format, v...)
}

// Test tuning of the consumers: short enough that a redelivery after a crash or a lost ack comes within
// seconds, long enough for a publish under -race on a loaded machine.
const (
	testAckWait = 2 * time.Second
	testLease   = 3 * time.Second
)

// fastConsumer runs consumers in-process with the test tuning: the durable's AckWait through the
// pipeline's configuration (CONSUMER_ACK_WAIT, as production sets it), the lease through the deduper.
func fastConsumer(t *testing.T, p *pipelinetest.Pipeline) pipelinetest.ConsumerOptions {
	t.Helper()
	p.Env["CONSUMER_ACK_WAIT"] = testAckWait.String()
	rc, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: p.Redis.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	return pipelinetest.ConsumerOptions{Dedupe: dedupe.NewRedis(rc, dedupe.Options{Lease: testLease})}
}

// startChildConsumer runs a consumer as a child process (this test binary re-executed).
func startChildConsumer(t *testing.T, p *pipelinetest.Pipeline, name string) *pipelinetest.Process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for k, v := range p.Env {
		env[k] = v
	}
	env[childEnv] = "consumer"
	env["CONSUMER_ACK_WAIT"] = testAckWait.String()
	env["FAULTTEST_LEASE"] = testLease.String()
	env["ADMIN_ADDR"] = "127.0.0.1:0"
	env["LOG_LEVEL"] = "info"
	proc := pipelinetest.StartProcess(t, name, exe, nil, env)
	proc.WaitLog(30*time.Second, "consumer started")
	return proc
}

// plaintexts of the two kinds of facts the load sends: payments and refunds, each from the realistic
// sample with its business id replaced.
var (
	templatesOnce sync.Once
	templates     map[string]map[string]any
)

// factPlaintext is the decrypted resource of fact i of a run: every fifth is a refund, the rest payments.
func factPlaintext(run string, i int) (eventType string, plain []byte) {
	templatesOnce.Do(func() {
		templates = map[string]map[string]any{}
		for _, et := range []string{"TRANSACTION.SUCCESS", "REFUND.SUCCESS"} {
			var m map[string]any
			if err := json.Unmarshal(samples.All()[et], &m); err != nil {
				panic(err)
			}
			templates[et] = m
		}
	})
	eventType = "TRANSACTION.SUCCESS"
	if i%5 == 4 {
		eventType = "REFUND.SUCCESS"
	}
	m := make(map[string]any, len(templates[eventType]))
	for k, v := range templates[eventType] {
		m[k] = v
	}
	m["mchid"] = pipelinetest.MchID
	id := fmt.Sprintf("%s%08d", run, i)
	if eventType == "REFUND.SUCCESS" {
		m["refund_id"] = "5020" + id
		m["out_refund_no"] = "R" + id
	} else {
		m["transaction_id"] = "4200" + id
		m["out_trade_no"] = "T" + id
	}
	plain, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return eventType, plain
}

var runs atomic.Int64

// load is simulated WeChat Pay under steady traffic: every fact is notified, every fourth twice under two
// notification ids (WeChat re-notifies facts), and each notification is retried on any non-2xx answer at a
// short interval until it is acknowledged, like WeChat's own retries.
type load struct {
	t        *testing.T
	p        *pipelinetest.Pipeline
	a        *audit.Auditor
	url      string
	run      string
	interval time.Duration // between retries of one notification
	give     time.Duration // how long one notification is retried before the sender gives up
	gaveUp   atomic.Int64
	sent     atomic.Int64 // notifications (not requests)
}

func newLoad(t *testing.T, p *pipelinetest.Pipeline, a *audit.Auditor) *load {
	return &load{t: t, p: p, a: a, url: p.URL, run: fmt.Sprintf("%04d%06d", runs.Add(1), time.Now().UnixMilli()%1e6),
		interval: 50 * time.Millisecond, give: 90 * time.Second}
}

// start sends facts [from, to) from workers concurrent senders and returns a function that waits until
// every notification was acknowledged or given up on.
func (l *load) start(ctx context.Context, from, to, workers int) (wait func()) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				l.fact(ctx, i)
			}
		}()
	}
	go func() {
		defer close(jobs)
		for i := from; i < to; i++ {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	return wg.Wait
}

func (l *load) fact(ctx context.Context, i int) {
	eventType, plain := factPlaintext(l.run, i)
	fact, err := audit.FactOf(eventType, plain)
	if err != nil {
		panic(err)
	}
	copies := 1
	if i%4 == 3 {
		copies = 2
	}
	for c := 0; c < copies; c++ {
		n, err := l.p.Platform.Build(eventType, plain, wechatsim.Options{})
		if err != nil {
			panic(err)
		}
		l.a.Expect(n.ID, fact, true)
		l.sent.Add(1)
		dctx, cancel := context.WithTimeout(ctx, l.give)
		code, _ := l.a.Deliver(dctx, l.url, n, l.interval)
		cancel()
		if code != http.StatusNoContent {
			l.gaveUp.Add(1)
		}
	}
}

// notifications is how many notifications facts [0, n) make.
func notifications(n int) int { return n + n/4 }

// settle waits until every accepted fact is published or dead-lettered and the durable consumer has
// nothing pending, then audits once more and fails the test unless the report is clean.
func settle(t *testing.T, p *pipelinetest.Pipeline, a *audit.Auditor, timeout time.Duration, logs func() string) audit.Report {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var r audit.Report
	var err error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		r, err = a.Check(ctx, p.JetStream())
		cancel()
		if err == nil && len(r.Lost) == 0 && p.Settled() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled after %s (%v): %s\nlog tail:\n%s", timeout, err, r, tail(logs(), 3000))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The report that counts is read once everything has settled. A cluster test may have just
	// restarted the server this connection uses: a JetStream request can find no responder for a
	// moment, so a failed read is tried again until the deadline.
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		r, err = a.Check(ctx, p.JetStream())
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("settled in %s; audit: %s", time.Since(start).Round(time.Millisecond), r)
	if !r.Clean() {
		t.Errorf("audit is not clean: %s\nlog tail:\n%s", r, tail(logs(), 3000))
	}
	return r
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// waitFor polls cond every interval until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	wait.For(t, what, cond, wait.Options{Timeout: timeout, Interval: interval})
}

// eventCount is the number of messages in WECHATPAY_EVENTS, or 0 while it cannot be read.
func eventCount(p *pipelinetest.Pipeline) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s, err := p.JetStream().Stream(ctx, topology.EventsStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// onlyCodes fails the test if any answer had a status outside allowed (0 is "no answer").
func onlyCodes(t *testing.T, a *audit.Auditor, allowed ...int) {
	t.Helper()
	ok := map[int]bool{}
	for _, c := range allowed {
		ok[c] = true
	}
	for code, n := range a.Codes() {
		if !ok[code] {
			t.Errorf("%d answers with status %d; allowed: %v", n, code, allowed)
		}
	}
}

// scrape returns the text of a /metrics endpoint.
func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue reads one sample (name with labels exactly as exposed) from a /metrics text; -1 if absent.
func metricValue(text, series string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// programs builds cmd/receiver and cmd/consumer once per test binary, into a directory TestMain removes.
var (
	programsOnce sync.Once
	programsDir  string
	programsErr  error
)

func programs(t *testing.T) string {
	t.Helper()
	programsOnce.Do(func() {
		start := time.Now()
		if programsDir, programsErr = os.MkdirTemp("", "faulttest-bin-"); programsErr != nil {
			return
		}
		programsErr = pipelinetest.BuildPrograms(programsDir, module+"/cmd/receiver", module+"/cmd/consumer")
		t.Logf("built the receiver and consumer programs in %s", time.Since(start).Round(time.Millisecond))
	})
	if programsErr != nil {
		t.Fatalf("build programs: %v", programsErr)
	}
	return programsDir
}

func cleanupPrograms() {
	if programsDir != "" {
		_ = os.RemoveAll(programsDir)
	}
}

// ackPending is the durable consumer's count of delivered, unacknowledged messages (-1 if unknown).
func ackPending(p *pipelinetest.Pipeline) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := p.JetStream().Consumer(ctx, topology.InboundStream, topology.ConsumerName)
	if err != nil {
		return -1
	}
	info, err := c.Info(ctx)
	if err != nil {
		return -1
	}
	return info.NumAckPending
}
