package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/console"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/devstore"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/logging"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

func init() { commands = append(commands, devCommand) }

// redisPingTimeout is how long dev waits for REDIS_URL to answer before using the embedded store.
const redisPingTimeout = 500 * time.Millisecond

// demoTimeScale speeds WeChat's retry schedule up for the demo's own sends (15 s → 150 ms).
const demoTimeScale = 100

type devOptions struct {
	dir, addr, adminAddr, consumerAdminAddr, mchid string
	logLevel, logFormat                            string
	demo                                           bool
	explicit                                       map[string]bool // flags (or their variables) the user set
	consoleAddr                                    string
	noConsole                                      bool
}

func devCommand(g *globals) *cobra.Command {
	var o devOptions
	def := func(k, d string) string {
		if v := g.env.Getenv(k); v != "" {
			return v
		}
		return d
	}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process: embedded NATS, receiver, consumer, a test merchant",
		Long: `dev runs wxpay-events on one machine with nothing installed: an embedded NATS server with
JetStream on disk (in --dir), listening where --nats-url points (default 127.0.0.1:4222, so that the
other wxpayctl commands find it); the receiver and the consumer; dedupe on Redis when REDIS_URL is set
and answers a PING within 500 ms, otherwise on an embedded store kept in JetStream; and a generated
test merchant (a simulated WeChat Pay platform), kept in --dir so that restarts keep the same keys.
It prints the account's files and the configuration that goes with them.

With --demo, a simulated WeChat Pay sends one notification of every event type to the receiver and the
resulting events are printed as they arrive. dev runs until interrupted (Ctrl-C), then stops gracefully.`,
		Example: `  # the README's first command
  go run ./cmd/wxpayctl dev --demo

  # in other terminals, while dev runs
  wxpayctl tail
  wxpayctl simulate --type refund.succeeded --count 3
  wxpayctl dlq ls

  # elsewhere than the defaults
  wxpayctl dev --dir /tmp/wxpay --nats-url nats://127.0.0.1:14222 --addr 127.0.0.1:18080 \
      --admin-addr 127.0.0.1:19090 --consumer-admin-addr 127.0.0.1:19091`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.explicit = map[string]bool{
				"addr":                cmd.Flags().Changed("addr") || g.env.Getenv("RECEIVER_ADDR") != "",
				"admin-addr":          cmd.Flags().Changed("admin-addr") || g.env.Getenv("ADMIN_ADDR") != "",
				"consumer-admin-addr": cmd.Flags().Changed("consumer-admin-addr"),
				"console-addr":        cmd.Flags().Changed("console-addr"),
			}
			return g.dev(cmd.Context(), o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.dir, "dir", defaultDevDir, "state directory: JetStream store and the test merchant's keys")
	fl.StringVar(&o.addr, "addr", def("RECEIVER_ADDR", ":8080"), "receiver listen address (POST /notify/{mchid}); when the default is taken, a free port [RECEIVER_ADDR]")
	fl.StringVar(&o.adminAddr, "admin-addr", def("ADMIN_ADDR", ":9090"), "receiver admin address (/metrics, /healthz, /readyz); when the default is taken, a free port [ADMIN_ADDR]")
	fl.StringVar(&o.consumerAdminAddr, "consumer-admin-addr", ":9091", "consumer admin address; when the default is taken, a free port")
	fl.StringVar(&o.mchid, "mchid", DefaultMchID, "merchant id of the test account")
	fl.BoolVar(&o.demo, "demo", false, "send one notification of every event type and print the events")
	fl.StringVar(&o.consoleAddr, "console-addr", console.DefaultAddr, "web console listen address (the banner has its link); when the default is taken, a free port")
	fl.BoolVar(&o.noConsole, "no-console", false, "run without the web console")
	fl.StringVar(&o.logLevel, "log-level", def("LOG_LEVEL", "info"), "trace, debug, info, warn or error [LOG_LEVEL]")
	fl.StringVar(&o.logFormat, "log-format", def("LOG_FORMAT", "console"), "console or json [LOG_FORMAT]")
	return cmd
}

// devRun is a running dev environment.
type devRun struct {
	out  io.Writer // stdout, shared by the banner, the demo and the event printer
	json bool
	ns   *server.Server
	log  zerolog.Logger
}

func (g *globals) dev(ctx context.Context, o devOptions) error {
	if o.logFormat != "console" && o.logFormat != "json" {
		return usageError("--log-format %q: console or json", o.logFormat)
	}
	host, port, err := natsListenAddr(g.natsURL)
	if err != nil {
		return usageError("--nats-url: %v", err)
	}
	dir, err := filepath.Abs(o.dir)
	if err != nil {
		return runtime(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return runtime(fmt.Errorf("--dir: %w", err))
	}
	d := &devRun{out: &lockedWriter{w: g.env.Stdout}, json: g.output == "json",
		log: logging.New(o.logLevel, o.logFormat, g.env.Stderr)}

	p, files, generated, err := devPlatform(dir, o.mchid)
	if err != nil {
		return err
	}
	if !g.natsURLSet && !portFree(ctx, host, port) {
		// The default port belongs to a NATS server that is already running (a system service, say): a new
		// user's first command must still work, so take a free port and say which in the banner.
		d.log.Warn().Int("port", port).Msg("NATS port in use; the embedded server takes a free port (see NATS_URL below)")
		port = server.RANDOM_PORT
	}
	if d.ns, err = startNATS(ctx, filepath.Join(dir, "jetstream"), host, port); err != nil {
		return err
	}
	defer func() {
		d.ns.Shutdown()
		d.ns.WaitForShutdown()
	}()
	natsURL := d.ns.ClientURL()

	env := p.Env(files)
	env["NATS_URL"] = natsURL
	env["LOG_LEVEL"], env["LOG_FORMAT"] = o.logLevel, o.logFormat
	for _, k := range []string{"DEDUPE_TTL", "DEDUPE_ALLOW_EVICTION", "CONSUMER_WORKERS", "RECEIVER_MAX_BODY", "PUBLISH_TIMEOUT", "MAX_CLOCK_SKEW", "SHUTDOWN_TIMEOUT"} {
		if v := g.env.Getenv(k); v != "" {
			env[k] = v
		}
	}
	// Like NATS: a default port that is taken (another receiver, a web server on 8080) moves to a free one,
	// said in the banner; an address the user chose stays, and fails loudly when taken.
	addrs := []struct {
		flag string
		addr *string
	}{{"addr", &o.addr}, {"admin-addr", &o.adminAddr}, {"consumer-admin-addr", &o.consumerAdminAddr}, {"console-addr", &o.consoleAddr}}
	for _, a := range addrs {
		if o.explicit[a.flag] {
			continue
		}
		if h, p, err := net.SplitHostPort(*a.addr); err == nil {
			if n, err := strconv.Atoi(p); err == nil && !portFree(ctx, h, n) {
				d.log.Warn().Str("addr", *a.addr).Msg("address in use; dev takes a free port (see the banner)")
				*a.addr = net.JoinHostPort(h, "0")
			}
		}
	}
	renv, cenv := clone(env), clone(env)
	renv["RECEIVER_ADDR"], renv["ADMIN_ADDR"] = o.addr, o.adminAddr
	cenv["ADMIN_ADDR"] = o.consumerAdminAddr
	useRedis := false
	if u := g.env.Getenv("REDIS_URL"); u != "" {
		if useRedis = redisAnswers(ctx, u); useRedis {
			cenv["REDIS_URL"] = u
		} else {
			d.log.Warn().Msg("REDIS_URL does not answer a PING within 500 ms: using the embedded dedupe store")
		}
	}
	rcfg, err := config.LoadReceiver(nil, mapGetenv(renv), io.Discard)
	if err != nil {
		return usageError("%w", err)
	}
	ccfg, err := config.LoadConsumer(nil, mapGetenv(cenv), io.Discard)
	if err != nil {
		return usageError("%w", err)
	}

	nc, err := topology.Connect(topology.ConnectOptions{URL: natsURL, Name: "wxpayctl-dev", InProcess: d.ns}, d.log)
	if err != nil {
		return runtime(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return runtime(err)
	}
	if err := d.upgradeStore(ctx, js, rcfg.Topology()); err != nil {
		return runtime(err)
	}
	var deduper consumer.Deduper
	dedupeDesc := "Redis (REDIS_URL)"
	if !useRedis {
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		store, err := devstore.New(sctx, js, devstore.Options{TTL: ccfg.DedupeTTL})
		cancel()
		if err != nil {
			return runtime(err)
		}
		deduper = store
		dedupeDesc = "embedded (JetStream key-value bucket " + devstore.DefaultBucket + ", kept in --dir)"
	}

	rtp, ctp, wtp, stopTracing, err := g.devTracing(ctx, d.log)
	if err != nil {
		return err
	}
	defer stopTracing()
	r, err := receiver.New(ctx, rcfg, d.log.With().Str("program", "receiver").Logger(), receiver.Deps{InProcess: d.ns, TracerProvider: rtp})
	if err != nil {
		return runtime(err)
	}
	c, err := consumer.New(ctx, ccfg, d.log.With().Str("program", "consumer").Logger(), consumer.Deps{InProcess: d.ns, Dedupe: deduper, TracerProvider: ctp})
	if err != nil {
		closeUnserved(ctx, r.Serve)
		return runtime(err)
	}
	notifyURL := "http://" + loopback(r.Addr()) + "/notify/" + p.MchID
	var cs *console.Server
	consoleLink := ""
	if !o.noConsole {
		cs, consoleLink, err = g.devConsole(ctx, d.log, js, wtp, dir, o.consoleAddr, "http://"+loopback(r.AdminAddr()), "http://"+loopback(c.AdminAddr()))
		if err != nil {
			closeUnserved(ctx, r.Serve)
			closeUnserved(ctx, c.Serve)
			return err
		}
	}

	// What the other commands need, in a file a shell can source: the account and the NATS URL actually
	// used (which moves when 4222 is taken).
	shellEnv := p.Env(files)
	shellEnv["NATS_URL"] = natsURL
	devEnvFile := filepath.Join(dir, "dev.env")
	var envText strings.Builder
	envText.WriteString("# wxpayctl dev: source this file in another shell (. " + devEnvFile + ") so that wxpayctl finds dev.\n")
	printEnv(&envText, shellEnv, "")
	if err := os.WriteFile(devEnvFile, []byte(envText.String()), 0o600); err != nil {
		return runtime(fmt.Errorf("--dir: %w", err))
	}

	d.banner(devBanner{
		NATSURL: natsURL, StoreDir: filepath.Join(dir, "jetstream"), NotifyURL: notifyURL,
		ReceiverAdmin: "http://" + loopback(r.AdminAddr()), ConsumerAdmin: "http://" + loopback(c.AdminAddr()),
		Console: consoleLink, Dedupe: dedupeDesc, MchID: p.MchID, Generated: generated, Dir: dir, EnvFile: wechatsim.EnvFile(dir, p.MchID),
		Files: files, PublicKeyID: p.PublicKeyID, Env: shellEnv, ShellEnvFile: devEnvFile,
	})

	grp, gctx := errgroup.WithContext(ctx)
	grp.Go(func() error { return r.Serve(gctx) })
	grp.Go(func() error { return c.Serve(gctx) })
	if cs != nil {
		grp.Go(func() error { return cs.Serve(gctx) })
	}
	if o.demo {
		grp.Go(func() error { d.demo(gctx, js, p, notifyURL); return nil })
	}
	if err := grp.Wait(); err != nil {
		return runtime(err)
	}
	if !d.json {
		outln(d.out, "dev: stopped")
	}
	return nil
}

// devPlatform loads the test merchant from dir, or generates and saves one.
func devPlatform(dir, mchid string) (*wechatsim.Platform, wechatsim.Files, bool, error) {
	p, files, err := wechatsim.LoadPlatform(dir, mchid)
	if err == nil {
		return p, files, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, wechatsim.Files{}, false, runtime(fmt.Errorf("%w (remove %s to start afresh)", err, dir))
	}
	if p, err = wechatsim.NewPlatform(mchid); err != nil {
		return nil, wechatsim.Files{}, false, runtime(err)
	}
	if files, err = p.Save(dir); err != nil {
		return nil, wechatsim.Files{}, false, runtime(err)
	}
	return p, files, true, nil
}

// natsListenAddr is where the embedded server listens: the host and port of the first --nats-url (port 0:
// a random one).
func natsListenAddr(raw string) (string, int, error) {
	first, _, _ := strings.Cut(raw, ",")
	u, err := url.Parse(strings.TrimSpace(first))
	if err != nil || u.Host == "" || (u.Scheme != "nats" && u.Scheme != "") {
		return "", 0, fmt.Errorf("%q: want nats://HOST:PORT for the embedded server to listen on", raw)
	}
	host := u.Hostname()
	port := 4222
	if ps := u.Port(); ps != "" {
		if port, err = strconv.Atoi(ps); err != nil || port < 0 || port > 65535 {
			return "", 0, fmt.Errorf("%q: bad port", raw)
		}
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// portFree reports whether host:port can be listened on right now.
func portFree(ctx context.Context, host string, port int) bool {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// startNATS runs the embedded JetStream server with its store in storeDir.
func startNATS(ctx context.Context, storeDir, host string, port int) (*server.Server, error) {
	if port != server.RANDOM_PORT {
		// nats-server reports a taken port only in its log; say it plainly instead.
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, runtime(fmt.Errorf("embedded NATS cannot listen on %s (another nats-server or wxpayctl dev?): %w; pick another with --nats-url nats://127.0.0.1:4223", addr, err))
		}
		_ = ln.Close()
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "wxpay-dev",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoLog:      true,
		NoSigs:     true, // dev's own context handles SIGINT/SIGTERM
	})
	if err != nil {
		return nil, runtime(fmt.Errorf("embedded NATS: %w", err))
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, runtime(fmt.Errorf("embedded NATS did not start on %s:%d", host, port))
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, runtime(fmt.Errorf("embedded NATS started without JetStream: is %s in use by another dev?", storeDir))
	}
	return ns, nil
}

// upgradeStore brings the embedded server's store to this version's layout before the programs start,
// as `wxpayctl streams apply` does in production (README "Upgrading"): dev owns its store, and one an
// older version made (an inbound stream with Limits retention and no archive) would otherwise keep
// processed notifications and only be warned about. A new store is simply created. What changed in an
// existing store is logged.
func (d *devRun) upgradeStore(ctx context.Context, js jetstream.JetStream, o topology.Options) error {
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	report, err := topology.Apply(actx, js, o, false)
	for _, c := range report.Changes {
		if c.Create {
			d.log.Debug().Str("change", c.String()).Msg("dev store")
		} else {
			d.log.Info().Str("change", c.String()).Msg("dev store brought up to this version's layout")
		}
	}
	for _, w := range report.Warnings {
		d.log.Warn().Msg(w)
	}
	if err != nil {
		return fmt.Errorf("bring the dev store (--dir) up to this version's layout: %w", err)
	}
	return nil
}

// redisAnswers reports whether the Redis at u answers a PING in time.
func redisAnswers(ctx context.Context, u string) bool {
	rc, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: u})
	if err != nil {
		return false
	}
	defer func() { _ = rc.Close() }()
	pctx, cancel := context.WithTimeout(ctx, redisPingTimeout)
	defer cancel()
	return rc.Ping(pctx).Err() == nil
}

// closeUnserved releases what a constructed but never served component holds: Serve on a cancelled
// context stops at once and closes its listeners and connection.
func closeUnserved(ctx context.Context, serve func(context.Context) error) {
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_ = serve(cctx)
}

// loopback turns a bound address into one a local client can dial (":8080" → "127.0.0.1:8080").
func loopback(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok && (t.IP == nil || t.IP.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
	}
	return a.String()
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func mapGetenv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// devBanner is what dev prints at start.
type devBanner struct {
	NATSURL       string            `json:"nats_url"`
	StoreDir      string            `json:"jetstream_store"`
	NotifyURL     string            `json:"notify_url"`
	ReceiverAdmin string            `json:"receiver_admin"`
	ConsumerAdmin string            `json:"consumer_admin"`
	Console       string            `json:"console_url,omitempty"` // with the token in the fragment
	Dedupe        string            `json:"dedupe"`
	MchID         string            `json:"mchid"`
	Generated     bool              `json:"generated"`
	Dir           string            `json:"dir"`
	EnvFile       string            `json:"env_file"`
	Files         wechatsim.Files   `json:"files"`
	PublicKeyID   string            `json:"public_key_id"`
	Env           map[string]string `json:"env"`
	ShellEnvFile  string            `json:"shell_env_file"` // export lines of Env, NATS_URL included
}

func (d *devRun) banner(b devBanner) {
	if d.json {
		_ = json.NewEncoder(d.out).Encode(b)
		return
	}
	w := d.out
	origin := "loaded from " + b.Dir
	if b.Generated {
		origin = "generated now, kept in " + b.Dir
	}
	outf(w, `wxpay-events dev: everything in one process (Ctrl-C stops it)

  NATS            %s  (JetStream store %s)
  receiver        POST %s  (admin %s)
  consumer        admin %s
%s  dedupe          %s

  test merchant %s (%s)
    WeChat Pay public key    %s  (%s)
    platform certificate     %s
    APIv3 key                %s
    platform private key     %s  (the simulator signs with it)

  the same account for a receiver or consumer run separately (also in %s):
`, b.NATSURL, b.StoreDir, b.NotifyURL, b.ReceiverAdmin, b.ConsumerAdmin, consoleLine(b.Console), b.Dedupe,
		b.MchID, origin, b.Files.PublicKeyFile, b.PublicKeyID, b.Files.CertFile, b.Files.APIv3KeyFile, b.Files.PrivateKeyFile, b.EnvFile)
	printEnv(w, b.Env, "    ")
	// The commands to try name the NATS server dev really listens on: with a moved port, a bare
	// "wxpayctl tail" would talk to whatever else holds 4222.
	ctl := "wxpayctl"
	if b.NATSURL != defaultNATSURL {
		ctl = "wxpayctl --nats-url " + b.NATSURL
	}
	outf(w, `
  try, in another terminal (or first: . %s):
    %s tail
    %s simulate --platform-dir %s --url %s --type refund.succeeded
    %s dlq ls

`, b.ShellEnvFile, ctl, ctl, b.Dir, b.NotifyURL, ctl)
}

// consoleLine is the banner's console line, empty with --no-console.
func consoleLine(link string) string {
	if link == "" {
		return ""
	}
	return "  console         " + link + "  (live events, dead letters, replay: open it in a browser)\n"
}

// demo sends one notification of every event type to the receiver and prints the events as they arrive,
// then keeps printing events until ctx ends.
func (d *devRun) demo(ctx context.Context, js jetstream.JetStream, p *wechatsim.Platform, notifyURL string) {
	mappings := events.Mappings()
	printer := &eventPrinter{out: d.out, json: d.json}
	seen := map[string]bool{}
	send := func() {
		all := samples.All()
		if !d.json {
			outf(d.out, "demo: a simulated WeChat Pay sends %d notifications covering each of the %d event types (direct, service-provider, cross-border, parking and combined shapes) to %s; the events:\n",
				len(all), len(mappings), notifyURL)
		}
		for _, name := range slices.Sorted(maps.Keys(all)) {
			eventType := samples.EventType(name)
			n, err := p.Build(eventType, wechatsim.Fresh(all[name], p.MchID, time.Now()), wechatsim.Options{})
			if err != nil {
				d.log.Error().Err(err).Str("event_type", eventType).Msg("demo: build notification")
				continue
			}
			attempts := p.Deliver(ctx, notifyURL, n, wechatsim.DeliverOptions{Retry: true, TimeScale: demoTimeScale})
			if (len(attempts) == 0 || !attempts[len(attempts)-1].OK()) && ctx.Err() == nil {
				d.log.Error().Str("event_type", eventType).Int("attempts", len(attempts)).Msg("demo: the receiver did not accept the notification")
			}
		}
	}
	var sending sync.WaitGroup
	defer sending.Wait()
	start := func() { sending.Go(send) } // once the consumer exists, so that no event is missed
	err := followEvents(ctx, js, []string{topology.EventsPrefix + ">"}, jetstream.DeliverNewPolicy, start, func(m jetstream.Msg) bool {
		printer.print(m.Subject(), m.Data())
		if parts, ok := topology.ParseEventSubject(m.Subject()); ok && len(seen) < len(mappings) {
			seen[parts.Type] = true
			if len(seen) == len(mappings) && !d.json {
				outf(d.out, "demo: one event of each of the %d types arrived; dev keeps running (Ctrl-C stops it)\n", len(mappings))
			}
		}
		return true
	})
	if err != nil {
		d.log.Error().Err(err).Msg("demo: following events failed")
	}
}

// lockedWriter serialises writes from dev's goroutines to one output.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
