package console_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/wxpay-events/wxpay-events/internal/console"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// A replay from the console is traced as `wxpayctl dlq replay`'s is: a replay span linked to the
// notification's original trace, and the replayed delivery continues that trace under the receiver's span.
func TestConsoleReplayIsTraced(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	provider := func(service string) *sdktrace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		return tp
	}
	s := pipelinetest.StartWith(t, pipelinetest.Options{TracerProvider: provider("wxpay-receiver")})
	s.StartConsumer(pipelinetest.ConsumerOptions{TracerProvider: provider("wxpay-consumer")})
	if code := s.Post(s.Build("PAYSCORE.USER_OPEN_SERVICE", []byte(`{"out_contract_code":"x"}`), wechatsim.Options{})); code != http.StatusNoContent {
		t.Fatalf("receiver answered %d", code)
	}
	s.WaitFor(20*time.Second, "the dead letter", func() bool { return s.Count(topology.DLQStream) == 1 })
	seq := s.Messages(topology.DLQStream)[0].Sequence

	srv := startConsole(t, s.JetStream(), console.Config{Addr: "127.0.0.1:0", Token: testToken,
		TracerProvider: provider("wxpayctl")}, s.Logs)
	c := &client{base: srv.URL()}
	c.want(t, http.StatusOK, http.MethodPost, "/api/dlq/replay", map[string]any{"seq": strconv.FormatUint(seq, 10)}, bearerToken(testToken))

	named := func(name string) []tracetest.SpanStub {
		var out []tracetest.SpanStub
		for _, sp := range exp.GetSpans() {
			if sp.Name == name {
				out = append(out, sp)
			}
		}
		return out
	}
	s.WaitFor(20*time.Second, "the replayed delivery's span", func() bool { return len(named(tracing.SpanProcess)) == 2 })
	recv, replay := named(tracing.SpanNotify), named(tracing.SpanReplay)
	if len(recv) != 1 || len(replay) != 1 {
		t.Fatalf("%d receiver spans and %d replay spans, want one each", len(recv), len(replay))
	}
	if l := replay[0].Links; len(l) != 1 || l[0].SpanContext.TraceID() != recv[0].SpanContext.TraceID() ||
		l[0].SpanContext.SpanID() != recv[0].SpanContext.SpanID() {
		t.Errorf("the console's replay span links %v, want one link to the receiver's span", l)
	}
	if svc, _ := replay[0].Resource.Set().Value("service.name"); svc.AsString() != "wxpayctl" {
		t.Errorf("the replay span comes from service %q", svc.AsString())
	}
	second := named(tracing.SpanProcess)[1]
	if second.Parent.SpanID() != recv[0].SpanContext.SpanID() || second.SpanContext.TraceID() != recv[0].SpanContext.TraceID() {
		t.Errorf("the replayed delivery's span is not a child of the receiver's span")
	}
}
