package receiver

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/wxpay-events/wxpay-events/internal/admin"
	"github.com/wxpay-events/wxpay-events/internal/certs"
	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/logging"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// Receiver is a running receiver: its listeners are bound, NATS is connected and the streams exist.
type Receiver struct {
	cfg      config.Receiver
	log      zerolog.Logger
	nc       *nats.Conn
	js       jetstream.JetStream
	public   net.Listener
	adminLn  net.Listener
	handler  *Handler
	registry *prometheus.Registry
	keys     *Verifiers
}

// Deps lets the all-in-one dev mode and tests hand in what they already have.
type Deps struct {
	// InProcess connects to an embedded NATS server without a socket.
	InProcess nats.InProcessConnProvider
	// Clock replaces time.Now in signature verification and in the platform certificates' refresh (its
	// rate limit and the download's timestamp check).
	Clock func() time.Time
	// TracerProvider traces notifications; nil is tracing off. Run builds it from the OTEL_* variables
	// (tracing.Setup).
	TracerProvider trace.TracerProvider
}

// Run is the receiver program: load configuration from args and getenv, serve until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.LoadReceiver(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := logging.New(cfg.LogLevel, cfg.LogFormat, stdout).With().Str("program", "receiver").Logger()
	tp, stopTracing, err := tracing.Setup(ctx, getenv, "wxpay-receiver", log)
	if err != nil {
		return err
	}
	defer tracing.Stop(ctx, stopTracing, log)
	r, err := New(ctx, cfg, log, Deps{TracerProvider: tp})
	if err != nil {
		return err
	}
	return r.Serve(ctx)
}

// New connects to NATS, creates or updates the streams, builds the verifiers and binds both listeners.
func New(ctx context.Context, cfg config.Receiver, log zerolog.Logger, deps Deps) (*Receiver, error) {
	r := &Receiver{cfg: cfg, log: log, registry: admin.NewRegistry()}
	verifiers, err := r.buildVerifiers(ctx, deps.Clock)
	if err != nil {
		return nil, err
	}
	r.nc, err = topology.Connect(topology.ConnectOptions{URL: cfg.NATSURL, Creds: cfg.NATSCreds, Name: "wxpay-receiver", InProcess: deps.InProcess}, log)
	if err != nil {
		r.close()
		return nil, err
	}
	r.js, err = jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		r.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// Create what is missing, change nothing: `wxpayctl streams apply` owns existing configuration. Above
	// all the durable consumer must exist before the first publish (topology.Ensure says why).
	if err := topology.Ensure(sctx, r.js, cfg.Topology()); err != nil {
		r.close()
		return nil, err
	}
	r.handler = NewHandler(HandlerOptions{
		Verifiers:      verifiers,
		Store:          NewJetStreamStore(r.nc, r.js),
		MaxBody:        cfg.MaxBody,
		PublishTimeout: cfg.PublishTimeout,
		Log:            log,
		Metrics:        NewMetrics(r.registry),
		TracerProvider: deps.TracerProvider,
	})
	var lc net.ListenConfig
	if r.public, err = lc.Listen(ctx, "tcp", cfg.Addr); err != nil {
		r.close()
		return nil, fmt.Errorf("RECEIVER_ADDR %s: %w", cfg.Addr, err)
	}
	if r.adminLn, err = lc.Listen(ctx, "tcp", cfg.AdminAddr); err != nil {
		r.close()
		return nil, fmt.Errorf("ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}
	return r, nil
}

// Addr is the bound public address.
func (r *Receiver) Addr() net.Addr { return r.public.Addr() }

// AdminAddr is the bound admin address.
func (r *Receiver) AdminAddr() net.Addr { return r.adminLn.Addr() }

// Handler is the notify handler, for embedding in another server.
func (r *Receiver) Handler() *Handler { return r.handler }

// Serve answers notifications until ctx ends; then it stops accepting, lets in-flight requests finish
// (up to SHUTDOWN_TIMEOUT) and drains NATS so that every acknowledged publish is flushed.
func (r *Receiver) Serve(ctx context.Context) error {
	defer r.close()
	r.log.Info().Str("addr", r.Addr().String()).Str("admin_addr", r.AdminAddr().String()).
		Str("nats", r.nc.ConnectedUrlRedacted()).Int("accounts", len(r.cfg.Accounts)).Msg("receiver listening")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return admin.Serve(gctx, admin.Server(r.handler), r.public, r.cfg.ShutdownTimeout)
	})
	g.Go(func() error {
		return admin.Serve(gctx, admin.Server(admin.Handler(r.registry, r.ready)), r.adminLn, 2*time.Second)
	})
	err := g.Wait()
	if derr := r.drain(); err == nil {
		err = derr
	}
	r.log.Info().Err(err).Msg("receiver stopped")
	return err
}

// ready says whether a notification posted now could be stored, and if not why: NATS unreachable, the
// inbound stream unreachable or without a majority of its servers (a JetStream cluster that lost its
// quorum stores nothing; every publish would wait PUBLISH_TIMEOUT and be answered 503), or the durable
// consumer missing (under Interest retention JetStream acknowledges a publish to a stream without
// consumers and keeps nothing).
func (r *Receiver) ready(ctx context.Context) error {
	if !r.nc.IsConnected() {
		return ErrNotConnected
	}
	s, err := r.js.Stream(ctx, topology.InboundStream)
	if err != nil {
		return topology.Explain(r.js, fmt.Errorf("stream %s: %w", topology.InboundStream, err))
	}
	if err := topology.Quorum(s.CachedInfo()); err != nil {
		return err
	}
	if _, err := s.Consumer(ctx, topology.ConsumerName); err != nil {
		return topology.Explain(r.js, fmt.Errorf("consumer %s (without it %s keeps nothing: run `wxpayctl streams apply`): %w",
			topology.ConsumerName, topology.InboundStream, err))
	}
	return nil
}

func (r *Receiver) drain() error {
	if r.nc == nil || r.nc.IsClosed() {
		return nil
	}
	closed := make(chan struct{})
	r.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := r.nc.Drain(); err != nil {
		// Nothing can be flushed on a broken connection; every answered request was already acknowledged.
		r.nc.Close()
		return nil //nolint:nilerr // a failed drain at shutdown is not the receiver's failure
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		r.nc.Close()
	}
	return nil
}

func (r *Receiver) close() {
	if r.public != nil {
		_ = r.public.Close()
	}
	if r.adminLn != nil {
		_ = r.adminLn.Close()
	}
	if r.keys != nil {
		r.keys.Stop()
	}
	if r.nc != nil && !r.nc.IsClosed() {
		r.nc.Close()
	}
}

// buildVerifiers makes one verifier per account.
func (r *Receiver) buildVerifiers(ctx context.Context, clock func() time.Time) (map[string]Verifier, error) {
	opts := []verify.Option{verify.WithMaxSkew(r.cfg.MaxSkew)}
	if clock != nil {
		opts = append(opts, verify.WithClock(clock))
	}
	keys, err := BuildVerifiers(ctx, r.cfg.Accounts, CertOptions{Log: r.log, Metrics: certs.NewMetrics(r.registry), Clock: clock}, opts...)
	if err != nil {
		return nil, err
	}
	r.keys = keys
	out := make(map[string]Verifier, len(keys.ByMchID))
	for id, v := range keys.ByMchID {
		out[id] = v
	}
	return out, nil
}

// CertOptions say how accounts with a merchant private key download their platform certificates.
type CertOptions struct {
	Log zerolog.Logger
	// Metrics, optional, counts the downloads.
	Metrics *certs.Metrics
	// Interval of the periodic refresh; 0 means certs.DefaultInterval.
	Interval time.Duration
	// Clock replaces time.Now in the downloaders (rate limit, answer timestamps, expiry); nil is time.Now.
	// It is not the verifiers' clock: wxpayctl verify checks a capture at its own time but downloads now.
	Clock func() time.Time
	// HTTPClient, optional, sends the download requests.
	HTTPClient *http.Client
}

// Verifiers are the accounts' verifiers, by merchant id, and the certificate downloaders behind those
// configured with a merchant private key. Stop ends the downloaders' refreshes.
type Verifiers struct {
	ByMchID     map[string]*verify.Verifier
	Downloaders map[string]*certs.Downloader
}

// Stop stops every downloader; a nil *Verifiers is fine.
func (v *Verifiers) Stop() {
	if v == nil {
		return
	}
	for _, d := range v.Downloaders {
		d.Stop()
	}
}

// BuildVerifiers makes one verifier per account. Accounts with a merchant private key download their
// platform certificates from WeChat Pay in their region (in parallel, failing when any first download
// fails, naming the account), refresh them periodically and on an unknown serial, and verify with them in
// addition to any static certificates and public key. The result must be stopped.
func BuildVerifiers(ctx context.Context, accounts []config.Account, co CertOptions, opts ...verify.Option) (*Verifiers, error) {
	out := &Verifiers{ByMchID: make(map[string]*verify.Verifier, len(accounts)), Downloaders: map[string]*certs.Downloader{}}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for _, a := range accounts {
		if a.PrivateKey == nil {
			continue
		}
		g.Go(func() error {
			d, err := certs.Start(gctx, certs.Options{
				MchID: a.MchID, PrivateKey: a.PrivateKey, CertSerial: a.CertSerial, APIv3Key: a.APIv3Key,
				Region: a.Region, BaseURL: a.APIBaseURL, Interval: co.Interval, HTTPClient: co.HTTPClient,
				Clock: co.Clock, Log: co.Log, Metrics: co.Metrics,
			})
			if err != nil {
				return fmt.Errorf("%s (merchant %s): download platform certificates: %w", a.Origin, a.MchID, err)
			}
			mu.Lock()
			out.Downloaders[a.MchID] = d
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		out.Stop()
		return nil, err
	}
	for _, a := range accounts {
		ks := a.KeySet()
		if d, ok := out.Downloaders[a.MchID]; ok {
			ks.Certificates = unionGetter{d, ks.Certificates}
			ks.Refresher = d
		}
		v, err := verify.New(ks, opts...)
		if err != nil {
			out.Stop()
			return nil, fmt.Errorf("%s: %w", a.Origin, err)
		}
		out.ByMchID[a.MchID] = v
	}
	return out, nil
}

// unionGetter looks a serial up in the downloaded certificates, then in the static ones.
type unionGetter struct {
	downloaded core.CertificateGetter
	static     core.CertificateGetter
}

func (u unionGetter) Get(ctx context.Context, serial string) (*x509.Certificate, bool) {
	if c, ok := u.downloaded.Get(ctx, serial); ok {
		return c, true
	}
	if u.static != nil {
		return u.static.Get(ctx, serial)
	}
	return nil, false
}

func (u unionGetter) GetAll(ctx context.Context) map[string]*x509.Certificate {
	all := map[string]*x509.Certificate{}
	if u.static != nil {
		for k, v := range u.static.GetAll(ctx) {
			all[k] = v
		}
	}
	for k, v := range u.downloaded.GetAll(ctx) {
		all[k] = v
	}
	return all
}

func (u unionGetter) GetNewestSerial(ctx context.Context) string {
	return u.downloaded.GetNewestSerial(ctx)
}
