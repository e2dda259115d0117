package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// DefaultTimeout bounds each NATS request of a Store.
const DefaultTimeout = 5 * time.Second

// inactiveThreshold lets the server remove a scan's ordered consumer soon after its process died without
// removing it.
const inactiveThreshold = 30 * time.Second

// Store reads, replays and purges WECHATPAY_DLQ.
type Store struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	timeout time.Duration
	tracer  tracing.Tracer
}

// An Option configures a Store.
type Option func(*Store)

// WithTracerProvider traces each replay with a span linked to the dead letter's original trace; nil or a
// no-op provider is tracing off (the default).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *Store) { s.tracer = tracing.NewTracer(tp) }
}

// Open finds WECHATPAY_DLQ; ErrNoStream when it does not exist.
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Store, error) {
	cctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	s, err := js.Stream(cctx, topology.DLQStream)
	if err != nil {
		if topology.IsNotFound(err) {
			return nil, fmt.Errorf("%w (run: wxpayctl streams apply): %w", ErrNoStream, err)
		}
		return nil, fmt.Errorf("dlq: stream %s: %w", topology.DLQStream, err)
	}
	st := &Store{js: js, stream: s, timeout: DefaultTimeout}
	for _, o := range opts {
		o(st)
	}
	return st, nil
}

// Scan reads the DLQ in order and returns the entries that pass every filter, up to f.Limit; more says
// the limit cut the list short.
func (s *Store) Scan(ctx context.Context, f Filter) (entries []Entry, more bool, err error) {
	if err := f.Validate(); err != nil {
		return nil, false, err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.Subjects(), DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: inactiveThreshold}
	switch {
	case f.From > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.From
	case !f.Since.IsZero():
		since := f.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, false, fmt.Errorf("dlq: read %s: %w", topology.DLQStream, err)
	}
	defer s.removeConsumer(ctx, cons)
	if cons.CachedInfo().NumPending == 0 {
		return nil, false, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, false, fmt.Errorf("dlq: read %s: %w", topology.DLQStream, err)
	}
	defer it.Stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, s.timeout)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return nil, false, fmt.Errorf("dlq: read %s: %w", topology.DLQStream, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, false, fmt.Errorf("dlq: read %s: %w", topology.DLQStream, err)
		}
		seq := meta.Sequence.Stream
		if (f.To > 0 && seq > f.To) || (!f.Until.IsZero() && !meta.Timestamp.Before(f.Until)) {
			return entries, false, nil
		}
		if f.Since.IsZero() || !meta.Timestamp.Before(f.Since) {
			e := EntryFrom(seq, meta.Timestamp, m.Subject(), m.Headers(), m.Data())
			if f.MatchEventType(e.EventType) {
				if f.Limit > 0 && len(entries) == f.Limit {
					return entries, true, nil
				}
				entries = append(entries, e)
			}
		}
		if meta.NumPending == 0 {
			return entries, false, nil
		}
	}
}

// removeConsumer deletes a scan's ordered consumer as the scan ends, instead of leaving it to the
// inactivity threshold.
func (s *Store) removeConsumer(ctx context.Context, cons jetstream.Consumer) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = s.js.DeleteConsumer(dctx, topology.DLQStream, cons.CachedInfo().Name) // best effort: the threshold is the fallback
}

// Get reads entry seq; ErrNotFound when there is none.
func (s *Store) Get(ctx context.Context, seq uint64) (Entry, error) {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	raw, err := s.stream.GetMsg(cctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("%w: %s has no entry %d (replayed or purged?)", ErrNotFound, topology.DLQStream, seq)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("dlq: get entry %d: %w", seq, err)
	}
	return EntryFrom(seq, raw.Time, raw.Subject, raw.Header, raw.Data), nil
}

// Delete removes entry seq; an entry already gone is not an error.
func (s *Store) Delete(ctx context.Context, seq uint64) error {
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.stream.DeleteMsg(cctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	// The server answers a delete of a deleted message with a generic "deletion unsuccessful"; whether the
	// entry is gone is what matters.
	if _, gerr := s.stream.GetMsg(cctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("dlq: delete entry %d: %w", seq, err)
}

// Replayed says what a replay did.
type Replayed struct {
	Seq        uint64 `json:"seq"`
	Target     string `json:"target,omitempty"` // the inbound subject it went to
	MsgID      string `json:"msg_id,omitempty"`
	InboundSeq uint64 `json:"inbound_seq,omitempty"`
	// Duplicate: the inbound stream already had this replay (a re-run after a crash between the publish
	// and the delete).
	Duplicate bool `json:"duplicate,omitempty"`
}

// Plan says where entry e would be replayed to, without doing it: its target subject and message id, or
// ErrNotInbound.
func Plan(e Entry) (Replayed, error) {
	r := Replayed{Seq: e.Seq, Target: e.OriginalSubject, MsgID: ReplayMsgID(e.OriginalMsgID, e.OriginalSubject, e.NotificationID, e.Seq)}
	if _, _, ok := topology.ParseInboundSubject(e.OriginalSubject); !ok {
		return r, fmt.Errorf("%w: Dlq-Original-Subject %q", ErrNotInbound, e.OriginalSubject)
	}
	return r, nil
}

// Replay sends entry seq back to its inbound subject — its body with its Wechatpay-* and Request-ID
// headers, under ReplayMsgID — waits for WECHATPAY_INBOUND's acknowledgement, and only then deletes the
// entry. It fails with ErrNotFound when the entry is gone, ErrNotInbound when it cannot be replayed, and
// otherwise leaves the entry in place on any failure before the acknowledgement. A failed delete after
// the acknowledgement is reported with the Replayed filled in: replaying the entry again is harmless.
//
// The replay carries the notification's own traceparent, so that the consumer's processing of it joins
// the trace of the notification's arrival; with tracing on, the replay's span links to that trace too
// (and lends its own context to an entry stored before tracing, which has none).
func (s *Store) Replay(ctx context.Context, seq uint64) (r Replayed, err error) {
	ctx, span := s.tracer.Start(ctx, tracing.SpanReplay, trace.SpanKindProducer)
	defer func() {
		if span.IsRecording() {
			recordReplay(span, seq, r, err)
		}
		span.End()
	}()
	e, err := s.Get(ctx, seq)
	if err != nil {
		return Replayed{Seq: seq}, err
	}
	header := NotificationHeaders(e.Header)
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrReason.String(e.Reason), tracing.AttrMchID.String(e.MchID),
			tracing.AttrNotificationID.String(e.NotificationID), tracing.AttrEventType.String(e.EventType))
		if original := tracing.Remote(header); original.IsValid() {
			span.AddLink(trace.Link{SpanContext: original, Attributes: []attribute.KeyValue{tracing.AttrLinkKind.String(tracing.LinkDeadLettered)}})
		}
	}
	if s.tracer.On() && header.Get(tracing.HeaderTraceParent) == "" {
		tracing.Inject(ctx, header)
	}
	r, err = Plan(e)
	if err != nil {
		return r, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	m := &nats.Msg{Subject: r.Target, Data: e.Body, Header: header}
	ack, err := s.js.PublishMsg(cctx, m, jetstream.WithMsgID(r.MsgID), jetstream.WithExpectStream(topology.InboundStream))
	if err != nil {
		return r, fmt.Errorf("dlq: publish to %s: %w (the entry stays in the DLQ)", topology.InboundStream, err)
	}
	r.InboundSeq, r.Duplicate = ack.Sequence, ack.Duplicate
	if err := s.Delete(ctx, seq); err != nil {
		return r, fmt.Errorf("replayed as inbound %d but not removed from the DLQ (replaying it again is harmless): %w", ack.Sequence, err)
	}
	return r, nil
}

// recordReplay describes a replay on its span: which entry, where it went, and how it ended.
func recordReplay(span trace.Span, seq uint64, r Replayed, err error) {
	span.SetAttributes(tracing.AttrDLQSeq.Int64(int64(seq)))
	if r.Target != "" {
		span.SetAttributes(tracing.Messaging(tracing.Send, r.Target, r.MsgID)...)
	}
	if r.InboundSeq != 0 {
		span.SetAttributes(tracing.AttrStreamSeq.Int64(int64(r.InboundSeq)), tracing.AttrDuplicate.Bool(r.Duplicate))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
}
