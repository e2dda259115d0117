package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// suite runs the measurements in order and keeps their results for the ratio table.
type suite struct {
	ctx    context.Context
	o      options
	w      io.Writer
	cmd    string
	p      *wechatsim.Platform
	f      *factory
	prof   *os.File
	latest []*sut // systems in the order they last ran a round

	res results
}

// results are what the ratio table and the smoke test read.
type results struct {
	GoBench  []goBenchResult
	Sat      map[string]satSummary  // by system name
	Open     map[string]openSummary // by system name
	Pipeline *pipelineResult
	// PipelineAnswerRPS is how fast the receiver answered during the pipeline's saturation rounds.
	PipelineAnswerRPS []float64
	Backlog           *backlogResult
	Capacity          *capacityResult
	Failures          []string // requests that were not answered 204, runs that did not complete
}

type goBenchResult struct {
	Name   string
	Result testing.BenchmarkResult
}

// satSummary is a system's saturation throughput: the median of its rounds (for the pipeline, events
// published per second end to end), and process CPU per request over all rounds.
type satSummary struct {
	RPS    float64
	Rounds []float64
	Conc   int
	CPU    time.Duration
	Cores  float64 // CPU time per wall time over the rounds: what this process (+ redis) got of the machine
	// NATSCPU is the part of CPU a nats-server child spent (0 when nats-server is embedded).
	NATSCPU time.Duration
}

type openSummary struct {
	Rate     float64
	Cores    float64
	Lat      stats
	CPU      time.Duration // per request
	Non204   int
	Errors   int
	MaxLag   time.Duration
	FirstErr string
}

type pipelineResult struct {
	Open       openSummary
	E2E        stats
	Missing    int
	Events     uint64 // in WECHATPAY_EVENTS after all phases
	WantEvents int
	DLQ        uint64
}

type backlogResult struct {
	N, Distinct     int
	FillRPS         float64
	ToLastFact      time.Duration
	ToSettled       time.Duration
	CPU             time.Duration // per notification, this process + redis-server
	Events          uint64
	SeenDistinct    int
	Duplicates      int
	DLQ             uint64
	InboundMessages uint64
}

func (b backlogResult) OK() bool {
	return b.Events == uint64(b.Distinct) && b.SeenDistinct == b.Distinct && b.Duplicates == 0 && b.DLQ == 0
}

func newSuite(ctx context.Context, o options, w io.Writer, cmd string) (*suite, error) {
	s := &suite{ctx: ctx, o: o, w: w, cmd: cmd,
		res: results{Sat: map[string]satSummary{}, Open: map[string]openSummary{}}}
	var err error
	if s.p, err = wechatsim.NewPlatform(mchid); err != nil {
		return nil, err
	}
	if s.f, err = newFactory(s.p); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *suite) printf(format string, a ...any) { fmt.Fprintf(s.w, format, a...) }

// run runs every selected part; a part that cannot run is reported and the others still run.
func (s *suite) run() (*results, error) {
	s.header()
	parts := []struct {
		name string
		run  func() error
	}{
		{"gobench", s.goBenchmarks},
		{"compare", s.compare},
		{"backlog", s.backlogDrain},
		{"capacity", s.capacity},
	}
	for _, pt := range parts {
		if pt.name != "compare" && !s.o.suites[pt.name] {
			continue
		}
		if err := s.ctx.Err(); err != nil {
			return &s.res, err
		}
		start := time.Now()
		s.printf("\n== %s (load average %s)\n", pt.name, loadAvg())
		if err := pt.run(); err != nil {
			s.fail("%s: %v", pt.name, err)
		}
		s.printf("   (%s took %s)\n", pt.name, time.Since(start).Round(time.Second))
	}
	s.ratios()
	s.printf("\nload average at end: %s\nfinished: %s\n", loadAvg(), time.Now().UTC().Format(time.RFC3339))
	if len(s.res.Failures) > 0 {
		return &s.res, fmt.Errorf("%d problem(s):\n  %s", len(s.res.Failures), strings.Join(s.res.Failures, "\n  "))
	}
	return &s.res, nil
}

func (s *suite) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	s.res.Failures = append(s.res.Failures, msg)
	s.printf("   PROBLEM: %s\n", msg)
}

func (s *suite) header() {
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	s.printf("wxpay-events benchmark suite\n")
	s.printf("started:      %s\n", time.Now().UTC().Format(time.RFC3339))
	s.printf("command:      %s\n", s.cmd)
	s.printf("machine:      %s, %d CPUs (GOMAXPROCS %d), %s, linux %s, host %s\n",
		runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), strings.TrimSpace(string(kernel)), host)
	s.printf("go:           %s\n", runtime.Version())
	s.printf("load average: %s (at start)\n", loadAvg())
	s.printf("options:      rounds=%d conc=%d max-conns=%d sat=%d duration=%s load=%.2f rate=%.0f delays=%v inline-pool=%d backlog=%d retry-every=%d workers=%d batch=%d nats=%s capacity-keys=%d capacity-per-sample=%d smoke=%v\n",
		s.o.rounds, s.o.conc, s.o.maxConns, s.o.sat, s.o.duration, s.o.load, s.o.rate, s.o.delays, s.o.inlinePool, s.o.backlog, s.o.retryEvery, s.o.workers,
		s.o.batch, s.o.nats, s.o.capacityKeys, s.o.capacityPerSample, s.o.smoke)
	if s.o.nats == natsProcess {
		s.printf("notes:        the load generator, HTTP servers, receiver and consumer run in this process; nats-server (JetStream\n")
		s.printf("              file storage in %s) and redis-server are child processes.\n", os.TempDir())
		s.printf("              CPU/req is CPU time of this process (getrusage) + /proc/<pid>/stat of nats-server (and redis-server\n")
		s.printf("              for the pipeline) over the measured requests; it includes the load generator: the null row is HTTP\n")
		s.printf("              + load generator alone.\n")
	} else {
		s.printf("notes:        everything runs in this one process (load generator, HTTP servers, receiver, consumer and the\n")
		s.printf("              embedded nats-server, JetStream file storage in %s); redis-server is a child process.\n", os.TempDir())
		s.printf("              CPU/req is process CPU time (getrusage; + /proc/<redis pid>/stat for the pipeline) over the\n")
		s.printf("              measured requests, so it includes the load generator: the null row is HTTP + load generator alone.\n")
	}
	s.printf("              Open-loop latencies run from each request's scheduled send time to its answer.\n")
}

// startProfile writes a CPU profile into path until stopProfile.
func (s *suite) startProfile(path string) {
	if s.o.cpuProfile == "" || s.prof != nil {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		s.fail("cpuprofile: %v", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		s.fail("cpuprofile: %v", err)
		return
	}
	s.prof = f
	s.printf("   (CPU profile of %s into %s)\n", s.o.profile, path)
}

// profiled reports whether -profile names u (inline means inline without a downstream step).
func (s *suite) profiled(u *sut) bool {
	return u.name == s.o.profile || s.o.profile == "inline" && u.name == inlineName(0, 0)
}

func (s *suite) stopProfile() {
	if s.prof == nil {
		return
	}
	pprof.StopCPUProfile()
	_ = s.prof.Close()
	s.prof = nil
}

// poolSize is how many notifications a stateless system cycles through.
func (s *suite) poolSize() int { return min(s.o.sat, 4000) }

// openRate is the offered load for a system whose saturation throughput is sat.
func (s *suite) openRate(sat float64) float64 {
	if s.o.rate > 0 {
		return s.o.rate
	}
	return math.Max(1, s.o.load*sat)
}

// sut is one system under test; every selected system runs for the whole comparison, so that their
// saturation rounds can alternate and a neighbour's burst on the shared machine hits all of them alike.
type sut struct {
	name    string
	url     string
	unique  bool          // each request must carry a notification the system has not stored yet
	delay   time.Duration // the inline handler's downstream step
	cpu     cpuMeter      // its nats-server child's share is reported on its own
	pl      *pipeline     // end to end: a round ends when the last event is published
	stop    func()
	rounds  []float64 // throughput of each saturation round
	reqs    int
	cpuSum  time.Duration
	natsSum time.Duration
	wall    time.Duration
	conc    int
}

// notes returns n notifications for one run: new ones for a stateful system, else a fresh pool.
func (s *suite) notes(u *sut, n int) ([]note, error) {
	if u.unique {
		return s.f.fresh(n)
	}
	return s.f.fresh(min(n, s.poolSize()))
}

// compare starts the selected systems, warms them, runs the interleaved saturation rounds and then
// each system's fixed-rate run.
func (s *suite) compare() error {
	var suts []*sut
	defer func() {
		for i := len(suts) - 1; i >= 0; i-- {
			suts[i].stop()
		}
	}()
	add := func(u *sut, err error) error {
		if err != nil {
			return err
		}
		if u.conc == 0 {
			u.conc = s.o.conc
		}
		suts = append(suts, u)
		return nil
	}
	if s.o.suites["null"] {
		if err := add(s.handlerSUT("null", nullHandler())); err != nil {
			return err
		}
	}
	if s.o.suites["bare"] {
		v, err := newVerifier(s.p)
		if err != nil {
			return err
		}
		if err := add(s.handlerSUT("bare", bareHandler(v))); err != nil {
			return err
		}
	}
	if s.o.suites["receiver"] {
		if err := add(s.receiverSUT()); err != nil {
			return err
		}
	}
	if s.o.suites["inline"] {
		for _, d := range s.o.delays {
			h, err := inlineHandler(s.p, d, 0)
			if err != nil {
				return err
			}
			u, err := s.handlerSUT(inlineName(d, 0), h)
			if err == nil {
				u.delay = d
			}
			if err := add(u, err); err != nil {
				return err
			}
		}
	}
	if s.o.suites["pipeline"] {
		if err := add(s.pipelineSUT()); err != nil {
			return err
		}
	}
	if len(suts) == 0 {
		return nil
	}

	// Warm-up: connections, goroutine stacks, stream files, Redis scripts.
	for _, u := range suts {
		s.sizeClients(u)
		n := max(2*u.conc, s.o.sat/(10*s.o.rounds))
		notes, err := s.notes(u, n)
		if err != nil {
			return err
		}
		if err := s.round(u, notes, n, false); err != nil {
			return fmt.Errorf("%s warm-up: %w", u.name, err)
		}
	}
	s.printf("   saturation: %d alternating rounds of %d requests per system, closed loop\n", s.o.rounds, s.o.sat/s.o.rounds)
	for r := range s.o.rounds {
		for _, u := range suts {
			if err := s.ctx.Err(); err != nil {
				return err
			}
			s.sizeClients(u)
			// Signing is WeChat's cost: notifications are built before the clock (and the profile) starts.
			notes, err := s.notes(u, s.o.sat/s.o.rounds)
			if err != nil {
				return err
			}
			if s.profiled(u) && r == s.o.rounds-1 {
				s.startProfile(s.o.cpuProfile)
			}
			err = s.round(u, notes, s.o.sat/s.o.rounds, true)
			s.stopProfile()
			if err != nil {
				s.fail("%s round %d: %v", u.name, r+1, err)
			}
		}
	}
	for _, u := range suts {
		sum := satSummary{Conc: u.conc, Rounds: u.rounds, RPS: median(u.rounds)}
		if u.reqs > 0 {
			sum.CPU = u.cpuSum / time.Duration(u.reqs)
			sum.NATSCPU = u.natsSum / time.Duration(u.reqs)
			sum.Cores = u.cpuSum.Seconds() / u.wall.Seconds()
		}
		s.res.Sat[u.name] = sum
		natsShare := ""
		if u.cpu.nats != 0 {
			natsShare = fmt.Sprintf(" (%s of it nats-server's)", us(sum.NATSCPU))
		}
		s.printf("   %-22s saturation %8.0f req/s (median; rounds %s)  C=%-4d %6s CPU/req%s, %.2f cores\n", u.name, sum.RPS, fmtRounds(u.rounds), u.conc, us(sum.CPU), natsShare, sum.Cores)
	}

	// Fixed rate: each at its own load, except that inline at the longest D gets the receiver's.
	longest := slices.Max(append([]time.Duration{0}, s.o.delays...))
	for _, u := range suts {
		rate := s.openRate(s.res.Sat[u.name].RPS)
		if r, ok := s.res.Sat["receiver"]; ok && u.delay == longest && u.delay > 0 {
			rate = s.openRate(r.RPS)
		}
		if err := s.fixedRate(u, rate); err != nil {
			s.fail("%s open loop: %v", u.name, err)
		}
		// The receiver's tail against the floor's at the same offered load, right after it (issue #16):
		// at its own 80 % bare runs at twice the rate, and a tail grows with the load.
		if u.name == "receiver" {
			if b := bareSUT(suts); b != nil {
				if err := s.fixedRateAs(b, bareAtReceiverRate, rate); err != nil {
					s.fail("%s open loop: %v", bareAtReceiverRate, err)
				}
			}
		}
	}
	if s.o.inlinePool > 0 && longest > 0 {
		if err := s.inlinePool(longest); err != nil {
			s.fail("inline pool: %v", err)
		}
	}
	for _, u := range suts {
		if u.pl != nil {
			s.checkPipeline(u.pl)
		}
	}
	return nil
}

// maxClients bounds connections to one system: each costs two descriptors in this process, and the
// descriptor limit here is 20,000.
const maxClients = 6000

// openWorkers is how many requests the open loop lets be in flight: -max-conns, or twice what a handler
// that waits d needs at rate (Little's law), so that the generator is never what makes requests wait.
func (s *suite) openWorkers(rate float64, d time.Duration) int {
	return min(maxClients, max(s.o.maxConns, int(math.Ceil(2*rate*d.Seconds()))))
}

// sizeClients gives a waiting inline handler enough clients to be busy (Little's law, with margin).
func (s *suite) sizeClients(u *sut) {
	if u.delay == 0 || s.o.smoke {
		return
	}
	base := 0.0
	for _, n := range []string{inlineName(0, 0), "bare"} {
		if r := s.latestRound(n); r > 0 {
			base = r
			break
		}
	}
	if base > 0 {
		u.conc = min(maxClients, max(s.o.conc, int(math.Ceil(1.5*base*u.delay.Seconds()))))
	}
}

func (s *suite) latestRound(name string) float64 {
	for _, u := range s.latest {
		if u.name == name && len(u.rounds) > 0 {
			return u.rounds[len(u.rounds)-1]
		}
	}
	return 0
}

// round runs one closed-loop saturation round of n requests on u, cycling through notes (a stateless
// system's pool may be smaller than a round; a stateful one gets a note per request).
func (s *suite) round(u *sut, notes []note, n int, record bool) error {
	s.track(u)
	var rps float64
	var cpu, wall time.Duration
	var r closedResult
	var natsUsed time.Duration
	if u.pl != nil {
		// End to end: the clock runs from the first POST to the last published event.
		u.pl.tracker.expect(notes)
		t0, c0, n0 := time.Now(), u.cpu.now(), u.cpu.natsNow()
		r = closedLoop(u.url, notes, n, 0, u.conc, u.cpu)
		if err := u.pl.tracker.waitDistinct(n, time.Minute+time.Duration(n)*10*time.Millisecond); err != nil {
			return err
		}
		last := time.Unix(0, u.pl.tracker.last.Load())
		cpu, natsUsed = u.cpu.now()-c0, u.cpu.natsNow()-n0
		wall = last.Sub(t0)
		rps = float64(n) / wall.Seconds()
		u.pl.wantEvents += n
		if record {
			s.res.PipelineAnswerRPS = append(s.res.PipelineAnswerRPS, r.RPS())
		}
	} else {
		r = closedLoop(u.url, notes, n, n/10, u.conc, u.cpu)
		rps, cpu, natsUsed, wall = r.RPS(), r.CPU, r.NATSCPU, r.Elapsed
		n = r.Requests
	}
	if r.Non204+r.Errors > 0 {
		return fmt.Errorf("%d answers not 204, %d errors (first: %s)", r.Non204, r.Errors, r.FirstErr)
	}
	if record {
		u.rounds = append(u.rounds, rps)
		u.reqs += n
		u.cpuSum += cpu
		u.natsSum += natsUsed
		u.wall += wall
	}
	return nil
}

// track remembers u for latestRound.
func (s *suite) track(u *sut) {
	if !slices.Contains(s.latest, u) {
		s.latest = append(s.latest, u)
	}
}

// bareAtReceiverRate names the open-loop run of bare at the receiver's fixed rate.
const bareAtReceiverRate = "bare at receiver rate"

func bareSUT(suts []*sut) *sut {
	for _, u := range suts {
		if u.name == "bare" {
			return u
		}
	}
	return nil
}

// fixedRate runs the open loop on u and records it under u's name.
func (s *suite) fixedRate(u *sut, rate float64) error { return s.fixedRateAs(u, u.name, rate) }

// fixedRateAs runs the open loop on u and records it under name.
func (s *suite) fixedRateAs(u *sut, name string, rate float64) error {
	n := max(1, int(rate*s.o.duration.Seconds()))
	workers := min(n, s.openWorkers(rate, u.delay)) // openLoop starts no more workers than requests
	notes, warm := []note(nil), []note(nil)
	if u.unique { // one warm-up notification per worker, never sent again
		all, err := s.f.fresh(n + workers)
		if err != nil {
			return err
		}
		notes, warm = all[:n], all[n:]
	} else {
		pool, err := s.notes(u, n)
		if err != nil {
			return err
		}
		notes, warm = pool, pool
	}
	if u.pl != nil {
		u.pl.tracker.expect(notes)
		u.pl.wantEvents += len(warm)
	}
	if s.profiled(u) && name == u.name {
		s.startProfile(s.o.cpuProfile + ".open")
	}
	r := openLoop(u.url, notes, warm, rate, s.o.duration, workers, u.cpu)
	s.stopProfile()
	sum := openSummary{Rate: rate, Lat: summarize(r.Lat), CPU: r.CPUPerReq(), Non204: r.Non204, Errors: r.Errors, MaxLag: r.MaxLag, FirstErr: r.FirstErr,
		Cores: r.CPU.Seconds() / r.Elapsed.Seconds()}
	s.res.Open[name] = sum
	s.printf("   %-22s open loop %7.0f req/s: %s  %s CPU/req, %.2f cores; generator max lag %s\n",
		name, rate, sum.Lat, us(sum.CPU), sum.Cores, ms(r.MaxLag))
	if u.pl != nil {
		if err := u.pl.tracker.waitDistinct(n, time.Minute+time.Duration(n)*10*time.Millisecond); err != nil {
			s.fail("pipeline open loop: %v", err)
		}
		u.pl.wantEvents += n
		e2e, missing := u.pl.tracker.e2e(r.Sched)
		p := &pipelineResult{Open: sum, E2E: summarize(e2e), Missing: missing}
		s.res.Pipeline = p
		s.printf("   %-22s                         POST → event %s, %d missing\n", "", p.E2E, missing)
	}
	if r.Non204+r.Errors > 0 {
		return fmt.Errorf("%d answers not 204, %d errors (first: %s)", r.Non204, r.Errors, r.FirstErr)
	}
	return nil
}

// checkPipeline counts what the pipeline published: one event per notification, nothing dead-lettered.
func (s *suite) checkPipeline(pl *pipeline) {
	p := s.res.Pipeline
	if p == nil {
		p = &pipelineResult{}
		s.res.Pipeline = p
	}
	p.WantEvents = pl.wantEvents
	if err := waitUntil(30*time.Second, pl.settled); err != nil {
		s.fail("pipeline: consumer not settled: %v", err)
	}
	var err error
	if p.Events, err = pl.streamCount(topology.EventsStream); err != nil {
		s.fail("pipeline: %v", err)
	}
	if p.DLQ, err = pl.streamCount(topology.DLQStream); err != nil {
		s.fail("pipeline: %v", err)
	}
	s.printf("   pipeline: WECHATPAY_EVENTS holds %d events for %d notifications; DLQ %d\n", p.Events, p.WantEvents, p.DLQ)
	if p.Events != uint64(p.WantEvents) || p.DLQ != 0 || p.Missing != 0 {
		s.fail("pipeline: %d events for %d notifications, %d missing, DLQ %d", p.Events, p.WantEvents, p.Missing, p.DLQ)
	}
}

func (s *suite) handlerSUT(name string, h http.Handler) (*sut, error) {
	srv, err := serve(h)
	if err != nil {
		return nil, err
	}
	return &sut{name: name, url: srv.URL, stop: func() {
		if err := srv.stop(); err != nil {
			s.fail("%s stopped with %v", name, err)
		}
	}}, nil
}

// receiverSUT is receiver.New against its own embedded nats-server.
func (s *suite) receiverSUT() (*sut, error) {
	n, err := startNATS(s.o.nats)
	if err != nil {
		return nil, err
	}
	r, err := startReceiver(n.URL(), s.p)
	if err != nil {
		n.Stop()
		return nil, err
	}
	return &sut{name: "receiver", url: r.URL, unique: true, cpu: cpuMeter{nats: n.Pid()}, stop: func() {
		if err := r.stop(); err != nil {
			s.fail("receiver stopped with %v", err)
		}
		n.Stop()
	}}, nil
}

func (s *suite) pipelineSUT() (*sut, error) {
	pl, err := startPipeline(s.p, s.pipelineConfig(), true)
	if err != nil {
		return nil, err
	}
	return &sut{name: "pipeline", url: pl.URL(), unique: true, pl: pl, cpu: pl.cpu(), stop: pl.stop}, nil
}

func (s *suite) pipelineConfig() pipelineConfig {
	return pipelineConfig{workers: s.o.workers, batch: s.o.batch, nats: s.o.nats}
}

// inlinePool runs inline at the longest D with a bounded downstream at the receiver's load.
func (s *suite) inlinePool(d time.Duration) error {
	rate := s.o.rate
	if r, ok := s.res.Sat["receiver"]; ok {
		rate = s.openRate(r.RPS)
	}
	if rate <= 0 {
		return fmt.Errorf("no receiver rate to compare with")
	}
	name := inlineName(d, s.o.inlinePool)
	h, err := inlineHandler(s.p, d, s.o.inlinePool)
	if err != nil {
		return err
	}
	srv, err := serve(h)
	if err != nil {
		return err
	}
	defer func() {
		if err := srv.stop(); err != nil {
			s.fail("%s stopped with %v", name, err)
		}
	}()
	notes, err := s.f.fresh(s.poolSize())
	if err != nil {
		return err
	}
	s.printf("   %s: downstream capacity %d/%s = %.0f req/s\n", name, s.o.inlinePool, d, float64(s.o.inlinePool)/d.Seconds())
	r := openLoop(srv.URL, notes, notes, rate, s.o.duration, s.openWorkers(rate, d), cpuMeter{})
	sum := openSummary{Rate: rate, Lat: summarize(r.Lat), CPU: r.CPUPerReq(), Non204: r.Non204, Errors: r.Errors, MaxLag: r.MaxLag, FirstErr: r.FirstErr}
	s.res.Open[name] = sum
	// Overload is what this row shows: failures are its result, not a harness problem.
	s.printf("   %-22s open loop %7.0f req/s: %s  %d not 204, %d errors (client timeout 30s)\n", name, rate, sum.Lat, r.Non204, r.Errors)
	return nil
}

func inlineName(d time.Duration, pool int) string {
	n := fmt.Sprintf("inline D=%dms", d.Milliseconds())
	if pool > 0 {
		n += fmt.Sprintf(" pool=%d", pool)
	}
	return n
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtRounds(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, "/")
}

// backlogDrain stores a backlog with the consumer stopped, then starts it and times the drain.
func (s *suite) backlogDrain() error {
	pl, err := startPipeline(s.p, s.pipelineConfig(), false)
	if err != nil {
		return err
	}
	defer pl.stop()
	cpu := pl.cpu()
	res := &backlogResult{N: s.o.backlog}
	s.res.Backlog = res

	// Fill through the receiver, in chunks, so that timestamps stay within the 5-minute skew.
	var all []note
	var fill time.Duration
	const chunk = 10000
	for len(all) < s.o.backlog {
		k := min(chunk, s.o.backlog-len(all))
		notes, distinct, err := s.f.withRetries(k, s.o.retryEvery)
		if err != nil {
			return err
		}
		t0 := time.Now()
		r := closedLoop(pl.URL(), notes, k, 0, s.o.conc, cpu)
		fill += time.Since(t0)
		if r.Non204+r.Errors > 0 {
			return fmt.Errorf("fill: %d answers not 204, %d errors (first: %s)", r.Non204, r.Errors, r.FirstErr)
		}
		all = append(all, notes...)
		res.Distinct += distinct
	}
	res.FillRPS = float64(len(all)) / fill.Seconds()
	if res.InboundMessages, err = pl.streamCount(topology.InboundStream); err != nil {
		return err
	}
	s.printf("   backlog: %d notifications (%d distinct facts, every %d-th a retry under a new id) stored at %.0f req/s; WECHATPAY_INBOUND holds %d\n",
		res.N, res.Distinct, s.o.retryEvery, res.FillRPS, res.InboundMessages)

	pl.tracker.expect(all)
	t0, c0 := time.Now(), cpu.now()
	if err := pl.startConsumer(); err != nil {
		return err
	}
	if err := pl.tracker.waitDistinct(res.Distinct, time.Minute+time.Duration(res.N)*10*time.Millisecond); err != nil {
		s.fail("backlog: %v", err)
	}
	res.ToLastFact = time.Unix(0, pl.tracker.last.Load()).Sub(t0)
	if err := waitUntil(2*time.Minute, pl.settled); err != nil {
		s.fail("backlog: consumer not settled: %v", err)
	}
	res.ToSettled = time.Since(t0)
	res.CPU = (cpu.now() - c0) / time.Duration(res.N)
	_, res.SeenDistinct, res.Duplicates = pl.tracker.counts()
	if res.Events, err = pl.streamCount(topology.EventsStream); err != nil {
		return err
	}
	if res.DLQ, err = pl.streamCount(topology.DLQStream); err != nil {
		return err
	}
	s.printf("   backlog: drained %d notifications in %s (%.0f notifications/s; last new fact after %s), %s CPU/notification incl. redis-server\n",
		res.N, res.ToSettled.Round(time.Millisecond), float64(res.N)/res.ToSettled.Seconds(), res.ToLastFact.Round(time.Millisecond), us(res.CPU))
	s.printf("   backlog: WECHATPAY_EVENTS %d events for %d distinct facts; reader saw %d distinct, %d duplicates; DLQ %d\n",
		res.Events, res.Distinct, res.SeenDistinct, res.Duplicates, res.DLQ)
	if !res.OK() {
		s.fail("backlog: duplicate or loss: %d events for %d facts, %d duplicates, DLQ %d", res.Events, res.Distinct, res.Duplicates, res.DLQ)
	}
	return nil
}

func waitUntil(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// goBenchmarks runs the Go benchmarks of the handler paths through testing.Benchmark.
func (s *suite) goBenchmarks() error {
	// Embedded whatever -nats says: a Go benchmark reads one process's allocations and CPU, and its
	// figures have always included the server's.
	n, err := startNATS(natsEmbedded)
	if err != nil {
		return err
	}
	defer n.Stop()
	g := newGoBench(s.p, s.f, n)
	// testing.Benchmark reads -test.benchtime; outside `go test` the flag exists only after testing.Init.
	testing.Init()
	prev := flag.Lookup("test.benchtime").Value.String()
	if err := flag.Set("test.benchtime", s.o.benchtime); err != nil {
		return fmt.Errorf("-benchtime: %w", err)
	}
	defer func() { _ = flag.Set("test.benchtime", prev) }()
	for _, b := range []struct {
		name string
		fn   func(*testing.B)
	}{
		{"BareVerify", g.benchBareVerify},
		{"InlineSDK", g.benchInlineSDK},
		{"ReceiverHandler", g.benchReceiverHandler},
		{"ReceiverHandlerParallel", g.benchReceiverHandlerParallel},
		{"StepVerify", g.benchStepVerify},
		{"StepEnvelope", g.benchStepEnvelope},
		{"StepDecrypt", g.benchStepDecrypt},
		{"StepEvent", g.benchStepEvent},
	} {
		r := testing.Benchmark(b.fn)
		if r.N == 0 {
			s.fail("Benchmark%s failed (run `go test -run '^$' -bench %s ./bench` for its message)", b.name, b.name)
			continue
		}
		s.res.GoBench = append(s.res.GoBench, goBenchResult{Name: b.name, Result: r})
		s.printf("   Benchmark%-26s %s\t%s\n", b.name+fmt.Sprintf("-%d", runtime.GOMAXPROCS(0)), r.String(), r.MemString())
	}
	return nil
}
