// Package subscribe lets a service receive wxpay-events' domain events from
// NATS JetStream as typed Go values, in about ten lines:
//
//	js, _ := jetstream.New(nc)
//	s, err := subscribe.New(js, "orders",
//		subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
//			return markPaid(ctx, e.ID, p.OutTradeNo) // e.ID: the same fact always has the same id
//		}),
//	)
//	if err != nil {
//		return err
//	}
//	return s.Run(ctx)
//
// The subscriber is a durable pull consumer on WECHATPAY_EVENTS named after
// the service, so several replicas share the work and a restart resumes where
// the last one stopped. It is created or updated when Run starts, filtered to
// the event types the service handles (and the merchants and sub-merchants it
// asks for). Each event is handled once per delivery by one of N workers and
// settled by the handler's result: nil acknowledges it; an error delivers it
// again after a growing delay; Permanent(err) terminates it and records it;
// a panic is recovered, logged with the event id and delivered again later.
// Delivery is at least once — a crash between the handler's commit and the
// acknowledgement delivers the event again — so handlers key their work by
// the event id.
//
// Each delivery continues the producer's trace: the handler's context carries
// a span (kind consumer) whose parent is the span that published the event,
// read from the message's W3C traceparent header or the event's traceparent
// attribute. The span is recorded by the TracerProvider option, by default
// OpenTelemetry's global one, which records nothing until the service sets
// one; the trace id is in the handler's context either way.
//
// The package imports wxevents, nats.go's jetstream and OpenTelemetry's API
// (never its SDK), nothing else of wxpay-events, and logs through log/slog.
package subscribe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

var (
	// ErrPermanent marks an error that delivering the event again cannot
	// cure; see Permanent.
	ErrPermanent = errors.New("subscribe: permanent failure")
	// ErrNoHandler means an event type is subscribed without an On handler
	// and without OnUnknown to take it.
	ErrNoHandler = errors.New("subscribe: no handler for the event type")
	// ErrInvalidOption means New was given options it cannot work with; the
	// message lists every problem.
	ErrInvalidOption = errors.New("subscribe: invalid option")
	// ErrPanic means a handler panicked; the event is delivered again later.
	ErrPanic = errors.New("subscribe: handler panicked")
)

// Permanent wraps err to say that delivering the event again cannot help —
// an order the service has never heard of, a payment for another shop — so
// the subscriber terminates the event instead of retrying it, logs it and
// hands it to OnGiveUp. errors.Is(Permanent(err), ErrPermanent) and
// errors.Is(Permanent(err), err) both hold. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// Subscriber delivers the events of one durable consumer to typed handlers.
// Create it with New and start it with Run.
type Subscriber struct {
	js    jetstream.JetStream
	name  string
	o     options
	ready chan struct{}
	once  sync.Once
}

// New checks the options and returns a subscriber for the service name,
// which names its durable consumer: letters, digits, '-' and '_'. It does no
// I/O; Run creates the consumer. At least one On handler (or OnUnknown) is
// required. Every problem with the options is reported at once, wrapped in
// ErrInvalidOption (or ErrNoHandler).
func New(js jetstream.JetStream, name string, opts ...Option) (*Subscriber, error) {
	o := options{
		handlers:   map[wxevents.Type]handlerFunc{},
		workers:    DefaultWorkers,
		ackWait:    DefaultAckWait,
		maxDeliver: DefaultMaxDeliver,
		minBackoff: DefaultMinBackoff,
		maxBackoff: DefaultMaxBackoff,
		start:      start{policy: "new"},
		log:        slog.Default(),
		tracer:     otel.GetTracerProvider().Tracer(tracerScope),
	}
	for _, opt := range opts {
		opt(&o)
	}
	if js == nil {
		o.problems = append(o.problems, "nil JetStream")
	}
	if !validName(name) {
		o.problems = append(o.problems, fmt.Sprintf("name %q: want 1 to 64 letters, digits, '-' or '_'", name))
	}
	if len(o.handlers) == 0 && o.unknown == nil {
		o.problems = append(o.problems, "no handler: give at least one On (or OnUnknown)")
	}
	if len(o.problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidOption, strings.Join(o.problems, "; "))
	}
	if o.unknown == nil {
		if o.allTypes {
			return nil, fmt.Errorf("%w: AllTypes receives types without a handler; give OnUnknown", ErrNoHandler)
		}
		var missing []string
		for _, t := range o.types {
			if _, ok := o.handlers[t]; !ok {
				missing = append(missing, string(t))
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("%w: %s (give On for each, or OnUnknown)", ErrNoHandler, strings.Join(missing, ", "))
		}
	}
	if o.description == "" {
		o.description = "wxpay-events subscriber " + name
	}
	return &Subscriber{js: js, name: name, o: o, ready: make(chan struct{})}, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range s {
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// Ready is closed once Run has created or updated the durable consumer and
// started fetching: from then on the consumer's start position is fixed and
// Lag is meaningful. A service can gate its readiness probe on it.
func (s *Subscriber) Ready() <-chan struct{} { return s.ready }

// Name is the service name, which is also the durable consumer's name.
func (s *Subscriber) Name() string { return s.name }

// FilterSubjects returns the subjects of WECHATPAY_EVENTS the subscriber
// receives: one per combination of event type, merchant and sub-merchant
// asked for, '*' where it asked for all.
func (s *Subscriber) FilterSubjects() []string {
	types := []string{""}
	if !s.o.allTypes {
		ts := s.o.types
		if len(ts) == 0 {
			ts = s.o.order
		}
		if len(ts) > 0 {
			types = types[:0]
			for _, t := range ts {
				types = append(types, string(t))
			}
		}
	}
	merchants, subs := orAny(s.o.merchants), orAny(s.o.subs)
	var out []string
	for _, t := range types {
		for _, m := range merchants {
			for _, sub := range subs {
				out = append(out, wxevents.SubjectFilter(t, m, sub))
			}
		}
	}
	return out
}

func orAny(list []string) []string {
	if len(list) == 0 {
		return []string{""}
	}
	return list
}

// ConsumerConfig is the durable consumer Run creates or updates.
func (s *Subscriber) ConsumerConfig() jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:     s.name,
		Description: s.o.description,
		AckPolicy:   jetstream.AckExplicitPolicy,
		AckWait:     s.o.ackWait,
		MaxDeliver:  s.o.maxDeliver,
	}
	switch s.o.start.policy {
	case "time":
		at := s.o.start.at
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &at
	case "all":
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if f := s.FilterSubjects(); len(f) == 1 {
		cfg.FilterSubject = f[0]
	} else {
		cfg.FilterSubjects = f
	}
	return cfg
}

// ensure creates the durable consumer, or updates it keeping where it
// started: JetStream refuses to change a consumer's start position, and a
// service redeployed with another start option must resume, not fail.
func (s *Subscriber) ensure(ctx context.Context) (jetstream.Consumer, error) {
	cfg := s.ConsumerConfig()
	for attempt := 0; ; attempt++ {
		existing, err := s.js.Consumer(ctx, wxevents.Stream, s.name)
		switch {
		case err == nil:
			old := existing.CachedInfo().Config
			cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = old.DeliverPolicy, old.OptStartTime, old.OptStartSeq
		case !errors.Is(err, jetstream.ErrConsumerNotFound):
			return nil, fmt.Errorf("subscribe %s: look up consumer on %s: %w", s.name, wxevents.Stream, err)
		}
		c, err := s.js.CreateOrUpdateConsumer(ctx, wxevents.Stream, cfg)
		if err == nil {
			return c, nil
		}
		// Another replica may have created it between the lookup and the
		// create, with another start time: look again, once.
		if attempt == 0 && ctx.Err() == nil {
			continue
		}
		return nil, fmt.Errorf("subscribe %s: create or update consumer on %s: %w", s.name, wxevents.Stream, err)
	}
}

// Run creates or updates the durable consumer and handles events until ctx
// is cancelled, then drains: it stops fetching, hands the events fetched but
// not started back to JetStream (so another replica takes them at once),
// lets the handlers in flight finish (each within AckWait) and settles their
// events, and returns nil. It returns an error if the consumer cannot be set
// up (the stream WECHATPAY_EVENTS is missing, NATS is unreachable) or is
// deleted while running. Run may be called again after it returned.
func (s *Subscriber) Run(ctx context.Context) error {
	cons, err := s.ensure(ctx)
	switch {
	case ctx.Err() != nil:
		return nil //nolint:nilerr // cancelled while setting up: a clean stop, whatever the setup reported
	case err != nil:
		return err
	}
	// A small buffer: fetched events wait for a worker, and their AckWait
	// runs meanwhile.
	it, err := cons.Messages(jetstream.PullMaxMessages(s.o.workers), jetstream.WithMessagesErrOnMissingHeartbeat(false))
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", s.name, err)
	}
	s.once.Do(func() { close(s.ready) })
	work := make(chan jetstream.Msg)
	// Handlers outlive ctx: a shutdown lets them finish within AckWait.
	hctx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for range s.o.workers {
		wg.Go(func() {
			for m := range work {
				s.handle(hctx, m)
			}
		})
	}
	runErr := s.dispatch(ctx, it, work)
	close(work)
	wg.Wait()
	return runErr
}

// dispatch feeds fetched messages to the workers until ctx ends or the
// consumer goes away.
func (s *Subscriber) dispatch(ctx context.Context, it jetstream.MessagesContext, work chan<- jetstream.Msg) error {
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			if err == nil {
				_ = m.Nak() // not started: let another replica take it now
			}
			s.giveBack(it)
			return nil
		}
		if err != nil {
			it.Stop()
			return fmt.Errorf("subscribe %s: fetch: %w", s.name, err)
		}
		select {
		case work <- m:
		case <-ctx.Done():
			_ = m.Nak() // not started: let another replica take it now
			s.giveBack(it)
			return nil
		}
	}
}

// giveBack stops fetching and returns the events already fetched but not
// started, instead of letting them wait out AckWait.
func (s *Subscriber) giveBack(it jetstream.MessagesContext) {
	it.Drain()
	for {
		m, err := it.Next(jetstream.NextMaxWait(time.Second))
		if err != nil {
			it.Stop()
			return
		}
		_ = m.Nak()
	}
}

// handle runs the handler for one message and settles it.
func (s *Subscriber) handle(ctx context.Context, m jetstream.Msg) {
	attempt := uint64(1)
	if meta, err := m.Metadata(); err == nil {
		attempt = meta.NumDelivered
	}
	// The event may have waited in the buffer; its AckWait starts now.
	_ = m.InProgress()

	e, perr := wxevents.Parse(m.Data())
	if perr != nil {
		e = wxevents.Event{ID: m.Headers().Get(jetstream.MsgIDHeader)}
	}
	ctx, span := s.startSpan(ctx, m, e, attempt)
	defer span.End()
	hctx, cancel := context.WithTimeout(ctx, s.o.ackWait)
	defer cancel()

	var err error
	if perr != nil {
		err = s.call(hctx, e, func(ctx context.Context) error { return s.unknownEvent(ctx, e, perr) })
	} else {
		err = s.call(hctx, e, func(ctx context.Context) error { return s.dispatchEvent(ctx, e) })
	}
	s.settle(ctx, m, e, attempt, err)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}

// traceContext is the W3C propagator: the wire format is the contract's, not
// whatever propagator the service has installed globally.
var traceContext = propagation.TraceContext{}

// header adapts a message's NATS headers to OpenTelemetry's carrier.
type header map[string][]string

func (h header) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h header) Set(key, value string) { h[key] = []string{value} }

func (h header) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// startSpan starts the delivery's span as a child of the span that published
// the event: from the message's traceparent header, else the event's
// traceparent attribute (a copy of the document without its headers).
func (s *Subscriber) startSpan(ctx context.Context, m jetstream.Msg, e wxevents.Event, attempt uint64) (context.Context, trace.Span) {
	parent := traceContext.Extract(ctx, header(m.Headers()))
	if !trace.SpanContextFromContext(parent).IsValid() && e.TraceParent != "" {
		parent = traceContext.Extract(ctx, propagation.MapCarrier{"traceparent": e.TraceParent})
	}
	return s.o.tracer.Start(parent, "process "+wxevents.Stream, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", m.Subject()),
		attribute.String("messaging.consumer.group.name", s.name),
		attribute.String("messaging.message.id", e.ID),
		attribute.Int64("messaging.nats.delivery_count", int64(attempt)),
		attribute.String("cloudevents.event_id", e.ID),
		attribute.String("cloudevents.event_type", e.Type),
		attribute.String("cloudevents.event_source", e.Source),
		attribute.String("cloudevents.event_subject", e.Subject),
	))
}

// dispatchEvent hands e to the handler of its type, or to the unknown path.
func (s *Subscriber) dispatchEvent(ctx context.Context, e wxevents.Event) error {
	h, ok := s.o.handlers[e.DomainType()]
	if !ok {
		err := fmt.Errorf("%w: %s", ErrNoHandler, e.DomainType())
		if !e.DomainType().Known() {
			_, err = e.Decode() // ErrUnknownType
		}
		return s.unknownEvent(ctx, e, err)
	}
	err := h(ctx, e)
	if u, ok := errors.AsType[*undecodable](err); ok {
		return s.unknownEvent(ctx, e, u.err)
	}
	return err
}

// unknownEvent takes an event no typed handler can take: OnUnknown decides,
// or, without it, the event counts as failed and is delivered again.
func (s *Subscriber) unknownEvent(ctx context.Context, e wxevents.Event, err error) error {
	if s.o.unknown == nil {
		return err
	}
	return s.o.unknown(ctx, e, err)
}

// call runs fn, turning a panic into ErrPanic after logging it with the
// event's id and the stack.
func (s *Subscriber) call(ctx context.Context, e wxevents.Event, fn func(context.Context) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.o.log.ErrorContext(ctx, "wxevents handler panicked; the event will be delivered again",
				"subscriber", s.name, "event_id", e.ID, "type", e.Type, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %v", ErrPanic, r)
		}
	}()
	return fn(ctx)
}

// settle acknowledges, delays, or terminates m after its handler returned
// err on delivery attempt.
func (s *Subscriber) settle(ctx context.Context, m jetstream.Msg, e wxevents.Event, attempt uint64, err error) {
	log := s.o.log.With("subscriber", s.name, "event_id", e.ID, "type", e.Type, "attempt", attempt)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		log = log.With("trace_id", sc.TraceID().String())
	}
	switch {
	case err == nil:
		if aerr := m.Ack(); aerr != nil {
			log.WarnContext(ctx, "wxevents ack failed; the event will be delivered again", "error", aerr)
		}
	case errors.Is(err, ErrPermanent):
		s.terminate(ctx, m, e, log, err)
	case s.o.maxDeliver > 0 && attempt >= uint64(s.o.maxDeliver):
		s.terminate(ctx, m, e, log, fmt.Errorf("failed on all %d deliveries, the last: %w", s.o.maxDeliver, err))
	default:
		delay := s.backoff(attempt)
		log.WarnContext(ctx, "wxevents handler failed; the event will be delivered again", "error", err, "delay", delay)
		if nerr := m.NakWithDelay(delay); nerr != nil {
			log.WarnContext(ctx, "wxevents nak failed; the event comes back after AckWait", "error", nerr)
		}
	}
}

// terminate stops the deliveries of m for good and records why.
func (s *Subscriber) terminate(ctx context.Context, m jetstream.Msg, e wxevents.Event, log *slog.Logger, err error) {
	log.ErrorContext(ctx, "wxevents event given up", "error", err)
	reason := err.Error()
	if len(reason) > 256 {
		reason = reason[:256]
	}
	if terr := m.TermWithReason(reason); terr != nil {
		log.WarnContext(ctx, "wxevents terminate failed", "error", terr)
	}
	if s.o.giveUp != nil {
		s.o.giveUp(ctx, e, err)
	}
}

// backoff is the delay after the attempt-th failed delivery.
func (s *Subscriber) backoff(attempt uint64) time.Duration {
	d := s.o.minBackoff
	for i := uint64(1); i < attempt && d < s.o.maxBackoff; i++ {
		d *= 2
	}
	return min(d, s.o.maxBackoff)
}

// Lag is how far a subscriber is behind, for a service to export as metrics.
type Lag struct {
	// Pending counts the events matching the filter not yet delivered.
	Pending uint64
	// AckPending counts the events delivered and not yet settled: being
	// handled, or waiting for a delayed redelivery.
	AckPending int
	// Redelivered counts the events among AckPending delivered more than
	// once.
	Redelivered int
}

// Lag asks JetStream how far the durable consumer is behind. It fails with
// jetstream.ErrConsumerNotFound before the first Run created it, and may
// read zero while Run is still creating it: wait for Ready first.
func (s *Subscriber) Lag(ctx context.Context) (Lag, error) {
	c, err := s.js.Consumer(ctx, wxevents.Stream, s.name)
	if err != nil {
		return Lag{}, fmt.Errorf("subscribe %s: lag: %w", s.name, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return Lag{}, fmt.Errorf("subscribe %s: lag: %w", s.name, err)
	}
	return Lag{Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered}, nil
}
