// Package consumer turns stored notifications into domain events: for each inbound message it parses the
// envelope, decrypts the resource, maps it to typed events (one per business fact: a combined payment holds
// several), and for each claims the fact in the dedupe store, publishes one CloudEvent and commits; only then
// it acknowledges. What cannot be processed is dead-lettered with its
// reason; what may succeed later is retried with a delay.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// Deduper remembers which business facts were already published (a *dedupe.Redis in production).
type Deduper interface {
	Claim(ctx context.Context, key string) (dedupe.Claim, error)
	Commit(ctx context.Context, c dedupe.Claim) (dedupe.CommitResult, error)
	Release(ctx context.Context, c dedupe.Claim) error
}

// Cipher opens an encrypted notification resource (a *decrypt.Cipher).
type Cipher interface {
	Open(algorithm, nonce, associatedData, ciphertextB64 string) ([]byte, error)
}

// Errors the processor raises itself.
var (
	// ErrUnknownMerchant: the inbound subject names a merchant this consumer has no key for.
	ErrUnknownMerchant = errors.New("consumer: no account configured for this merchant")
	// ErrBusy: another worker holds a live claim on the same business fact.
	ErrBusy = errors.New("consumer: business fact being processed by another worker")
	// errPublish wraps a failed publish of the domain event (retryable).
	errPublish = errors.New("consumer: publish domain event")
)

// Outcomes of one message, as metric labels.
const (
	outcomePublished    = "published"
	outcomeDuplicate    = "duplicate"
	outcomeDeadLettered = "dead_lettered"
	outcomeRetried      = "retried"
)

// Processor processes one inbound message at a time; it is safe for concurrent use by many workers.
type Processor struct {
	Ciphers    map[string]Cipher // by merchant id
	Dedupe     Deduper
	JS         jetstream.JetStream
	Log        zerolog.Logger
	Metrics    *Metrics
	MaxDeliver int
	// CallTimeout bounds each Redis and NATS call, so that an outage turns into a retry quickly.
	CallTimeout time.Duration
	// Tracer traces each delivery as a child of the receiver's span stored with the message; the zero
	// value is tracing off.
	Tracer tracing.Tracer
}

// result is what processing one message produced.
type result struct {
	env     envelope.Envelope
	mchid   string
	events  []events.Event // one per business fact (several for a combined payment)
	outcome string         // published (at least one event new) or duplicate, when err is nil
}

// typ is the domain type of the message's events, also when mapping failed (from the envelope's event
// type); "" when even that is unknown.
func (r result) typ() string {
	if len(r.events) > 0 {
		return r.events[0].Type
	}
	for _, m := range events.Mappings() {
		if m.EventType == r.env.EventType {
			return m.Type
		}
	}
	return ""
}

// ids lists the event ids, for the log line.
func (r result) ids() []string {
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.ID
	}
	return out
}

// Handle processes msg and settles it: ack, delayed NAK, or dead-letter and terminate.
func (p *Processor) Handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	meta, err := msg.Metadata()
	if err != nil {
		p.Log.Error().Err(err).Msg("message without JetStream metadata; left for redelivery")
		return
	}
	if p.Tracer.On() {
		// Every delivery, redelivery and DLQ replay continues the trace the receiver stored.
		ctx = tracing.Extract(ctx, msg.Headers())
	}
	ctx, span := p.Tracer.Start(ctx, tracing.SpanProcess, trace.SpanKindConsumer)
	res, err := p.process(ctx, msg)
	d := disposition(err, meta.NumDelivered, p.MaxDeliver)

	outcome := res.outcome
	var settleErr error
	switch d.action {
	case ack:
		settleErr = p.ack(ctx, msg)
	case retry:
		outcome = outcomeRetried
		settleErr = msg.NakWithDelay(d.delay)
	case deadLetterAction:
		outcome = outcomeDeadLettered
		settleErr = p.deadLetter(ctx, msg, meta, res.mchid, d.reason, err)
	}
	p.Metrics.observe(res.typ(), outcome, time.Since(start))

	lvl := zerolog.InfoLevel
	switch {
	case settleErr != nil || d.action == deadLetterAction:
		lvl = zerolog.ErrorLevel
	case d.action == retry:
		lvl = zerolog.WarnLevel
	}
	e := p.Log.WithLevel(lvl).
		Str("mchid", res.mchid).
		Str("notification_id", res.env.ID).
		Str("event_type", res.env.EventType).
		Str("type", res.typ()).
		Strs("event_ids", res.ids()).
		Uint64("stream_seq", meta.Sequence.Stream).
		Uint64("deliveries", meta.NumDelivered).
		Str("outcome", outcome).
		Dur("latency", time.Since(start))
	if d.reason != "" {
		e = e.Str("reason", d.reason)
	}
	if err != nil {
		e = e.AnErr("error", err)
	}
	if settleErr != nil {
		e = e.AnErr("settle_error", settleErr)
	}
	tracing.LogIDs(e, span).Msg("notification processed")
	if span.IsRecording() {
		recordDelivery(span, msg, meta, res, outcome, d, errors.Join(err, settleErr))
	}
	span.End()
}

// recordDelivery describes one delivery on its span: which message, which notification, what became
// of it and why.
func recordDelivery(span trace.Span, msg jetstream.Msg, meta *jetstream.MsgMetadata, res result, outcome string, d dispositionResult, err error) {
	span.SetAttributes(tracing.Messaging(tracing.Process, msg.Subject(), msg.Headers().Get(jetstream.MsgIDHeader))...)
	span.SetAttributes(
		tracing.AttrDeliveries.Int64(int64(meta.NumDelivered)),
		tracing.AttrStreamSeq.Int64(int64(meta.Sequence.Stream)),
		tracing.AttrMchID.String(res.mchid),
		tracing.AttrNotificationID.String(res.env.ID),
		tracing.AttrEventType.String(res.env.EventType),
		tracing.AttrType.String(res.typ()),
		tracing.AttrEvents.Int(len(res.events)),
		tracing.AttrOutcome.String(outcome),
	)
	if d.reason != "" {
		span.SetAttributes(tracing.AttrReason.String(d.reason))
	}
	if d.action == retry {
		span.SetAttributes(tracing.AttrRetryDelay.Float64(d.delay.Seconds()))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}

// endStep ends the span of one step, marking it failed with err.
func endStep(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// process runs the steps parse → decrypt → map → claim → publish → commit. A nil error means the event
// is published (or was already), and the message may be acknowledged.
func (p *Processor) process(ctx context.Context, msg jetstream.Msg) (result, error) {
	var res result
	mchid, _, ok := topology.ParseInboundSubject(msg.Subject())
	if !ok {
		return res, fmt.Errorf("%w: subject %q is not an inbound subject", envelope.ErrMalformed, msg.Subject())
	}
	res.mchid = mchid

	env, err := envelope.Parse(msg.Data())
	if err != nil {
		return res, err
	}
	res.env = env
	if !events.Supported(env.EventType) {
		return res, fmt.Errorf("%w: %s", events.ErrUnsupportedEventType, env.EventType)
	}
	cipher, ok := p.Ciphers[mchid]
	if !ok {
		return res, fmt.Errorf("%w: %s", ErrUnknownMerchant, mchid)
	}
	r := env.Resource
	_, span := p.Tracer.Start(ctx, tracing.SpanDecrypt, trace.SpanKindInternal)
	plaintext, err := cipher.Open(r.Algorithm, r.Nonce, r.AssociatedData, r.Ciphertext)
	endStep(span, err)
	if err != nil {
		return res, fmt.Errorf("decrypt notification %s: %w", env.ID, err)
	}
	evs, err := events.Build(events.Notification{ID: env.ID, EventType: env.EventType, CreateTime: env.CreateTime, MchID: mchid}, plaintext)
	if err != nil {
		return res, fmt.Errorf("map notification %s: %w", env.ID, err)
	}
	res.events = evs

	// Each fact is claimed, published and committed on its own. A failure part way through a combined
	// payment leaves the facts already done committed: the redelivery finds them done and goes on with
	// the rest, so every sub-order is published exactly once.
	res.outcome = outcomeDuplicate
	for _, ev := range evs {
		published, err := p.publishOnce(ctx, ev)
		if err != nil {
			return res, err
		}
		if published {
			res.outcome = outcomePublished
		}
	}
	return res, nil
}

// publishOnce claims ev's business fact, publishes it and commits the claim. It reports false for a fact
// that was already published.
func (p *Processor) publishOnce(ctx context.Context, ev events.Event) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, p.CallTimeout)
	cctx, span := p.Tracer.Start(cctx, tracing.SpanDedupeClaim, trace.SpanKindClient)
	claim, err := p.Dedupe.Claim(cctx, ev.DedupeKey)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrEventID.String(ev.ID))
		if err == nil {
			span.SetAttributes(tracing.AttrDedupeState.String(claim.State.String()))
		}
	}
	endStep(span, err)
	cancel()
	if err != nil {
		return false, fmt.Errorf("claim %s: %w", ev.DedupeKey, err)
	}
	switch claim.State {
	case dedupe.Done:
		return false, nil
	case dedupe.Busy:
		return false, ErrBusy
	}

	if err := p.publish(ctx, ev); err != nil {
		// Give the fact back at once so that the retry need not wait for the lease to expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
		rctx, span := p.Tracer.Start(rctx, tracing.SpanDedupeRelease, trace.SpanKindClient)
		rerr := p.Dedupe.Release(rctx, claim)
		endStep(span, rerr)
		if rerr != nil {
			err = errors.Join(err, fmt.Errorf("release claim: %w", rerr))
		}
		cancel()
		return false, err
	}
	cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
	cctx, span = p.Tracer.Start(cctx, tracing.SpanDedupeCommit, trace.SpanKindClient)
	committed, err := p.Dedupe.Commit(cctx, claim)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrEventID.String(ev.ID))
		if err == nil {
			span.SetAttributes(tracing.AttrDedupeCommit.String(committed.String()))
		}
	}
	endStep(span, err)
	cancel()
	if err != nil {
		// The event is out; if the commit is lost, the redelivery publishes the same event id again and
		// JetStream's duplicate window on WECHATPAY_EVENTS drops it.
		return true, fmt.Errorf("commit %s after publishing: %w", ev.DedupeKey, err)
	}
	if committed.LeaseLost() {
		p.Metrics.leaseLost.WithLabelValues(committed.String()).Inc()
	}
	return true, nil
}

// publish sends the CloudEvent and waits for JetStream's acknowledgement. With tracing on, the event
// carries its publish span's context twice: as the traceparent header, for NATS-aware consumers, and
// as the CloudEvents distributed-tracing extension, which survives a copy of the document elsewhere.
func (p *Processor) publish(ctx context.Context, ev events.Event) (err error) {
	m := &nats.Msg{Subject: topology.EventSubject(ev.Type, ev.MchID, ev.SubMchID), Header: nats.Header{}}
	m.Header.Set("Content-Type", "application/cloudevents+json")
	ctx, span := p.Tracer.Start(ctx, tracing.SpanPublish, trace.SpanKindProducer)
	defer func() { endStep(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(tracing.Messaging(tracing.Send, m.Subject, ev.ID)...)
		span.SetAttributes(tracing.AttrEventID.String(ev.ID), tracing.AttrType.String(ev.Type))
	}
	if p.Tracer.On() {
		tracing.Inject(ctx, m.Header)
		ev.TraceParent = m.Header.Get(tracing.HeaderTraceParent)
	}
	m.Data, err = ev.CloudEvent()
	if err != nil {
		return fmt.Errorf("%w: encode: %w", events.ErrMalformed, err)
	}
	pctx, cancel := context.WithTimeout(ctx, p.CallTimeout)
	defer cancel()
	if _, err := p.JS.PublishMsg(pctx, m, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(topology.EventsStream)); err != nil {
		return fmt.Errorf("%w %s to %s: %w", errPublish, ev.ID, m.Subject, err)
	}
	return nil
}

// ack acknowledges and waits for the server's confirmation, so that a lost ack shows as an error here.
func (p *Processor) ack(ctx context.Context, msg jetstream.Msg) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
	defer cancel()
	return msg.DoubleAck(actx)
}
