// Package consumer turns stored notifications into domain events: for each inbound message it parses the
// envelope, decrypts the resource, maps it to typed events (one per business fact: a combined payment holds
// several), and for each claims the fact in the dedupe store, publishes one CloudEvent and commits; only then
// it acknowledges. What cannot be processed is dead-lettered with its
// reason; what may succeed later is retried with a delay. A worker handles several messages at a time
// (HandleBatch), sharing the round trips to Redis and JetStream between them, and settles each on its own.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

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
	env    envelope.Envelope
	mchid  string
	events []events.Event // one per business fact (several for a combined payment)
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

// Handle processes msg and settles it: ack, delayed NAK, or dead-letter and terminate. It is
// HandleBatch of one message.
func (p *Processor) Handle(ctx context.Context, msg jetstream.Msg) {
	p.HandleBatch(ctx, []jetstream.Msg{msg})
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

// prepare runs the steps of one message that need no round trip: parse → decrypt → map. The batch then
// claims, publishes and commits the events of all its messages together (HandleBatch).
func (p *Processor) prepare(ctx context.Context, msg jetstream.Msg) (result, error) {
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
	return res, nil
}
