// Command bench measures the receiver against the bare floor (verify and answer) and against the inline
// wechatpay-go handler most merchants run, and the whole pipeline end to end, in one process on one
// machine, and prints the ratios. See BENCHMARKS.md for the command and the last results.
//
//	go run ./bench -suite all -out bench/results/$(date +%F).txt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/config"
)

func main() {
	if dir := os.Getenv(natsChildEnv); dir != "" {
		os.Exit(serveNATSChild(dir))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args, os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(1)
	}
}

// suiteNames are the parts of the suite, in the order they run.
var suiteNames = []string{"gobench", "null", "bare", "receiver", "inline", "pipeline", "backlog", "capacity"}

// options are the driver's flags.
type options struct {
	suites     map[string]bool
	out        string
	smoke      bool
	rounds     int
	conc       int
	maxConns   int
	benchtime  string
	sat        int
	duration   time.Duration
	load       float64
	rate       float64
	delays     []time.Duration
	inlinePool int
	backlog    int
	retryEvery int
	workers    int
	batch      int
	nats       string
	// capacityKeys and capacityPerSample size the capacity part: facts per Redis key format, and
	// notifications per simulator sample.
	capacityKeys      int
	capacityPerSample int
	cpuProfile        string
	profile           string
	args              []string
}

func parseOptions(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(out)
	suite := fs.String("suite", "all", "comma-separated parts to run: all, or any of "+strings.Join(suiteNames, ", "))
	fs.StringVar(&o.out, "out", "", "also write the raw output to this file (e.g. bench/results/2025-01-31.txt)")
	fs.BoolVar(&o.smoke, "smoke", false, "tiny sizes: check that the harness works, in seconds (no meaningful figures)")
	fs.IntVar(&o.rounds, "rounds", 3, "saturation rounds per system; the systems alternate round by round and the median counts")
	fs.IntVar(&o.conc, "conc", 64, "concurrent clients of the closed-loop (saturation) runs")
	fs.IntVar(&o.maxConns, "max-conns", 256, "open-loop workers (connections) per system; a system that waits D gets at least 2×rate×D (requests beyond wait in the generator, their latency counted)")
	fs.StringVar(&o.benchtime, "benchtime", "1s", "run time or count (e.g. 2000x) of each Go benchmark")
	fs.IntVar(&o.sat, "sat", 30000, "requests per system over all saturation rounds (each round's first 10% are warm-up)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each open-loop (fixed-rate) run")
	fs.Float64Var(&o.load, "load", 0.8, "open-loop offered load as a fraction of the system's own saturation throughput")
	fs.Float64Var(&o.rate, "rate", 0, "fixed open-loop rate in requests/s for every system (0: -load × saturation)")
	delays := fs.String("delays", "0,20ms,200ms", "downstream step durations D of the inline handler")
	fs.IntVar(&o.inlinePool, "inline-pool", 200, "also run inline at the longest D with at most this many downstream steps at once (Tomcat's default of 200 threads); 0: skip")
	fs.IntVar(&o.backlog, "backlog", 100000, "notifications in the backlog the consumer drains")
	fs.IntVar(&o.retryEvery, "retry-every", 10, "every n-th backlog notification repeats an earlier business fact under a new id (a WeChat retry only Redis can catch); 0: none")
	fs.IntVar(&o.workers, "workers", config.DefaultConsumerWorkers, "consumer workers (CONSUMER_WORKERS)")
	fs.IntVar(&o.batch, "batch", config.DefaultConsumerBatch, "messages a consumer worker processes together (CONSUMER_BATCH)")
	fs.StringVar(&o.nats, "nats", natsProcess, "where nats-server runs: process (a child process of its own, its CPU counted) or embedded (in this process)")
	fs.IntVar(&o.capacityKeys, "capacity-keys", 100000, "capacity: business facts written to Redis per key format (bytes per fact = INFO used_memory delta / this)")
	fs.IntVar(&o.capacityPerSample, "capacity-per-sample", 200, "capacity: notifications per simulator sample sent through the pipeline (bytes per notification per stream)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the -profile system's saturation and fixed-rate runs to this file")
	fs.StringVar(&o.profile, "profile", "receiver", "which system -cpuprofile covers: null, bare, receiver, inline (D=0) or pipeline")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.smoke {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("sat", func() { o.sat = 40 })
		def("rounds", func() { o.rounds = 1 })
		def("benchtime", func() { o.benchtime = "20x" })
		def("conc", func() { o.conc = 8 })
		def("duration", func() { o.duration = 300 * time.Millisecond })
		def("rate", func() { o.rate = 50 })
		def("backlog", func() { o.backlog = 500 })
		def("workers", func() { o.workers = 8 })
		def("inline-pool", func() { o.inlinePool = 0 })
		def("capacity-keys", func() { o.capacityKeys = 2000 })
		def("capacity-per-sample", func() { o.capacityPerSample = 2 })
	}
	var errs []string
	o.suites = map[string]bool{}
	for _, s := range strings.Split(*suite, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "all":
			for _, n := range suiteNames {
				o.suites[n] = true
			}
		case contains(suiteNames, s):
			o.suites[s] = true
		default:
			errs = append(errs, fmt.Sprintf("-suite: unknown part %q (want all or %s)", s, strings.Join(suiteNames, ", ")))
		}
	}
	for _, d := range strings.Split(*delays, ",") {
		d = strings.TrimSpace(d)
		if d == "0" {
			o.delays = append(o.delays, 0)
			continue
		}
		v, err := time.ParseDuration(d)
		if err != nil || v < 0 {
			errs = append(errs, fmt.Sprintf("-delays: %q is not a duration such as 20ms", d))
			continue
		}
		o.delays = append(o.delays, v)
	}
	if o.conc < 1 {
		errs = append(errs, "-conc: must be at least 1")
	}
	if o.maxConns < o.conc {
		errs = append(errs, "-max-conns: must be at least -conc")
	}
	if o.rounds < 1 {
		errs = append(errs, "-rounds: must be at least 1")
	}
	if o.sat < 10*o.rounds {
		errs = append(errs, "-sat: must be at least 10 per round")
	}
	if o.load <= 0 || o.load > 1.5 {
		errs = append(errs, "-load: must be in (0, 1.5]")
	}
	if o.backlog < 1 {
		errs = append(errs, "-backlog: must be at least 1")
	}
	if o.workers < 1 {
		errs = append(errs, "-workers: must be at least 1")
	}
	if o.batch < 1 || o.batch > config.MaxConsumerBatch {
		errs = append(errs, fmt.Sprintf("-batch: must be 1 to %d", config.MaxConsumerBatch))
	}
	if o.nats != natsProcess && o.nats != natsEmbedded {
		errs = append(errs, "-nats: want process or embedded")
	}
	if o.capacityKeys < 1 || o.capacityPerSample < 1 {
		errs = append(errs, "-capacity-keys, -capacity-per-sample: must be at least 1")
	}
	if !contains([]string{"null", "bare", "receiver", "inline", "pipeline"}, o.profile) {
		errs = append(errs, "-profile: want null, bare, receiver, inline or pipeline")
	}
	if len(errs) > 0 {
		return o, errors.New(strings.Join(errs, "\n"))
	}
	o.args = args
	return o, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseOptions(args[1:], stdout)
	if err != nil {
		return err
	}
	w := stdout
	if o.out != "" {
		f, err := os.Create(o.out)
		if err != nil {
			return err
		}
		defer func() { _ = f.Close() }()
		w = io.MultiWriter(stdout, f)
	}
	cmd := "go run ./bench"
	for _, a := range args[1:] {
		cmd += " " + strconv.Quote(a)
	}
	s, err := newSuite(ctx, o, w, cmd)
	if err != nil {
		return err
	}
	_, err = s.run()
	return err
}
