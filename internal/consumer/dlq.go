package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// dlqMessage builds the dead-letter entry of an inbound message (see dlq.Message).
func dlqMessage(subject string, data []byte, hdr nats.Header, seq, deliveries uint64, mchid, reason string, cause error, now time.Time) *nats.Msg {
	return dlq.Message(dlq.Inbound{Subject: subject, Data: data, Header: hdr, Seq: seq, Deliveries: deliveries, MchID: mchid}, reason, cause, now)
}

// deadLetter stores msg in the DLQ and then terminates it. If the DLQ cannot be written, the message is
// NAKed instead: it stays in the inbound stream, never lost.
func (p *Processor) deadLetter(ctx context.Context, msg jetstream.Msg, meta *jetstream.MsgMetadata, mchid, reason string, cause error) error {
	dm := dlqMessage(msg.Subject(), msg.Data(), msg.Headers(), meta.Sequence.Stream, meta.NumDelivered, mchid, reason, cause, time.Now())
	if err := p.publishDLQ(ctx, dm, meta.Sequence.Stream); err != nil {
		if nerr := msg.NakWithDelay(5 * time.Second); nerr != nil {
			return errors.Join(err, fmt.Errorf("and NAK: %w", nerr))
		}
		return err
	}
	p.Metrics.dlq.WithLabelValues(reason).Inc()
	// If the terminate is lost, the redelivery dead-letters again under the same DLQ message id.
	return msg.TermWithReason("dead-lettered: " + reason)
}

// publishDLQ stores a dead-letter entry. The entry keeps the notification's own traceparent (see
// dlq.NotificationHeaders), so that its replay continues the receiver's trace; this span only times the
// store.
func (p *Processor) publishDLQ(ctx context.Context, m *nats.Msg, seq uint64) (err error) {
	if p.Tracer.On() && !trace.SpanContextFromContext(ctx).IsValid() {
		// Dead-lettered from the max-deliveries advisory, outside any delivery: join the notification's
		// trace from its stored headers.
		ctx = tracing.Extract(ctx, m.Header)
	}
	ctx, span := p.Tracer.Start(ctx, tracing.SpanDeadLetter, trace.SpanKindProducer)
	defer func() { endStep(span, err) }()
	if span.IsRecording() {
		span.SetAttributes(tracing.Messaging(tracing.Send, m.Subject, dlq.MsgID(seq))...)
		span.SetAttributes(tracing.AttrReason.String(m.Header.Get(dlq.HeaderReason)))
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
	defer cancel()
	if _, err := p.JS.PublishMsg(pctx, m, jetstream.WithMsgID(dlq.MsgID(seq)), jetstream.WithExpectStream(topology.DLQStream)); err != nil {
		return fmt.Errorf("publish to DLQ %s: %w", m.Subject, err)
	}
	return nil
}
