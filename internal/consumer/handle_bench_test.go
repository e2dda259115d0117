package consumer_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// benchMsg is one delivered inbound message, settled in memory.
type benchMsg struct {
	jetstream.Msg // the methods Handle does not call
	subject       string
	data          []byte
	header        nats.Header
	meta          jetstream.MsgMetadata
}

func (m *benchMsg) Metadata() (*jetstream.MsgMetadata, error) { return &m.meta, nil }
func (m *benchMsg) Subject() string                           { return m.subject }
func (m *benchMsg) Data() []byte                              { return m.data }
func (m *benchMsg) Headers() nats.Header                      { return m.header }
func (m *benchMsg) DoubleAck(context.Context) error           { return nil }
func (m *benchMsg) Ack() error                                { return nil }

// benchJS acknowledges every publish at once.
type benchJS struct{ jetstream.JetStream }

func (benchJS) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return &jetstream.PubAck{Stream: topology.EventsStream, Sequence: 1}, nil
}

func (benchJS) PublishMsgAsync(m *nats.Msg, _ ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f := benchFuture{msg: m, ok: make(chan *jetstream.PubAck, 1)}
	f.ok <- &jetstream.PubAck{Stream: topology.EventsStream, Sequence: 1}
	return f, nil
}

// benchFuture is a PubAck that has already come.
type benchFuture struct {
	msg *nats.Msg
	ok  chan *jetstream.PubAck
}

func (f benchFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f benchFuture) Err() <-chan error            { return nil }
func (f benchFuture) Msg() *nats.Msg               { return f.msg }

// benchDedupe grants every claim, so that each op runs the whole path: claim, publish, commit.
type benchDedupe struct{}

func (benchDedupe) Claim(_ context.Context, key string) (dedupe.Claim, error) {
	return dedupe.Claim{Key: key, Token: "t", State: dedupe.Claimed}, nil
}
func (benchDedupe) Commit(context.Context, dedupe.Claim) (dedupe.CommitResult, error) {
	return dedupe.Committed, nil
}
func (benchDedupe) Release(context.Context, dedupe.Claim) error { return nil }

func (d benchDedupe) ClaimMany(ctx context.Context, keys []string) ([]dedupe.Claim, []error) {
	cs := make([]dedupe.Claim, len(keys))
	for i, k := range keys {
		cs[i], _ = d.Claim(ctx, k)
	}
	return cs, make([]error, len(keys))
}

func (benchDedupe) CommitMany(_ context.Context, cs []dedupe.Claim) ([]dedupe.CommitResult, []error) {
	res := make([]dedupe.CommitResult, len(cs))
	for i := range res {
		res[i] = dedupe.Committed
	}
	return res, make([]error, len(cs))
}

func (benchDedupe) ReleaseMany(_ context.Context, cs []dedupe.Claim) []error {
	return make([]error, len(cs))
}

// benchProcessor is a Processor whose Redis and JetStream answer at once, and one stored payment
// notification as the receiver left it, so that a benchmark measures the consumer's own work: parse,
// decrypt, map, encode, log, metrics.
func benchProcessor(b *testing.B) (*consumer.Processor, *benchMsg) {
	p := pipelinetest.SharedPlatform()
	n, err := p.Build("TRANSACTION.SUCCESS", samples.All()["TRANSACTION.SUCCESS"], wechatsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ci, err := decrypt.New(p.APIv3Key)
	if err != nil {
		b.Fatal(err)
	}
	msg := &benchMsg{
		subject: topology.InboundSubject(p.MchID, "transaction.success"),
		data:    n.Body,
		header:  nats.Header{"Wechatpay-Serial": {n.Header.Get("Wechatpay-Serial")}},
		meta:    jetstream.MsgMetadata{NumDelivered: 1, Sequence: jetstream.SequencePair{Stream: 1, Consumer: 1}},
	}
	return &consumer.Processor{
		Ciphers:     map[string]consumer.Cipher{p.MchID: ci},
		Dedupe:      benchDedupe{},
		JS:          benchJS{},
		Log:         zerolog.New(io.Discard),
		Metrics:     consumer.NewMetrics(prometheus.NewRegistry()),
		MaxDeliver:  20,
		CallTimeout: 3 * time.Second,
	}, msg
}

func benchHandle(b *testing.B, p *consumer.Processor, msg *benchMsg) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p.Handle(ctx, msg)
	}
}

// BenchmarkHandle: one delivery of a payment notification, published, without tracing configured.
func BenchmarkHandle(b *testing.B) {
	p, msg := benchProcessor(b)
	benchHandle(b, p, msg)
}

// BenchmarkHandleBatch: a batch of CONSUMER_BATCH's default deliveries handed to one worker. An op is the
// batch; µs/msg compares with BenchmarkHandle's µs/op (divide B/op and allocs/op by the batch size too).
func BenchmarkHandleBatch(b *testing.B) {
	p, msg := benchProcessor(b)
	msgs := make([]jetstream.Msg, config.DefaultConsumerBatch)
	for i := range msgs {
		msgs[i] = msg
	}
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		p.HandleBatch(ctx, msgs)
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*len(msgs))/1e3, "µs/msg")
}
