package consumer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/wxpay-events/wxpay-events/internal/admin"
	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/logging"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// Consumer is a running consumer process: NATS connected, durable consumer bound, admin listener bound.
type Consumer struct {
	cfg       config.Consumer
	log       zerolog.Logger
	nc        *nats.Conn
	js        jetstream.JetStream
	cons      jetstream.Consumer
	proc      *Processor
	registry  *prometheus.Registry
	adminLn   net.Listener
	closeDeps []func()
	// embeddedDedupe: the dedupe store was handed in (Deps.Dedupe), not the configured Redis.
	embeddedDedupe bool
}

// Deps lets the dev mode and tests hand in what they already have.
type Deps struct {
	// InProcess connects to an embedded NATS server without a socket.
	InProcess nats.InProcessConnProvider
	// Dedupe replaces the Redis dedupe store (the dev mode's embedded store). New then neither checks
	// Redis's maxmemory-policy nor looks for the previous key format: whoever built it decides both.
	Dedupe Deduper
	// TracerProvider traces deliveries; nil is tracing off. Run builds it from the OTEL_* variables.
	TracerProvider trace.TracerProvider
}

// RedisOptions is the dedupe client configuration the consumer program builds from its settings.
func RedisOptions(r config.Redis) dedupe.ClientOptions {
	return dedupe.ClientOptions{URL: r.URL, Addrs: r.Addrs, MasterName: r.MasterName, Password: r.Password, SentinelPassword: r.SentinelPassword}
}

// Run is the consumer program: load configuration from args and getenv, consume until ctx ends.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := config.LoadConsumer(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := logging.New(cfg.LogLevel, cfg.LogFormat, stdout).With().Str("program", "consumer").Logger()
	tp, stopTracing, err := tracing.Setup(ctx, getenv, "wxpay-consumer", log)
	if err != nil {
		return err
	}
	defer tracing.Stop(ctx, stopTracing, log)
	c, err := New(ctx, cfg, log, Deps{TracerProvider: tp})
	if err != nil {
		return err
	}
	return c.Serve(ctx)
}

// New connects to NATS and Redis, creates or updates the streams and the durable consumer, and binds the
// admin listener. It checks every APIv3 key before consuming anything.
func New(ctx context.Context, cfg config.Consumer, log zerolog.Logger, deps Deps) (*Consumer, error) {
	c := &Consumer{cfg: cfg, log: log, registry: admin.NewRegistry(), embeddedDedupe: deps.Dedupe != nil}
	ciphers := make(map[string]Cipher, len(cfg.Accounts))
	for _, a := range cfg.Accounts {
		ci, err := decrypt.New(a.APIv3Key)
		if err != nil {
			return nil, fmt.Errorf("%s: apiv3_key_file: %w", a.Origin, err)
		}
		ciphers[a.MchID] = ci
	}

	d := deps.Dedupe
	if d == nil {
		// go-redis logs every failed dial to stderr on its own; route that through our logger instead.
		redis.SetLogger(redisLogger{log})
		rc, err := dedupe.NewUniversalClient(RedisOptions(cfg.Redis))
		if err != nil {
			return nil, err
		}
		c.closeDeps = append(c.closeDeps, func() { _ = rc.Close() })
		rctx, cancel := context.WithTimeout(ctx, redisStartTimeout)
		err = checkEviction(rctx, rc, cfg.DedupeAllowEviction, log)
		var legacyUntil time.Time
		if err == nil {
			legacyUntil, err = dedupe.LegacyUntil(rctx, rc, dedupe.Options{TTL: cfg.DedupeTTL}, time.Now())
		}
		cancel()
		if err != nil {
			c.close()
			return nil, err
		}
		if !legacyUntil.IsZero() && time.Now().Before(legacyUntil) {
			log.Info().Time("until", legacyUntil).Str("legacy_prefix", dedupe.LegacyPrefix).
				Msg("dedupe: also honouring facts done under the previous key format until then")
		}
		d = dedupe.NewRedis(rc, dedupe.Options{TTL: cfg.DedupeTTL, LegacyUntil: legacyUntil})
	}
	metrics := NewMetrics(c.registry)
	d = metered(d, metrics.dedupeErrors)

	var err error
	c.nc, err = topology.Connect(topology.ConnectOptions{URL: cfg.NATSURL, Creds: cfg.NATSCreds, Name: "wxpay-consumer", InProcess: deps.InProcess}, log)
	if err != nil {
		c.close()
		return nil, err
	}
	// The events of a batch are published asynchronously (HandleBatch), and a PubAck that never comes
	// (a stream without quorum drops the publish) must not keep its future pending for ever: pending
	// futures count against the client's limit of asynchronous publishes in flight.
	if c.js, err = jetstream.New(c.nc, jetstream.WithPublishAsyncTimeout(callTimeout)); err != nil {
		c.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// Streams: create what is missing, change nothing (`wxpayctl streams apply` does that). The durable's
	// fleet-wide settings: the configuration's, the same that apply sets, whatever this process's workers.
	layout := cfg.Topology()
	if err := topology.Ensure(sctx, c.js, layout); err != nil {
		c.close()
		return nil, err
	}
	if c.cons, err = topology.EnsureConsumer(sctx, c.js, layout); err != nil {
		c.close()
		return nil, err
	}
	c.warnLayout(sctx)
	info := c.cons.CachedInfo()
	c.proc = &Processor{
		Ciphers:     ciphers,
		Dedupe:      d,
		JS:          c.js,
		Log:         log,
		Metrics:     metrics,
		MaxDeliver:  info.Config.MaxDeliver,
		CallTimeout: callTimeout,
		Tracer:      tracing.NewTracer(deps.TracerProvider),
	}
	var lc net.ListenConfig
	if c.adminLn, err = lc.Listen(ctx, "tcp", cfg.AdminAddr); err != nil {
		c.close()
		return nil, fmt.Errorf("ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}
	return c, nil
}

// AdminAddr is the bound admin address.
func (c *Consumer) AdminAddr() net.Addr { return c.adminLn.Addr() }

// Serve consumes with CONSUMER_WORKERS workers until ctx ends, then stops pulling, lets the workers finish
// the messages they hold (up to SHUTDOWN_TIMEOUT) and drains NATS. Each worker takes up to CONSUMER_BATCH
// messages at a time (HandleBatch) when the dedupe store claims many facts in one round trip, else one.
func (c *Consumer) Serve(ctx context.Context) error {
	defer c.close()
	batch := 1
	if c.proc.Batches() {
		batch = c.cfg.BatchSize()
	}
	// Enough buffered for every worker to fill its next batch while the pull refills.
	pull := max(c.cfg.Workers*max(batch, 2), 16)
	it, err := c.cons.Messages(jetstream.PullMaxMessages(pull), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(2*time.Second))
	if err != nil {
		return fmt.Errorf("consume %s: %w", topology.ConsumerName, err)
	}
	advisory, err := c.nc.Subscribe(maxDeliveriesAdvisory, c.onMaxDeliveries(ctx))
	if err != nil {
		it.Stop()
		return fmt.Errorf("subscribe to max-deliveries advisories: %w", err)
	}
	defer func() { _ = advisory.Unsubscribe() }()

	c.log.Info().Str("admin_addr", c.AdminAddr().String()).Int("workers", c.cfg.Workers).Int("batch", batch).
		Str("nats", c.nc.ConnectedUrlRedacted()).Str("redis", c.redisTarget()).
		Int("accounts", len(c.cfg.Accounts)).Msg("consumer started")

	// Workers keep their own context: on shutdown they finish what they hold instead of failing it.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var workers sync.WaitGroup
	if batch == 1 {
		for range c.cfg.Workers {
			workers.Go(func() { c.workOne(workCtx, it, c.proc.Handle) })
		}
	} else {
		// One goroutine takes messages from the iterator and hands them to the workers through a
		// channel, so that a worker can see without blocking what else is waiting (the iterator's
		// Next blocks, holding its lock, while any worker waits in it).
		ch := make(chan jetstream.Msg, batch)
		workers.Go(func() {
			defer close(ch)
			c.workOne(workCtx, it, func(_ context.Context, m jetstream.Msg) { ch <- m })
		})
		for range c.cfg.Workers {
			workers.Go(func() { c.workBatches(workCtx, ch, batch) })
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return admin.Serve(gctx, admin.Server(admin.Handler(c.registry, c.ready)), c.adminLn, 2*time.Second)
	})
	g.Go(func() error { c.pollLag(gctx); return nil })
	<-gctx.Done()

	// Stop pulling; messages already buffered are still handed to the workers, then Next reports closed.
	it.Drain()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.cfg.ShutdownTimeout):
		c.log.Warn().Msg("shutdown timeout: unfinished messages will be redelivered after AckWait")
		cancelWork()
		it.Stop()
		<-done
	}
	err = g.Wait()
	if c.nc != nil && !c.nc.IsClosed() {
		_ = c.nc.Drain()
	}
	c.log.Info().Err(err).Msg("consumer stopped")
	return err
}

// workOne hands the iterator's messages one at a time to handle until the iterator closes.
func (c *Consumer) workOne(ctx context.Context, it jetstream.MessagesContext, handle func(context.Context, jetstream.Msg)) {
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return
			}
			c.log.Warn().Err(err).Msg("pull")
			continue
		}
		handle(ctx, msg)
	}
}

// workBatches hands batches of up to size messages to the processor until ch closes: it waits for one
// message, then takes what else is already waiting. It never waits for a batch to fill: under a
// backlog messages wait and batches are full; when traffic is light they are small and nothing is
// delayed for them.
func (c *Consumer) workBatches(ctx context.Context, ch <-chan jetstream.Msg, size int) {
	msgs := make([]jetstream.Msg, 0, size)
	for msg := range ch {
		msgs = append(msgs[:0], msg)
	gather:
		for len(msgs) < size {
			select {
			case m, ok := <-ch:
				if !ok {
					break gather
				}
				msgs = append(msgs, m)
			default:
				break gather
			}
		}
		c.proc.HandleBatch(ctx, msgs)
		clear(msgs)
	}
}

// ready says whether this process can make progress, and if not why: NATS unreachable, the durable
// consumer unreachable (a JetStream cluster without quorum answers "temporarily unavailable"), or the
// inbound stream without a majority of its servers. Nothing is dead-lettered meanwhile: deliveries stop,
// and what was in flight is retried once the cluster answers again.
func (c *Consumer) ready(ctx context.Context) error {
	if !c.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	if _, err := c.cons.Info(ctx); err != nil {
		return topology.Explain(c.js, fmt.Errorf("consumer %s: %w", topology.ConsumerName, err))
	}
	s, err := c.js.Stream(ctx, topology.InboundStream)
	if err != nil {
		return topology.Explain(c.js, fmt.Errorf("stream %s: %w", topology.InboundStream, err))
	}
	if err := topology.Quorum(s.CachedInfo()); err != nil {
		return err
	}
	return topology.Check(ctx, c.js)
}

// warnLayout logs what `wxpayctl streams apply` should fix: an inbound stream still on the layout
// before WECHATPAY_ARCHIVE, whose Limits retention keeps processed notifications, which count against
// INBOUND_MAX_BYTES.
func (c *Consumer) warnLayout(ctx context.Context) {
	s, err := c.js.Stream(ctx, topology.InboundStream)
	if err != nil {
		return
	}
	if r := s.CachedInfo().Config.Retention; r != jetstream.InterestPolicy {
		c.log.Warn().Str("stream", topology.InboundStream).Str("retention", r.String()).
			Msg("the inbound stream still keeps processed notifications (the layout before " + topology.ArchiveStream +
				"): run `wxpayctl streams apply` (README \"Upgrading\")")
	}
}

// pollLag publishes the durable consumer's pending and ack-pending counts every few seconds.
//
// Every minute it also creates what is missing of the layout. The archive consumer deletes itself after
// WECHATPAY_ARCHIVE has been gone for topology.ArchiveInactiveThreshold (so that it cannot keep finished
// work in WECHATPAY_INBOUND for ever); once the archive is back, this brings the copy back without
// waiting for the next `wxpayctl streams apply`.
func (c *Consumer) pollLag(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for tick := 0; ; tick++ {
		ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if info, err := c.cons.Info(ictx); err == nil {
			c.proc.Metrics.pending.Set(float64(info.NumPending))
			c.proc.Metrics.ackPending.Set(float64(info.NumAckPending))
		}
		cancel()
		if tick%12 == 11 {
			ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := topology.Ensure(ectx, c.js, c.cfg.Topology()); err != nil && ctx.Err() == nil {
				c.log.Warn().Err(err).Msg("check the streams and consumers exist")
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const maxDeliveriesAdvisory = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + topology.InboundStream + "." + topology.ConsumerName

// onMaxDeliveries dead-letters a message whose last delivery was never settled (its worker crashed or
// hung): JetStream stops redelivering it and, without this, it would sit in the stream unnoticed. Every
// consumer process receives the advisory; the DLQ message id makes their copies one entry.
func (c *Consumer) onMaxDeliveries(ctx context.Context) nats.MsgHandler {
	return func(m *nats.Msg) {
		var adv struct {
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries uint64 `json:"deliveries"`
		}
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			c.log.Error().Err(err).Msg("unreadable max-deliveries advisory")
			return
		}
		go func() {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := c.deadLetterBySeq(actx, adv.StreamSeq, adv.Deliveries); err != nil {
				c.log.Error().Err(err).Uint64("stream_seq", adv.StreamSeq).Msg("dead-letter after max deliveries failed; the message stays in the inbound stream")
				return
			}
			c.log.Error().Uint64("stream_seq", adv.StreamSeq).Str("reason", reasonMaxDeliveries).Msg("notification dead-lettered after max deliveries")
		}()
	}
}

func (c *Consumer) deadLetterBySeq(ctx context.Context, seq, deliveries uint64) error {
	s, err := c.js.Stream(ctx, topology.InboundStream)
	if err != nil {
		return err
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // another consumer process handled this advisory first
	}
	if err != nil {
		return fmt.Errorf("get inbound message %d: %w", seq, err)
	}
	mchid, _, _ := topology.ParseInboundSubject(raw.Subject)
	dm := dlqMessage(raw.Subject, raw.Data, raw.Header, seq, deliveries, mchid, reasonMaxDeliveries,
		errors.New("delivery limit reached without the message being settled (worker crashed or timed out)"), time.Now())
	if err := c.proc.publishDLQ(ctx, dm, seq); err != nil {
		return err
	}
	c.proc.Metrics.dlq.WithLabelValues(reasonMaxDeliveries).Inc()
	// JetStream keeps a message that reached MaxDeliver unacknowledged, and under Interest retention that
	// means for good: it would count against INBOUND_MAX_BYTES forever. It is in the DLQ now (and its
	// copy in the archive), so it goes.
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("dead-lettered, but delete inbound message %d: %w", seq, err)
	}
	return nil
}

// callTimeout bounds each Redis and NATS call of a batch, so that an outage turns into a retry quickly.
const callTimeout = 3 * time.Second

// redisStartTimeout bounds the start-up questions to Redis (its eviction policy, its key format); an
// unreachable Redis fails the start within it, as an unreachable NATS does.
const redisStartTimeout = 15 * time.Second

// checkEviction refuses to run on a Redis that may evict dedupe keys. Every key has a TTL, so under any
// maxmemory-policy but noeviction a full Redis silently forgets facts and WeChat Pay's next retry of one is
// published again; under noeviction it refuses new claims instead, which the consumer retries. allow
// (DEDUPE_ALLOW_EVICTION) turns the refusal into a warning. A Redis that will not say (managed services
// disable CONFIG) gets a warning once, and the consumer runs.
func checkEviction(ctx context.Context, rc redis.UniversalClient, allow bool, log zerolog.Logger) error {
	nodes, err := dedupe.MaxmemoryPolicies(ctx, rc)
	if errors.Is(err, dedupe.ErrConfigRefused) {
		log.Warn().Err(err).Msg("dedupe: cannot read Redis's maxmemory-policy; make sure it is noeviction, " +
			"or a full Redis may evict dedupe keys and their facts be published again")
		return nil
	}
	if err != nil {
		return fmt.Errorf("redis: read maxmemory-policy at start: %w", err)
	}
	var evicting, unbounded []string
	for _, n := range nodes {
		if n.Evicts() {
			evicting = append(evicting, fmt.Sprintf("%s on %s", n.Policy, n.Addr))
		}
		if n.MaxMemory == 0 {
			unbounded = append(unbounded, n.Addr)
		}
	}
	if len(evicting) == 0 {
		if len(unbounded) > 0 {
			log.Warn().Strs("redis", unbounded).Msg("dedupe: Redis has no maxmemory: it never refuses a write and grows " +
				"until its container or host runs out of memory; set maxmemory (README \"Capacity\")")
			return nil
		}
		log.Info().Str("maxmemory_policy", dedupe.NoEviction).Msg("dedupe: Redis refuses writes when full instead of evicting")
		return nil
	}
	if !allow {
		return fmt.Errorf("redis: maxmemory-policy %s may evict dedupe keys when Redis is full, and every fact it "+
			"forgets is published again: set maxmemory-policy %s (README \"Capacity\"), or DEDUPE_ALLOW_EVICTION=true to run anyway",
			strings.Join(evicting, ", "), dedupe.NoEviction)
	}
	log.Warn().Strs("maxmemory_policy", evicting).
		Msg("DEDUPE_ALLOW_EVICTION=true: Redis may evict dedupe keys when it is full; a fact it forgets is " +
			"published again when WeChat Pay retries it. Set maxmemory-policy noeviction to rule this out")
	return nil
}

func (c *Consumer) close() {
	if c.adminLn != nil {
		_ = c.adminLn.Close()
	}
	if c.nc != nil && !c.nc.IsClosed() {
		c.nc.Close()
	}
	for _, f := range c.closeDeps {
		f()
	}
}

// redisLogger sends go-redis's internal messages (pool dial failures) to the debug log: the errors that
// matter reach the processor as ErrUnavailable and are logged there once per message.
type redisLogger struct{ log zerolog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Str("component", "go-redis").Msgf(format, v...)
}

// redisTarget names the dedupe store for the start-up line: the Redis from the configuration, or the
// store a caller handed in (dev's embedded one).
func (c *Consumer) redisTarget() string {
	if c.embeddedDedupe {
		return "(embedded store)"
	}
	return c.cfg.Redis.Target()
}
