package receiver

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/wechatpay-apiv3/wechatpay-go/core"
	"github.com/wechatpay-apiv3/wechatpay-go/core/downloader"
	"golang.org/x/sync/errgroup"

	"github.com/wxpay-events/wxpay-events/internal/admin"
	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/logging"
	"github.com/wxpay-events/wxpay-events/internal/topology"
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
	certMgr  *downloader.CertificateDownloaderMgr
}

// Deps lets the all-in-one dev mode and tests hand in what they already have.
type Deps struct {
	// InProcess connects to an embedded NATS server without a socket.
	InProcess nats.InProcessConnProvider
	// Clock replaces time.Now in signature verification.
	Clock func() time.Time
}

// Run is the receiver program: load configuration from args and getenv, serve until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.LoadReceiver(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := logging.New(cfg.LogLevel, cfg.LogFormat, stdout).With().Str("program", "receiver").Logger()
	r, err := New(ctx, cfg, log, Deps{})
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
	if err := topology.Ensure(sctx, r.js, topology.Options{Replicas: cfg.StreamReplicas, InboundMaxBytes: cfg.InboundMaxBytes}); err != nil {
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
		Int("accounts", len(r.cfg.Accounts)).Msg("receiver listening")
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

func (r *Receiver) ready(ctx context.Context) error {
	if !r.nc.IsConnected() {
		return ErrNotConnected
	}
	return topology.Check(ctx, r.js, topology.InboundStream)
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
	if r.certMgr != nil {
		r.certMgr.Stop()
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
	vs, mgr, err := BuildVerifiers(ctx, r.cfg.Accounts, opts...)
	r.certMgr = mgr
	if err != nil {
		return nil, err
	}
	out := make(map[string]Verifier, len(vs))
	for id, v := range vs {
		out[id] = v
	}
	return out, nil
}

// BuildVerifiers makes one verifier per account. Accounts with a merchant private key download their
// platform certificates from WeChat Pay (wechatpay-go's downloader, refreshed every 24 h) in addition to
// any static certificates and public key; the returned manager (nil when none does) must be stopped.
func BuildVerifiers(ctx context.Context, accounts []config.Account, opts ...verify.Option) (map[string]*verify.Verifier, *downloader.CertificateDownloaderMgr, error) {
	var mgr *downloader.CertificateDownloaderMgr
	out := make(map[string]*verify.Verifier, len(accounts))
	for _, a := range accounts {
		ks := a.KeySet()
		if a.PrivateKey != nil {
			if mgr == nil {
				mgr = downloader.NewCertificateDownloaderMgr(context.WithoutCancel(ctx))
			}
			if err := mgr.RegisterDownloaderWithPrivateKey(ctx, a.PrivateKey, a.CertSerial, a.MchID, string(a.APIv3Key)); err != nil {
				// The SDK's error may quote WeChat's response; it carries no key material.
				return nil, mgr, fmt.Errorf("%s: download platform certificates from WeChat Pay: %w", a.Origin, err)
			}
			ks.Certificates = unionGetter{mgr.GetCertificateVisitor(a.MchID), ks.Certificates}
		}
		v, err := verify.New(ks, opts...)
		if err != nil {
			return nil, mgr, fmt.Errorf("%s: %w", a.Origin, err)
		}
		out[a.MchID] = v
	}
	return out, mgr, nil
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
