package tracing_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/schemas"
	"github.com/wxpay-events/wxpay-events/wxevents"
	"github.com/wxpay-events/wxpay-events/wxevents/subscribe"
)

// provider is a recording provider for one program, exporting into exp as each span ends.
func provider(t *testing.T, exp *tracetest.InMemoryExporter, service string) *sdktrace.TracerProvider {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// spans are the exported spans, found by name.
type spans []tracetest.SpanStub

func (s spans) named(name string) spans {
	var out spans
	for _, sp := range s {
		if sp.Name == name {
			out = append(out, sp)
		}
	}
	return out
}

func (s spans) one(t *testing.T, name string) tracetest.SpanStub {
	t.Helper()
	got := s.named(name)
	if len(got) != 1 {
		t.Fatalf("%d spans %q, want 1 (all: %v)", len(got), name, s.names())
	}
	return got[0]
}

func (s spans) names() []string {
	out := make([]string, len(s))
	for i, sp := range s {
		out[i] = sp.Name
	}
	return out
}

func attr(sp tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range sp.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func traceparent(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
}

func childOf(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.Parent.SpanID() != parent.SpanContext.SpanID() || child.SpanContext.TraceID() != parent.SpanContext.TraceID() {
		t.Errorf("%q: parent %s in trace %s, want %q (%s in %s)", child.Name, child.Parent.SpanID(), child.SpanContext.TraceID(),
			parent.Name, parent.SpanContext.SpanID(), parent.SpanContext.TraceID())
	}
}

// One notification is one trace: the receiver's server span (the root), the consumer's delivery span under
// it (across JetStream, from the stored traceparent) with its steps, and a subscriber's span under the
// publish, whose context the handler gets. The event carries the publish span's context as header and as
// CloudEvents extension; the log lines carry the trace id; no span carries the body or the signature.
func TestOneNotificationIsOneTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := pipelinetest.StartWith(t, pipelinetest.Options{TracerProvider: provider(t, exp, "wxpay-receiver")})
	p.StartConsumer(pipelinetest.ConsumerOptions{TracerProvider: provider(t, exp, "wxpay-consumer")})

	inHandler := make(chan trace.SpanContext, 1)
	sub, err := subscribe.New(p.JetStream(), "orders", subscribe.FromBeginning(), subscribe.TracerProvider(provider(t, exp, "orders")),
		subscribe.On(func(ctx context.Context, _ wxevents.Event, _ wxevents.PaymentSucceeded) error {
			inHandler <- trace.SpanContextFromContext(ctx)
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	runSubscriber(t, sub)

	n := p.Build("TRANSACTION.SUCCESS", samples.All()["TRANSACTION.SUCCESS"], wechatsim.Options{})
	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("receiver answered %d", code)
	}
	var handlerSC trace.SpanContext
	select {
	case handlerSC = <-inHandler:
	case <-time.After(20 * time.Second):
		t.Fatalf("the subscriber's handler was not called\n%s", p.Logs.String())
	}
	// The subscriber may finish before the consumer has committed and acknowledged: wait for every span
	// (receiver 1, consumer 5, subscriber 1).
	p.WaitFor(10*time.Second, "seven spans", func() bool { return len(exp.GetSpans()) >= 7 })
	all := spans(exp.GetSpans())
	if len(all) != 7 {
		t.Errorf("%d spans %v, want 7", len(all), all.names())
	}

	recv := all.one(t, tracing.SpanNotify)
	if recv.Parent.IsValid() || recv.SpanKind != trace.SpanKindServer {
		t.Errorf("receiver span: parent %v, kind %s; want a root server span", recv.Parent, recv.SpanKind)
	}
	for key, want := range map[attribute.Key]any{
		tracing.AttrMchID: pipelinetest.MchID, tracing.AttrNotificationID: n.ID, tracing.AttrEventType: "TRANSACTION.SUCCESS",
		tracing.AttrHTTPStatus: int64(http.StatusNoContent), tracing.AttrVerifyOutcome: tracing.VerifyVerified,
		tracing.AttrOutcome: "stored", tracing.AttrReason: "stored",
	} {
		if got := attr(recv, key).AsInterface(); got != want {
			t.Errorf("receiver span %s = %v, want %v", key, got, want)
		}
	}
	if attr(recv, tracing.AttrPublishSeconds).AsFloat64() <= 0 {
		t.Error("receiver span has no publish latency")
	}

	proc := all.one(t, tracing.SpanProcess)
	childOf(t, proc, recv)
	if proc.SpanKind != trace.SpanKindConsumer || attr(proc, tracing.AttrOutcome).AsString() != "published" ||
		attr(proc, tracing.AttrDeliveries).AsInt64() != 1 || attr(proc, tracing.AttrNotificationID).AsString() != n.ID {
		t.Errorf("delivery span: kind %s, attributes %v", proc.SpanKind, proc.Attributes)
	}
	for _, step := range []string{tracing.SpanDecrypt, tracing.SpanDedupeClaim, tracing.SpanPublish, tracing.SpanDedupeCommit} {
		childOf(t, all.one(t, step), proc)
	}
	pub := all.one(t, tracing.SpanPublish)
	handled := all.one(t, "process "+wxevents.Stream)
	childOf(t, handled, pub)
	if handlerSC.SpanID() != handled.SpanContext.SpanID() {
		t.Errorf("the handler's context has span %s, want the subscriber's %s", handlerSC.SpanID(), handled.SpanContext.SpanID())
	}
	for _, sp := range all {
		if sp.SpanContext.TraceID() != recv.SpanContext.TraceID() {
			t.Errorf("%q is in trace %s, not the notification's %s", sp.Name, sp.SpanContext.TraceID(), recv.SpanContext.TraceID())
		}
	}

	// What the messages carry.
	in := p.Messages(topology.InboundStream)
	if len(in) != 1 || in[0].Header.Get(tracing.HeaderTraceParent) != traceparent(recv.SpanContext) {
		t.Errorf("inbound message traceparent %q, want the receiver span's %q", in[0].Header.Get(tracing.HeaderTraceParent), traceparent(recv.SpanContext))
	}
	evs := p.Messages(topology.EventsStream)
	if len(evs) != 1 {
		t.Fatalf("%d events", len(evs))
	}
	e, err := wxevents.Parse(evs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if want := traceparent(pub.SpanContext); e.TraceParent != want || evs[0].Header.Get(tracing.HeaderTraceParent) != want {
		t.Errorf("event traceparent %q, header %q; want the publish span's %q", e.TraceParent, evs[0].Header.Get(tracing.HeaderTraceParent), want)
	}
	set, err := schemas.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := set.ValidateCloudEvent(evs[0].Data); err != nil {
		t.Errorf("a traced event does not match schemas/cloudevent.json: %v", err)
	}

	// Never the body, the ciphertext or the signature.
	var env struct {
		Resource struct{ Ciphertext string } `json:"resource"`
	}
	if err := json.Unmarshal(n.Body, &env); err != nil {
		t.Fatal(err)
	}
	secrets := []string{n.Header.Get("Wechatpay-Signature"), n.Header.Get("Wechatpay-Nonce"), env.Resource.Ciphertext[:32]}
	for _, sp := range all {
		for _, kv := range sp.Attributes {
			for _, s := range secrets {
				if strings.Contains(kv.Value.String(), s) {
					t.Errorf("span %q attribute %s carries a signature header or the ciphertext", sp.Name, kv.Key)
				}
			}
		}
	}

	// Log lines join the trace.
	traceID := `"trace_id":"` + recv.SpanContext.TraceID().String() + `"`
	for _, msg := range []string{`"message":"notification"`, `"message":"notification processed"`} {
		if !logLineWith(p.Logs.String(), msg, traceID) {
			t.Errorf("no log line %s with %s:\n%s", msg, traceID, p.Logs.String())
		}
	}
}

func logLineWith(logs string, parts ...string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

func runSubscriber(t *testing.T, s *subscribe.Subscriber) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("subscriber: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatalf("subscriber stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber not ready")
	}
}

// flakyDedupe fails its first claim, as Redis does in a failover, and then remembers facts in memory.
type flakyDedupe struct {
	mu     sync.Mutex
	failed bool
}

func (d *flakyDedupe) Claim(_ context.Context, key string) (dedupe.Claim, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.failed {
		d.failed = true
		return dedupe.Claim{}, errors.New("test: redis unavailable")
	}
	return dedupe.Claim{Key: key, Token: "t", State: dedupe.Claimed}, nil
}

func (d *flakyDedupe) Commit(context.Context, dedupe.Claim) (dedupe.CommitResult, error) {
	return dedupe.Committed, nil
}

func (d *flakyDedupe) Release(context.Context, dedupe.Claim) error { return nil }

// A redelivery is another delivery span in the same trace, under the same receiver span: the first says
// retried (and why), the second published.
func TestRedeliveryAddsASpanToTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := pipelinetest.StartWith(t, pipelinetest.Options{TracerProvider: provider(t, exp, "wxpay-receiver")})
	p.StartConsumer(pipelinetest.ConsumerOptions{Dedupe: &flakyDedupe{}, TracerProvider: provider(t, exp, "wxpay-consumer")})

	n := p.Build("REFUND.SUCCESS", samples.All()["REFUND.SUCCESS"], wechatsim.Options{})
	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("receiver answered %d", code)
	}
	p.WaitFor(20*time.Second, "the event after one retry", func() bool { return p.Count(topology.EventsStream) == 1 })
	p.WaitFor(10*time.Second, "two delivery spans", func() bool { return len(spans(exp.GetSpans()).named(tracing.SpanProcess)) == 2 })
	all := spans(exp.GetSpans())
	recv := all.one(t, tracing.SpanNotify)
	deliveries := all.named(tracing.SpanProcess)
	for i, d := range deliveries {
		childOf(t, d, recv)
		if got := attr(d, tracing.AttrDeliveries).AsInt64(); got != int64(i+1) {
			t.Errorf("delivery span %d: delivery count %d", i, got)
		}
	}
	first, second := deliveries[0], deliveries[1]
	if attr(first, tracing.AttrOutcome).AsString() != "retried" || first.Status.Code != codes.Error ||
		!strings.Contains(first.Status.Description, "redis unavailable") || attr(first, tracing.AttrRetryDelay).AsFloat64() <= 0 {
		t.Errorf("first delivery: status %v, attributes %v; want retried with the error and the delay", first.Status, first.Attributes)
	}
	if attr(second, tracing.AttrOutcome).AsString() != "published" || second.Status.Code == codes.Error {
		t.Errorf("second delivery: status %v, attributes %v; want published", second.Status, second.Attributes)
	}
}

// A dead letter keeps the notification's traceparent; its replay is a span linked to that trace, and the
// replay's delivery continues it under the receiver's span.
func TestDeadLetterAndReplayStayWithTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	p := pipelinetest.StartWith(t, pipelinetest.Options{TracerProvider: provider(t, exp, "wxpay-receiver")})
	p.StartConsumer(pipelinetest.ConsumerOptions{TracerProvider: provider(t, exp, "wxpay-consumer")})

	n := p.Build("PAYSCORE.USER_OPEN_SERVICE", []byte(`{"out_contract_code":"x"}`), wechatsim.Options{})
	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("receiver answered %d", code)
	}
	p.WaitFor(20*time.Second, "the dead letter", func() bool { return p.Count(topology.DLQStream) == 1 })
	p.WaitFor(10*time.Second, "the receiver's and the delivery's spans", func() bool {
		all := spans(exp.GetSpans())
		return len(all.named(tracing.SpanProcess)) == 1 && len(all.named(tracing.SpanNotify)) == 1
	})
	all := spans(exp.GetSpans())
	recv := all.one(t, tracing.SpanNotify)
	proc := all.one(t, tracing.SpanProcess)
	childOf(t, proc, recv)
	if attr(proc, tracing.AttrOutcome).AsString() != "dead_lettered" || attr(proc, tracing.AttrReason).AsString() != dlq.ReasonUnsupportedEventType {
		t.Errorf("delivery span attributes %v, want dead_lettered with its reason", proc.Attributes)
	}
	childOf(t, all.one(t, tracing.SpanDeadLetter), proc)
	entry := p.Messages(topology.DLQStream)[0]
	if got := entry.Header.Get(tracing.HeaderTraceParent); got != traceparent(recv.SpanContext) {
		t.Fatalf("the dead letter's traceparent is %q, want the receiver span's %q", got, traceparent(recv.SpanContext))
	}

	ctx := context.Background()
	store, err := dlq.Open(ctx, p.JetStream(), dlq.WithTracerProvider(provider(t, exp, "wxpayctl")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Replay(ctx, entry.Sequence); err != nil {
		t.Fatal(err)
	}
	p.WaitFor(20*time.Second, "the replay's delivery span", func() bool { return len(spans(exp.GetSpans()).named(tracing.SpanProcess)) == 2 })
	all = spans(exp.GetSpans())
	replay := all.one(t, tracing.SpanReplay)
	if len(replay.Links) != 1 || replay.Links[0].SpanContext.SpanID() != recv.SpanContext.SpanID() ||
		replay.Links[0].SpanContext.TraceID() != recv.SpanContext.TraceID() {
		t.Errorf("replay span links %v, want one to the receiver's span", replay.Links)
	}
	if attr(replay, tracing.AttrDLQSeq).AsInt64() != int64(entry.Sequence) {
		t.Errorf("replay span attributes %v", replay.Attributes)
	}
	childOf(t, all.named(tracing.SpanProcess)[1], recv)
	inbound := p.Messages(topology.InboundStream)
	if last := inbound[len(inbound)-1]; last.Header.Get(tracing.HeaderTraceParent) != traceparent(recv.SpanContext) ||
		!strings.Contains(last.Header.Get(jetstream.MsgIDHeader), ":replay:") {
		t.Errorf("the replayed message has traceparent %q (msg id %q)", last.Header.Get(tracing.HeaderTraceParent), last.Header.Get(jetstream.MsgIDHeader))
	}
}

// With tracing off (no provider: what Run builds without OTEL_* variables) nothing is recorded, not even
// by a global provider a library might have installed, and no message carries a traceparent.
func TestTracingOffExportsNothing(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	global := otel.GetTracerProvider()
	otel.SetTracerProvider(provider(t, exp, "global"))
	t.Cleanup(func() { otel.SetTracerProvider(global) })

	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	n := p.Build("TRANSACTION.SUCCESS", samples.All()["TRANSACTION.SUCCESS"], wechatsim.Options{})
	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("receiver answered %d", code)
	}
	p.WaitFor(20*time.Second, "the event", func() bool { return p.Count(topology.EventsStream) == 1 })
	p.WaitFor(10*time.Second, "consumer settled", p.Settled)
	if got := exp.GetSpans(); len(got) != 0 {
		t.Errorf("%d spans exported with tracing off: %v", len(got), spans(got).names())
	}
	for _, stream := range []string{topology.InboundStream, topology.EventsStream} {
		for _, m := range p.Messages(stream) {
			if _, ok := m.Header[tracing.HeaderTraceParent]; ok || strings.Contains(string(m.Data), "traceparent") {
				t.Errorf("%s message %d carries a traceparent with tracing off", stream, m.Sequence)
			}
		}
	}
	if strings.Contains(p.Logs.String(), "trace_id") {
		t.Error("log lines carry a trace_id with tracing off")
	}
}
