package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

func init() { commands = append(commands, simulateCommand) }

// DefaultMchID is the simulated merchant of simulate and dev.
const DefaultMchID = "1900000100"

// defaultDevDir is where dev keeps its state, and where simulate looks for a platform by default.
const defaultDevDir = ".wxpay-dev"

// staleBy is how far in the past --stale stamps a notification: beyond the receiver's ±300 s.
const staleBy = 10 * time.Minute

type simOptions struct {
	url, mchid, platformDir, typ, plaintextFile, signWith string
	save                                                  string // --save DIR
	count, duplicate                                      int
	noRetry, probe, stale                                 bool
	timeScale                                             float64
	rate                                                  float64
	concurrency                                           int
	duration, timeout                                     time.Duration
}

// simKind is one kind of notification to send: a WeChat event type and the plaintext of its resource.
type simKind struct {
	name      string // sample name, or the event type
	eventType string
	plaintext []byte
	fresh     bool // give each fact new business ids
}

func simulateCommand(g *globals) *cobra.Command {
	var o simOptions
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Stand in for WeChat Pay: send signed, encrypted notifications to a receiver",
		Long: `simulate sends notifications exactly as WeChat Pay does: the resource encrypted with the APIv3 key
(AEAD_AES_256_GCM), the body signed with the platform key (SHA256-RSA over timestamp, nonce and body),
the Wechatpay-* headers set. Each notification describes a new business fact (fresh transaction_id,
refund_id, record_id, parking_id, …) unless --duplicate sends one fact under several notification ids.

Keys come from --platform-dir (written by "wxpayctl dev" or "wxpayctl simulate keys --out DIR"); without
it, from ./.wxpay-dev when that holds the merchant, else a throwaway platform is generated that no
receiver knows (useful only with --probe).

A notification not answered with a 2xx is retried on WeChat's schedule (15s, 15s, 30s, 3m, 10m, 20m,
30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h), divided by --time-scale. Exit 0 when every notification got a
2xx (with --probe or --stale: when every one was refused).

Load mode (--rate): open loop, requests scheduled at fixed intervals whatever the answers, latency
measured from the scheduled time, for --duration; it prints throughput, latency percentiles and the
answers by status code. Exit 1 when any request got no 2xx.`,
		Example: `  # one refund notification to the dev receiver
  wxpayctl simulate --type refund.succeeded

  # one of every event type, to a receiver elsewhere, with the keys dev wrote
  wxpayctl simulate --platform-dir .wxpay-dev --url https://pay.example.com/notify/1900000100

  # WeChat's retries against a receiver that is down, 600 times faster than real time
  wxpayctl simulate --type TRANSACTION.SUCCESS --time-scale 600

  # the same payment under 3 notification ids: one event must come out
  wxpayctl simulate --type payment.succeeded --duplicate 3

  # a signature probe and a stale notification: both must be refused (401)
  wxpayctl simulate --probe
  wxpayctl simulate --stale

  # 200 requests a second for 30 s, 16 connections, summary as JSON
  wxpayctl simulate --rate 200 --duration 30s --concurrency 16 -o json

  # keep what was sent, then check it as a captured request
  wxpayctl simulate --type refund.succeeded --save captures/
  wxpayctl verify --headers captures/<id>.headers --body captures/<id>.body --mchid 1900000100`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.simulate(cmd.Context(), &o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.url, "url", "", "the receiver's notify URL (default http://127.0.0.1:8080/notify/<mchid>)")
	fl.StringVar(&o.mchid, "mchid", DefaultMchID, "merchant id")
	fl.StringVar(&o.platformDir, "platform-dir", "", "directory with the simulated platform's keys (default ./.wxpay-dev when present)")
	fl.StringVar(&o.typ, "type", "all", "what to send: all (one per event type), samples (every sample variant), a domain type (refund.succeeded), a WeChat event type (REFUND.SUCCESS) or sample name (TRANSACTION.SUCCESS.global)")
	fl.StringVar(&o.plaintextFile, "plaintext", "", "send this JSON file as the decrypted resource (sent as is; --type names its event type)")
	fl.IntVar(&o.count, "count", 1, "notifications per type, each a new business fact")
	fl.IntVar(&o.duplicate, "duplicate", 1, "send each fact under this many notification ids")
	fl.BoolVar(&o.noRetry, "no-retry", false, "send each notification once, whatever the answer")
	fl.Float64Var(&o.timeScale, "time-scale", 1, "divide WeChat's retry waits by this (60: minutes become seconds)")
	fl.BoolVar(&o.probe, "probe", false, "send signature probes (WECHATPAY/SIGNTEST/…), which must be refused")
	fl.BoolVar(&o.stale, "stale", false, "sign 10 minutes in the past, which must be refused")
	fl.StringVar(&o.signWith, "sign-with", "public-key", "which platform key signs: public-key (PUB_KEY_ID_…) or certificate (its serial)")
	fl.Float64Var(&o.rate, "rate", 0, "load mode: requests per second (open loop)")
	fl.IntVar(&o.concurrency, "concurrency", 8, "load mode: requests in flight at most")
	fl.DurationVar(&o.duration, "duration", 10*time.Second, "load mode: how long to send")
	fl.DurationVar(&o.timeout, "timeout", wechatsim.DefaultTimeout, "per request (WeChat Pay waits 5s)")
	fl.StringVar(&o.save, "save", "", "write each notification's first request to DIR as <id>.headers and <id>.body, as wxpayctl verify reads them")
	cmd.AddCommand(simulateKeysCommand(g))
	return cmd
}

func (g *globals) simulate(ctx context.Context, o *simOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	kinds, err := simKinds(o.typ, o.plaintextFile)
	if err != nil {
		return err
	}
	p, err := simPlatform(o.platformDir, o.mchid, g.env.Stderr)
	if err != nil {
		return err
	}
	if o.url == "" {
		o.url = "http://127.0.0.1:8080/notify/" + o.mchid
	}
	key := wechatsim.SignWithPublicKeyID
	if o.signWith == "certificate" {
		key = wechatsim.SignWithCertificate
	}
	if o.rate > 0 {
		return g.simulateLoad(ctx, o, p, kinds, key)
	}
	return g.simulateOnce(ctx, o, p, kinds, key)
}

func (o *simOptions) check() error {
	switch {
	case o.count < 1:
		return usageError("--count %d: at least 1", o.count)
	case o.duplicate < 1:
		return usageError("--duplicate %d: at least 1", o.duplicate)
	case o.timeScale <= 0:
		return usageError("--time-scale %g: must be positive", o.timeScale)
	case o.signWith != "public-key" && o.signWith != "certificate":
		return usageError("--sign-with %q: public-key or certificate", o.signWith)
	case o.rate < 0:
		return usageError("--rate %g: must be positive", o.rate)
	case o.rate > 0 && (o.duration <= 0 || o.concurrency < 1):
		return usageError("load mode needs a positive --duration and --concurrency")
	case o.timeout <= 0:
		return usageError("--timeout %s: must be positive", o.timeout)
	case o.probe && o.stale:
		return usageError("--probe and --stale: choose one")
	}
	return nil
}

// simKinds resolves --type (and --plaintext) into what to send.
func simKinds(typ, plaintextFile string) ([]simKind, error) {
	all := samples.All()
	var custom []byte
	if plaintextFile != "" {
		b, err := readFile(plaintextFile)
		if err != nil {
			return nil, err
		}
		if !json.Valid(b) {
			return nil, usageError("--plaintext %s: not JSON", plaintextFile)
		}
		custom = b
	}
	if custom != nil {
		et := typ
		for _, m := range events.Mappings() {
			if m.Type == typ {
				et = m.EventType
			}
		}
		if et == "all" || et == "samples" || !isEventType(et) {
			return nil, usageError("--plaintext needs --type with one WeChat event type (e.g. REFUND.SUCCESS or PAYSCORE.USER_OPEN_SERVICE)")
		}
		return []simKind{{name: et, eventType: et, plaintext: custom}}, nil
	}
	switch typ {
	case "all":
		var out []simKind
		for _, m := range events.Mappings() {
			out = append(out, simKind{name: m.EventType, eventType: m.EventType, plaintext: all[m.EventType], fresh: true})
		}
		return out, nil
	case "samples":
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		slices.Sort(names)
		var out []simKind
		for _, n := range names {
			out = append(out, simKind{name: n, eventType: samples.EventType(n), plaintext: all[n], fresh: true})
		}
		return out, nil
	}
	for _, m := range events.Mappings() {
		if m.Type == typ {
			return []simKind{{name: m.EventType, eventType: m.EventType, plaintext: all[m.EventType], fresh: true}}, nil
		}
	}
	if plain, ok := all[typ]; ok {
		return []simKind{{name: typ, eventType: samples.EventType(typ), plaintext: plain, fresh: true}}, nil
	}
	var known []string
	for _, m := range events.Mappings() {
		known = append(known, m.Type)
	}
	if isEventType(typ) {
		return nil, usageError("--type %s has no sample: give its resource with --plaintext FILE", typ)
	}
	return nil, usageError("--type %q: use all, samples, a domain type (%s), a WeChat event type or a sample name", typ, strings.Join(known, ", "))
}

// isEventType reports whether s looks like a WeChat event type: dotted upper-case words.
func isEventType(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		upper, digit := r >= 'A' && r <= 'Z', r >= '0' && r <= '9'
		if !upper && !digit && r != '_' && r != '.' {
			return false
		}
	}
	return true
}

// saveCapture writes a request as wxpayctl verify reads a capture: the request line and header lines as curl
// -D or a proxy log writes them, and the raw body byte for byte.
func saveCapture(dir, url string, n wechatsim.Notification, h http.Header) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	path := "/"
	if u, err := neturl.Parse(url); err == nil && u.Path != "" {
		path = u.Path
	}
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\n", path)
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if err := os.WriteFile(filepath.Join(dir, n.ID+".headers"), []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, n.ID+".body"), n.Body, 0o600)
}

// simPlatform loads the simulated platform from dir, or from ./.wxpay-dev when dir is empty and that
// holds the merchant, or else generates a throwaway one.
func simPlatform(dir, mchid string, stderr io.Writer) (*wechatsim.Platform, error) {
	explicit := dir != ""
	if !explicit {
		dir = defaultDevDir
	}
	p, _, err := wechatsim.LoadPlatform(dir, mchid)
	switch {
	case err == nil:
		if !explicit {
			outf(stderr, "simulate: using the platform keys in %s\n", dir)
		}
		return p, nil
	case explicit || !errors.Is(err, fs.ErrNotExist):
		return nil, runtime(fmt.Errorf("load platform for %s from %s: %w (write one with: wxpayctl simulate keys --out %s)", mchid, dir, err, dir))
	}
	outf(stderr, "simulate: no --platform-dir and no %s: generated a throwaway platform that no receiver knows (its signatures will be refused)\n", defaultDevDir)
	p, err = wechatsim.NewPlatform(mchid)
	if err != nil {
		return nil, runtime(err)
	}
	return p, nil
}

// simResult is one notification sent in one-off mode.
type simResult struct {
	EventType string       `json:"event_type"`
	Sample    string       `json:"sample"`
	ID        string       `json:"id"`
	Delivered bool         `json:"delivered"` // a 2xx ended it
	Attempts  []simAttempt `json:"attempts"`
}

type simAttempt struct {
	N        int     `json:"n"`
	WaitedMS float64 `json:"waited_ms"`
	Status   int     `json:"status"`
	Latency  float64 `json:"latency_ms"`
	Error    string  `json:"error,omitempty"`
}

type simSummary struct {
	URL           string      `json:"url"`
	Notifications []simResult `json:"notifications"`
	Delivered     int         `json:"delivered"`
	Refused       int         `json:"refused"`
}

func (g *globals) simulateOnce(ctx context.Context, o *simOptions, p *wechatsim.Platform, kinds []simKind, key wechatsim.KeyKind) error {
	out := g.env.Stdout
	table := g.output != "json"
	expectRefusal := o.probe || o.stale
	sum := simSummary{URL: o.url, Notifications: []simResult{}}
	dopts := wechatsim.DeliverOptions{
		Retry: !o.noRetry && !expectRefusal, TimeScale: o.timeScale, Key: key, Probe: o.probe,
		Client: newHTTPClient(o.timeout),
	}
	if o.stale {
		dopts.Skew = -staleBy
	}
	for _, k := range kinds {
		for range o.count {
			plain := k.plaintext
			if k.fresh {
				plain = wechatsim.Fresh(plain, p.MchID, time.Now())
			}
			for range o.duplicate {
				if ctx.Err() != nil {
					return g.finishSimulate(sum, expectRefusal, ctx.Err())
				}
				n, err := p.Build(k.eventType, plain, wechatsim.Options{Key: key})
				if err != nil {
					return runtime(err)
				}
				r := simResult{EventType: k.eventType, Sample: k.name, ID: n.ID, Attempts: []simAttempt{}}
				opts := dopts
				opts.OnAttempt = func(a wechatsim.Attempt) {
					if o.save != "" && a.N == 1 && a.Header != nil {
						if err := saveCapture(o.save, o.url, n, a.Header); err != nil {
							outf(g.env.Stderr, "simulate: --save: %v\n", err)
						} else if table {
							outf(out, "saved %s: wxpayctl verify --headers %s --body %s --mchid %s\n", n.ID,
								filepath.Join(o.save, n.ID+".headers"), filepath.Join(o.save, n.ID+".body"), p.MchID)
						}
					}
					sa := simAttempt{N: a.N, WaitedMS: ms(a.Waited), Status: a.Status, Latency: ms(a.Latency)}
					if a.Err != nil {
						sa.Error = a.Err.Error()
					}
					r.Attempts = append(r.Attempts, sa)
					if table {
						answer := strconv.Itoa(a.Status)
						if a.Err != nil {
							answer = "no answer: " + a.Err.Error()
						}
						wait := ""
						if a.N > 1 {
							wait = fmt.Sprintf(" after %s", a.Waited.Round(time.Millisecond))
						}
						outf(out, "%-36s  %-30s  attempt %d%s: %s in %s\n", n.ID, k.name, a.N, wait, answer, a.Latency.Round(100*time.Microsecond))
					}
				}
				attempts := p.Deliver(ctx, o.url, n, opts)
				r.Delivered = len(attempts) > 0 && attempts[len(attempts)-1].OK()
				if r.Delivered {
					sum.Delivered++
				} else if len(attempts) > 0 && attempts[len(attempts)-1].Status >= 400 {
					sum.Refused++
				}
				sum.Notifications = append(sum.Notifications, r)
			}
		}
	}
	return g.finishSimulate(sum, expectRefusal, nil)
}

func (g *globals) finishSimulate(sum simSummary, expectRefusal bool, cause error) error {
	total := len(sum.Notifications)
	if g.output == "json" {
		_ = json.NewEncoder(g.env.Stdout).Encode(sum)
	} else {
		outf(g.env.Stdout, "sent %d notifications to %s: %d delivered (2xx), %d refused (4xx/5xx), %d without answer\n",
			total, sum.URL, sum.Delivered, sum.Refused, total-sum.Delivered-sum.Refused)
	}
	switch {
	case cause != nil:
		return failed(fmt.Errorf("interrupted after %d notifications", total))
	case expectRefusal && sum.Refused != total:
		return failed(fmt.Errorf("%d of %d notifications that must be refused were not", total-sum.Refused, total))
	case !expectRefusal && sum.Delivered != total:
		return failed(fmt.Errorf("%d of %d notifications were not delivered", total-sum.Delivered, total))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// loadSummary is the load mode's result.
type loadSummary struct {
	URL         string         `json:"url"`
	Rate        float64        `json:"rate"`
	Concurrency int            `json:"concurrency"`
	Duration    float64        `json:"duration_seconds"`
	Scheduled   int            `json:"scheduled"`
	Sent        int            `json:"sent"`
	Late        int            `json:"late"`
	Errors      int            `json:"errors"`
	Starved     int            `json:"starved"`
	ByStatus    map[string]int `json:"by_status"`
	Elapsed     float64        `json:"elapsed_seconds"`
	Throughput  float64        `json:"throughput"`
	LatencyMS   struct {
		P50  float64 `json:"p50"`
		P90  float64 `json:"p90"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
		Max  float64 `json:"max"`
		Mean float64 `json:"mean"`
	} `json:"latency_ms"`
}

func (g *globals) simulateLoad(ctx context.Context, o *simOptions, p *wechatsim.Platform, kinds []simKind, key wechatsim.KeyKind) error {
	var mu sync.Mutex
	i := 0
	next := func() (wechatsim.Notification, error) {
		mu.Lock()
		k := kinds[i%len(kinds)]
		i++
		mu.Unlock()
		plain := k.plaintext
		if k.fresh {
			plain = wechatsim.Fresh(plain, p.MchID, time.Now())
		}
		bo := wechatsim.Options{Key: key, Probe: o.probe}
		if o.stale {
			bo.Timestamp = time.Now().Add(-staleBy)
		}
		return p.Build(k.eventType, plain, bo)
	}
	if g.output != "json" {
		outf(g.env.Stdout, "load: %g requests/s for %s to %s, at most %d in flight (open loop)\n", o.rate, o.duration, o.url, o.concurrency)
	}
	res, err := wechatsim.Load(ctx, wechatsim.LoadOptions{
		URL: o.url, Rate: o.rate, Concurrency: o.concurrency, Duration: o.duration, Timeout: o.timeout, Next: next,
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return runtime(err)
	}
	s := loadSummary{
		URL: o.url, Rate: o.rate, Concurrency: o.concurrency, Duration: o.duration.Seconds(),
		Scheduled: res.Scheduled, Sent: res.Sent, Late: res.Late, Errors: res.Errors, Starved: res.Starved, ByStatus: map[string]int{},
		Elapsed: res.Elapsed.Seconds(), Throughput: res.Throughput,
	}
	ok := 0
	for code, n := range res.ByStatus {
		s.ByStatus[strconv.Itoa(code)] = n
		if code >= 200 && code < 300 {
			ok += n
		}
	}
	l := res.Latency
	s.LatencyMS.P50, s.LatencyMS.P90, s.LatencyMS.P99, s.LatencyMS.P999, s.LatencyMS.Max, s.LatencyMS.Mean =
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), ms(l.Mean)
	if g.output == "json" {
		_ = json.NewEncoder(g.env.Stdout).Encode(s)
	} else {
		printLoad(g.env.Stdout, s)
	}
	if ok != res.Scheduled {
		return failed(fmt.Errorf("%d of %d scheduled requests got no 2xx", res.Scheduled-ok, res.Scheduled))
	}
	return nil
}

func printLoad(w io.Writer, s loadSummary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	outf(tw, "requests\t%d scheduled, %d sent, %d never sent (no free connection in time), %d without answer\n", s.Scheduled, s.Sent, s.Late, s.Errors)
	outf(tw, "throughput\t%.1f answers/s over %.2fs\n", s.Throughput, s.Elapsed)
	l := s.LatencyMS
	outf(tw, "latency\tp50 %.2fms  p90 %.2fms  p99 %.2fms  p99.9 %.2fms  max %.2fms  (from the scheduled time)\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	codes := make([]string, 0, len(s.ByStatus))
	for c := range s.ByStatus {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	var parts []string
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%s ×%d", c, s.ByStatus[c]))
	}
	outf(tw, "answers\t%s\n", dash(strings.Join(parts, ", ")))
	if s.Starved > 0 {
		outf(tw, "warning\tthe simulator could not sign fast enough: %d of the requests waited for it, and their latency includes that wait (lower --rate, or run it on more CPUs)\n", s.Starved)
	}
	_ = tw.Flush()
}

func simulateKeysCommand(g *globals) *cobra.Command {
	var out, mchid string
	var force bool
	cmd := &cobra.Command{
		Use:   "keys --out DIR",
		Short: "Generate a simulated WeChat Pay platform (keys, certificate, APIv3 key) for a merchant",
		Long: `keys writes a simulated platform for one merchant into DIR: the platform certificate and public key
(what a receiver verifies with), the APIv3 key (what a consumer decrypts with), the platform private key
(what simulate signs with) and <mchid>.env with the matching configuration.`,
		Example: `  wxpayctl simulate keys --out ./sim --mchid 1900000100
  set -a; . ./sim/1900000100.env; set +a     # configure a receiver and consumer with it
  wxpayctl simulate --platform-dir ./sim --url http://127.0.0.1:8080/notify/1900000100`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if out == "" {
				return usageError("--out DIR is required")
			}
			if _, err := os.Stat(wechatsim.EnvFile(out, mchid)); err == nil && !force {
				return failed(fmt.Errorf("%s already holds a platform for %s (its receiver would stop verifying): pass --force to replace it", out, mchid))
			}
			p, err := wechatsim.NewPlatform(mchid)
			if err != nil {
				return runtime(err)
			}
			files, err := p.Save(out)
			if err != nil {
				return runtime(err)
			}
			env := p.Env(files)
			if g.output == "json" {
				return json.NewEncoder(g.env.Stdout).Encode(map[string]any{"env_file": wechatsim.EnvFile(out, mchid), "env": env, "platform_private_key_file": files.PrivateKeyFile})
			}
			outf(g.env.Stdout, "wrote a simulated platform for %s into %s; configure the receiver and consumer with:\n", mchid, out)
			printEnv(g.env.Stdout, env, "  ")
			outf(g.env.Stdout, "(also in %s)\n", wechatsim.EnvFile(out, mchid))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write into (required)")
	cmd.Flags().StringVar(&mchid, "mchid", DefaultMchID, "merchant id")
	cmd.Flags().BoolVar(&force, "force", false, "replace a platform already in DIR")
	return cmd
}

func printEnv(w io.Writer, env map[string]string, indent string) {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		outf(w, "%sexport %s=%s\n", indent, k, env[k])
	}
}

func newHTTPClient(timeout time.Duration) *http.Client { return &http.Client{Timeout: timeout} }
