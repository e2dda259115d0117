package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// BatchDeduper is a Deduper that also claims, commits and releases many facts in one round trip (a
// *dedupe.Redis). Result i and error i belong to key or claim i and mean what the single call would
// have returned.
type BatchDeduper interface {
	Deduper
	ClaimMany(ctx context.Context, keys []string) ([]dedupe.Claim, []error)
	CommitMany(ctx context.Context, cs []dedupe.Claim) ([]dedupe.CommitResult, []error)
	ReleaseMany(ctx context.Context, cs []dedupe.Claim) []error
}

// Batches reports whether the processor's dedupe store claims many facts in one round trip. Serve
// hands a worker several messages at a time only then: with a store that claims one fact per round
// trip, the messages of a batch would wait in line for each other's claims, unacknowledged, and a
// worker holding one message at a time keeps the parallelism CONSUMER_WORKERS says.
func (p *Processor) Batches() bool {
	_, ok := p.Dedupe.(BatchDeduper)
	return ok
}

// oneByOne gives a Deduper without batch methods (a test's wrapper, dev's embedded store) the batch
// shape: one call per fact, in order.
type oneByOne struct{ Deduper }

func (o oneByOne) ClaimMany(ctx context.Context, keys []string) ([]dedupe.Claim, []error) {
	cs, errs := make([]dedupe.Claim, len(keys)), make([]error, len(keys))
	for i, k := range keys {
		cs[i], errs[i] = o.Claim(ctx, k)
	}
	return cs, errs
}

func (o oneByOne) CommitMany(ctx context.Context, cs []dedupe.Claim) ([]dedupe.CommitResult, []error) {
	res, errs := make([]dedupe.CommitResult, len(cs)), make([]error, len(cs))
	for i, c := range cs {
		res[i], errs[i] = o.Commit(ctx, c)
	}
	return res, errs
}

func (o oneByOne) ReleaseMany(ctx context.Context, cs []dedupe.Claim) []error {
	errs := make([]error, len(cs))
	for i, c := range cs {
		errs[i] = o.Release(ctx, c)
	}
	return errs
}

func (p *Processor) batchDedupe() BatchDeduper {
	if b, ok := p.Dedupe.(BatchDeduper); ok {
		return b
	}
	return oneByOne{p.Dedupe}
}

// delivery is one message of a batch on its way through the steps.
type delivery struct {
	msg   jetstream.Msg
	meta  *jetstream.MsgMetadata
	ctx   context.Context // carries the delivery's span: every step's span is its child
	span  trace.Span
	start time.Time
	res   result
	err   error // the first failure, in the order of the message's facts; nil: may be acknowledged
	// published: at least one of its facts was published by this delivery.
	published bool
	settleErr error
	disp      dispositionResult
	outcome   string
}

// fail records err as the delivery's failure unless an earlier step or fact already failed.
func (d *delivery) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// fact is one business fact (one event) of a delivery.
type fact struct {
	d     *delivery
	ev    events.Event
	claim dedupe.Claim
	span  trace.Span // the publish span, from the publish to its PubAck
	ack   jetstream.PubAckFuture
	err   error // claim, publish or commit failure of this fact
}

// HandleBatch processes msgs together and settles each on its own. Every message goes through the
// same steps as alone — parse → decrypt → map → claim → publish → PubAck → commit → ack — and the
// round trips of a step are shared: one Redis pipeline claims the facts of all messages, their events
// are published asynchronously and their PubAcks awaited together, one pipeline commits the published
// ones, and the acks are confirmed by one round trip. A message's failure is its own: its facts are
// released or left uncommitted, its disposition (ack, delayed NAK, dead letter) is decided by
// disposition from its own error and deliveries, and the other messages of the batch go on.
//
// A message that reaches the publish only if its claim succeeded; the commit only if its PubAck came;
// the ack only if every fact of it is published (or was already) and committed. So the delivery
// promise is the single message's, whatever the batch.
func (p *Processor) HandleBatch(ctx context.Context, msgs []jetstream.Msg) {
	ds := make([]*delivery, 0, len(msgs))
	for _, msg := range msgs {
		start := time.Now()
		meta, err := msg.Metadata()
		if err != nil {
			p.Log.Error().Err(err).Msg("message without JetStream metadata; left for redelivery")
			continue
		}
		dctx := ctx
		if p.Tracer.On() {
			// Every delivery, redelivery and DLQ replay continues the trace the receiver stored.
			dctx = tracing.Extract(dctx, msg.Headers())
		}
		d := &delivery{msg: msg, meta: meta, start: start}
		d.ctx, d.span = p.Tracer.Start(dctx, tracing.SpanProcess, trace.SpanKindConsumer)
		d.res, d.err = p.prepare(d.ctx, msg)
		ds = append(ds, d)
	}

	var facts []*fact
	for _, d := range ds {
		if d.err != nil {
			continue
		}
		for _, ev := range d.res.events {
			facts = append(facts, &fact{d: d, ev: ev})
		}
	}
	if len(facts) > 0 {
		p.claimAll(ctx, facts)
		p.publishAll(ctx, facts)
		p.finishAll(ctx, facts)
	}
	// Each delivery's error is its first failing fact's, in the order of its facts, as when the facts
	// of a combined payment were processed one after the other.
	for _, f := range facts {
		if f.err != nil {
			f.d.fail(f.err)
		}
	}
	p.settleAll(ctx, ds)
	for _, d := range ds {
		p.logDelivery(d)
	}
}

// claimAll claims every fact in one round trip. A fact found done is a duplicate; one busy with another
// worker fails its delivery with ErrBusy (retried after busyDelay); a claim error fails it with the
// store's error (retried).
func (p *Processor) claimAll(ctx context.Context, facts []*fact) {
	keys := make([]string, len(facts))
	spans := make([]trace.Span, len(facts))
	for i, f := range facts {
		keys[i] = f.ev.DedupeKey
		_, spans[i] = p.Tracer.Start(f.d.ctx, tracing.SpanDedupeClaim, trace.SpanKindClient)
	}
	cctx, cancel := context.WithTimeout(ctx, p.CallTimeout)
	claims, errs := p.batchDedupe().ClaimMany(cctx, keys)
	cancel()
	for i, f := range facts {
		err := errs[i]
		if span := spans[i]; span.IsRecording() {
			span.SetAttributes(tracing.AttrEventID.String(f.ev.ID))
			if err == nil {
				span.SetAttributes(tracing.AttrDedupeState.String(claims[i].State.String()))
			}
		}
		endStep(spans[i], err)
		if err != nil {
			f.err = fmt.Errorf("claim %s: %w", f.ev.DedupeKey, err)
			continue
		}
		f.claim = claims[i]
		if f.claim.State == dedupe.Busy {
			f.err = ErrBusy
		}
	}
}

// publishAll sends the event of every claimed fact without waiting, then waits for their PubAcks, all
// within one CallTimeout. With tracing on, each event carries its publish span's context twice: as the
// traceparent header, for NATS-aware consumers, and as the CloudEvents distributed-tracing extension,
// which survives a copy of the document elsewhere.
func (p *Processor) publishAll(ctx context.Context, facts []*fact) {
	for _, f := range facts {
		if f.err != nil || f.claim.State != dedupe.Claimed {
			continue
		}
		f.ack, f.err = p.publishAsync(f)
		if f.err != nil {
			endStep(f.span, f.err)
		}
	}
	deadline := time.NewTimer(p.CallTimeout)
	defer deadline.Stop()
	expired := false
	for _, f := range facts {
		if f.ack == nil {
			continue
		}
		var err error
		if expired {
			// No more waiting: take what has come.
			select {
			case <-f.ack.Ok():
			case err = <-f.ack.Err():
			default:
				err = context.DeadlineExceeded
			}
		} else {
			select {
			case <-f.ack.Ok():
			case err = <-f.ack.Err():
			case <-deadline.C:
				expired, err = true, context.DeadlineExceeded
			case <-ctx.Done():
				expired, err = true, ctx.Err()
			}
		}
		if err != nil {
			f.err = fmt.Errorf("%w %s to %s: %w", errPublish, f.ev.ID, f.ack.Msg().Subject, err)
		}
		endStep(f.span, f.err)
	}
}

// publishAsync starts the publish of f's event; the returned future settles with its PubAck.
func (p *Processor) publishAsync(f *fact) (jetstream.PubAckFuture, error) {
	ev := f.ev
	m := &nats.Msg{Subject: topology.EventSubject(ev.Type, ev.MchID, ev.SubMchID), Header: nats.Header{}}
	m.Header.Set("Content-Type", "application/cloudevents+json")
	var ctx context.Context
	ctx, f.span = p.Tracer.Start(f.d.ctx, tracing.SpanPublish, trace.SpanKindProducer)
	if f.span.IsRecording() {
		f.span.SetAttributes(tracing.Messaging(tracing.Send, m.Subject, ev.ID)...)
		f.span.SetAttributes(tracing.AttrEventID.String(ev.ID), tracing.AttrType.String(ev.Type))
	}
	if p.Tracer.On() {
		tracing.Inject(ctx, m.Header)
		ev.TraceParent = m.Header.Get(tracing.HeaderTraceParent)
	}
	var err error
	if m.Data, err = ev.CloudEvent(); err != nil {
		return nil, fmt.Errorf("%w: encode: %w", events.ErrMalformed, err)
	}
	fut, err := p.JS.PublishMsgAsync(m, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(topology.EventsStream))
	if err != nil {
		return nil, fmt.Errorf("%w %s to %s: %w", errPublish, ev.ID, m.Subject, err)
	}
	return fut, nil
}

// finishAll commits every published fact in one round trip, and gives back, in another, the claims of
// the facts whose publish failed, so that their retry need not wait for the lease to expire. Both run
// on after a cancelled ctx: the events are out, or the claims are ours to return.
func (p *Processor) finishAll(ctx context.Context, facts []*fact) {
	var commit, release []*fact
	for _, f := range facts {
		switch {
		case f.claim.State != dedupe.Claimed:
		case f.err == nil:
			commit = append(commit, f)
		default:
			release = append(release, f)
		}
	}
	bd := p.batchDedupe()
	if len(release) > 0 {
		claims := make([]dedupe.Claim, len(release))
		spans := make([]trace.Span, len(release))
		for i, f := range release {
			claims[i] = f.claim
			_, spans[i] = p.Tracer.Start(f.d.ctx, tracing.SpanDedupeRelease, trace.SpanKindClient)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
		errs := bd.ReleaseMany(rctx, claims)
		cancel()
		for i, f := range release {
			endStep(spans[i], errs[i])
			if errs[i] != nil {
				f.err = errors.Join(f.err, fmt.Errorf("release claim: %w", errs[i]))
			}
		}
	}
	if len(commit) == 0 {
		return
	}
	claims := make([]dedupe.Claim, len(commit))
	spans := make([]trace.Span, len(commit))
	for i, f := range commit {
		claims[i] = f.claim
		_, spans[i] = p.Tracer.Start(f.d.ctx, tracing.SpanDedupeCommit, trace.SpanKindClient)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
	results, errs := bd.CommitMany(cctx, claims)
	cancel()
	for i, f := range commit {
		err := errs[i]
		if span := spans[i]; span.IsRecording() {
			span.SetAttributes(tracing.AttrEventID.String(f.ev.ID))
			if err == nil {
				span.SetAttributes(tracing.AttrDedupeCommit.String(results[i].String()))
			}
		}
		endStep(spans[i], err)
		// The event is out either way.
		f.d.published = true
		if err != nil {
			// If the commit is lost, the redelivery publishes the same event id again and JetStream's
			// duplicate window on WECHATPAY_EVENTS drops it.
			f.err = fmt.Errorf("commit %s after publishing: %w", f.ev.DedupeKey, err)
			continue
		}
		if results[i].LeaseLost() {
			p.Metrics.leaseLost.WithLabelValues(results[i].String()).Inc()
		}
	}
}

// settleAll settles each delivery as disposition says from its own error: ack, delayed NAK, or
// dead-letter and terminate.
func (p *Processor) settleAll(ctx context.Context, ds []*delivery) {
	var acks []*delivery
	for _, d := range ds {
		d.disp = disposition(d.err, d.meta.NumDelivered, p.MaxDeliver)
		d.outcome = outcomeDuplicate
		if d.published {
			d.outcome = outcomePublished
		}
		switch d.disp.action {
		case ack:
			acks = append(acks, d)
		case retry:
			d.outcome = outcomeRetried
			d.settleErr = d.msg.NakWithDelay(d.disp.delay)
		case deadLetterAction:
			d.outcome = outcomeDeadLettered
			d.settleErr = p.deadLetter(d.ctx, d.msg, d.meta, d.res.mchid, d.disp.reason, d.err)
		}
	}
	p.ackAll(ctx, acks)
}

// ackAll acknowledges ds and confirms that the server processed the acks in one round trip: a plain
// Ack (one publish, no reply) for each but the last, then DoubleAck for the last, which waits for the
// server's reply. The confirmation covers the earlier acks because they travel on the same connection
// to the same durable consumer, and the server reads a connection's messages in order and processes a
// consumer's acks in the order it queued them (one queue, one goroutine per consumer; in a cluster
// the reply comes once the ack is replicated, and the replicated acks keep that order). So when the
// last ack's reply comes, every ack before it has been processed: the guarantee DoubleAck gave each
// message, for the price of one. If the reply does not come in time, every ack of the batch is
// reported unconfirmed; an ack that was in fact lost only means a redelivery after AckWait, which finds
// the facts done and acknowledges again.
func (p *Processor) ackAll(ctx context.Context, ds []*delivery) {
	if len(ds) == 0 {
		return
	}
	last := len(ds) - 1
	sent := make([]*delivery, 0, len(ds))
	for _, d := range ds[:last] {
		if d.settleErr = d.msg.Ack(); d.settleErr == nil {
			sent = append(sent, d)
		}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
	defer cancel()
	if err := ds[last].msg.DoubleAck(actx); err != nil {
		ds[last].settleErr = err
		for _, d := range sent {
			d.settleErr = fmt.Errorf("ack not confirmed: %w", err)
		}
	}
}

// logDelivery writes the delivery's one log line, counts it, and ends its span.
func (p *Processor) logDelivery(d *delivery) {
	latency := time.Since(d.start)
	p.Metrics.observe(d.res.typ(), d.outcome, latency)
	lvl := zerolog.InfoLevel
	switch {
	case d.settleErr != nil || d.disp.action == deadLetterAction:
		lvl = zerolog.ErrorLevel
	case d.disp.action == retry:
		lvl = zerolog.WarnLevel
	}
	e := p.Log.WithLevel(lvl).
		Str("mchid", d.res.mchid).
		Str("notification_id", d.res.env.ID).
		Str("event_type", d.res.env.EventType).
		Str("type", d.res.typ()).
		Strs("event_ids", d.res.ids()).
		Uint64("stream_seq", d.meta.Sequence.Stream).
		Uint64("deliveries", d.meta.NumDelivered).
		Str("outcome", d.outcome).
		Dur("latency", latency)
	if d.disp.reason != "" {
		e = e.Str("reason", d.disp.reason)
	}
	if d.err != nil {
		e = e.AnErr("error", d.err)
	}
	if d.settleErr != nil {
		e = e.AnErr("settle_error", d.settleErr)
	}
	tracing.LogIDs(e, d.span).Msg("notification processed")
	if d.span.IsRecording() {
		recordDelivery(d.span, d.msg, d.meta, d.res, d.outcome, d.disp, errors.Join(d.err, d.settleErr))
	}
	d.span.End()
}
