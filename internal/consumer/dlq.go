package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// Headers of a dead-lettered message, besides the original Wechatpay-* and Request-ID headers.
const (
	HeaderDLQReason          = "Dlq-Reason"
	HeaderDLQError           = "Dlq-Error"
	HeaderDLQOriginalSubject = "Dlq-Original-Subject"
	HeaderDLQDeliveries      = "Dlq-Deliveries"
	HeaderDLQAt              = "Dlq-At"
	HeaderDLQStreamSeq       = "Dlq-Stream-Seq"
	HeaderDLQOriginalMsgID   = "Dlq-Original-Msg-Id"
)

// maxErrorHeader keeps Dlq-Error readable; error texts never carry plaintext, but they can be long.
const maxErrorHeader = 512

// dlqMessage builds the dead-letter copy of an inbound message: the raw body and its headers, plus why.
func dlqMessage(subject string, data []byte, hdr nats.Header, seq, deliveries uint64, mchid, reason string, cause error, now time.Time) *nats.Msg {
	if mchid == "" {
		mchid = "unknown"
	}
	out := nats.Header{}
	for k, v := range hdr {
		if strings.HasPrefix(k, "Wechatpay-") || k == topology.HeaderRequestID {
			out[k] = v
		}
	}
	if id := hdr.Get(jetstream.MsgIDHeader); id != "" {
		out.Set(HeaderDLQOriginalMsgID, id)
	}
	errText := ""
	if cause != nil {
		errText = cause.Error()
		if len(errText) > maxErrorHeader {
			errText = errText[:maxErrorHeader]
		}
		errText = strings.NewReplacer("\r", " ", "\n", " ").Replace(errText)
	}
	out.Set(HeaderDLQReason, reason)
	out.Set(HeaderDLQError, errText)
	out.Set(HeaderDLQOriginalSubject, subject)
	out.Set(HeaderDLQDeliveries, strconv.FormatUint(deliveries, 10))
	out.Set(HeaderDLQAt, now.UTC().Format(time.RFC3339Nano))
	out.Set(HeaderDLQStreamSeq, strconv.FormatUint(seq, 10))
	return &nats.Msg{Subject: topology.DLQSubject(reason, mchid), Data: data, Header: out}
}

// dlqMsgID makes the two dead-letter paths of one inbound message (the worker's, and the max-deliveries
// advisory's after a crash) collapse into one DLQ entry.
func dlqMsgID(seq uint64) string { return "dlq:" + strconv.FormatUint(seq, 10) }

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

func (p *Processor) publishDLQ(ctx context.Context, m *nats.Msg, seq uint64) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.CallTimeout)
	defer cancel()
	if _, err := p.JS.PublishMsg(pctx, m, jetstream.WithMsgID(dlqMsgID(seq)), jetstream.WithExpectStream(topology.DLQStream)); err != nil {
		return fmt.Errorf("publish to DLQ %s: %w", m.Subject, err)
	}
	return nil
}
