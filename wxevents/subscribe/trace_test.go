package subscribe_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/wxevents"
	"github.com/wxpay-events/wxpay-events/wxevents/subscribe"
)

// A producer's span, as the consumer writes it: the traceparent header and the CloudEvent attribute.
const (
	producerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	producerSpan  = "00f067aa0ba902b7"
	traceparent   = "00-" + producerTrace + "-" + producerSpan + "-01"
)

// publishTraced stores a payment event as a tracing producer does: traceparent in the CloudEvent, and in
// the header unless bare (a copy of the document forwarded without its headers).
func publishTraced(t *testing.T, js jetstream.JetStream, id string, bare bool) {
	t.Helper()
	e := wxevents.Event{
		SpecVersion: wxevents.SpecVersion, ID: id, Source: wxevents.SourcePrefix + "1900000100",
		Type: wxevents.TypePaymentSucceeded.CloudEventType(), Subject: "4200000001", Time: time.Now(),
		DataContentType: wxevents.DataContentType, DataSchema: wxevents.TypePaymentSucceeded.DataSchema(),
		NotificationID: "EV-" + id, WechatEventType: "TRANSACTION.SUCCESS", TraceParent: traceparent, Data: []byte(payment),
	}
	raw, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	m := &nats.Msg{Subject: wxevents.Subject(wxevents.TypePaymentSucceeded, "1900000100", ""), Data: raw, Header: nats.Header{}}
	if !bare {
		m.Header.Set("traceparent", traceparent)
	}
	if _, err := js.PublishMsg(context.Background(), m, jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// Without any tracer configured (OpenTelemetry's global no-op), the handler's context still carries the
// producer's trace, from the header or from the CloudEvent, so the service's own logs and spans can join it.
func TestHandlerContextContinuesTheTraceWithoutATracer(t *testing.T) {
	js := startJetStream(t)
	got := make(chan trace.SpanContext, 2)
	s, err := subscribe.New(js, "untraced", subscribe.FromBeginning(),
		subscribe.On(func(ctx context.Context, _ wxevents.Event, _ wxevents.PaymentSucceeded) error {
			got <- trace.SpanContextFromContext(ctx)
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	publishTraced(t, js, "00000000-0000-5000-8000-0000000000a1", false)
	publishTraced(t, js, "00000000-0000-5000-8000-0000000000a2", true)
	run(t, s)
	for range 2 {
		select {
		case sc := <-got:
			if sc.TraceID().String() != producerTrace || sc.SpanID().String() != producerSpan {
				t.Errorf("handler context has span %s/%s, want the producer's %s/%s", sc.TraceID(), sc.SpanID(), producerTrace, producerSpan)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("handler not called within 10s")
		}
	}
	settled(t, s)
}

// With a tracer provider, each delivery is a consumer span, child of the producer's, that the handler's
// context carries; a failed delivery is marked as an error and the redelivery is a second span.
func TestDeliverySpans(t *testing.T) {
	js := startJetStream(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	inHandler := make(chan trace.SpanContext, 2)
	s, err := subscribe.New(js, "traced", subscribe.FromBeginning(), subscribe.TracerProvider(tp),
		subscribe.Backoff(time.Second, time.Second),
		subscribe.On(func(ctx context.Context, _ wxevents.Event, _ wxevents.PaymentSucceeded) error {
			inHandler <- trace.SpanContextFromContext(ctx)
			if len(inHandler) == 1 {
				return errors.New("database unavailable")
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	publishTraced(t, js, "00000000-0000-5000-8000-0000000000b1", false)
	run(t, s)
	settled(t, s)
	eventually(t, 5*time.Second, "two delivery spans", func() bool { return len(exp.GetSpans()) == 2 })

	spans := exp.GetSpans()
	for i, sp := range spans {
		if sp.Name != "process "+wxevents.Stream || sp.SpanKind != trace.SpanKindConsumer {
			t.Errorf("span %d: %s (%s), want a consumer span process %s", i, sp.Name, sp.SpanKind, wxevents.Stream)
		}
		if sp.Parent.TraceID().String() != producerTrace || sp.Parent.SpanID().String() != producerSpan || !sp.Parent.IsRemote() {
			t.Errorf("span %d: parent %v, want the producer's span", i, sp.Parent)
		}
		if hc := <-inHandler; hc.SpanID() != sp.SpanContext.SpanID() {
			t.Errorf("span %d: the handler's context has span %s, want the delivery's %s", i, hc.SpanID(), sp.SpanContext.SpanID())
		}
	}
	if spans[0].Status.Code != codes.Error || spans[1].Status.Code == codes.Error {
		t.Errorf("statuses %v, %v: want the failed delivery an error and the second not", spans[0].Status, spans[1].Status)
	}
}
