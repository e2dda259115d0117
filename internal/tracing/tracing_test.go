package tracing_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestEnabled(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, true},
	}
	for _, tt := range tests {
		if got := tracing.Enabled(env(tt.env)); got != tt.want {
			t.Errorf("Enabled(%v) = %v, want %v", tt.env, got, tt.want)
		}
	}
}

// Off is nothing: no span, no allocation, the caller's context as it was.
func TestOffCostsNothing(t *testing.T) {
	for _, tp := range []trace.TracerProvider{nil, noop.NewTracerProvider()} {
		tr := tracing.NewTracer(tp)
		if tr.On() {
			t.Errorf("NewTracer(%T) is on", tp)
		}
		ctx := context.Background()
		allocs := testing.AllocsPerRun(100, func() {
			got, span := tr.Start(ctx, tracing.SpanProcess, trace.SpanKindConsumer)
			if got != ctx || span.IsRecording() {
				t.Fatal("an off tracer changed the context or recorded")
			}
			span.End()
			_, span = tr.StartRoot(ctx, tracing.SpanNotify, trace.SpanKindServer, nil)
			span.End()
		})
		if allocs != 0 {
			t.Errorf("an off tracer allocates %.0f times per span", allocs)
		}
	}
	tp, stop, err := tracing.Setup(context.Background(), env(nil), "wxpay-test", zerolog.Nop())
	if err != nil || tracing.NewTracer(tp).On() || stop(context.Background()) != nil {
		t.Errorf("Setup without OTEL_* variables: %T, %v; want tracing off", tp, err)
	}
}

func recording(t *testing.T) (*tracetest.InMemoryExporter, trace.TracerProvider) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return exp, tp
}

// The W3C context goes into NATS headers under its lower-case names and comes back as the remote parent.
func TestHeaderCarrier(t *testing.T) {
	_, tp := recording(t)
	ctx, span := tracing.NewTracer(tp).Start(context.Background(), tracing.SpanPublish, trace.SpanKindProducer)
	defer span.End()
	h := nats.Header{}
	tracing.Inject(ctx, h)
	sc := span.SpanContext()
	want := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
	if got := h.Values(tracing.HeaderTraceParent); len(got) != 1 || got[0] != want {
		t.Fatalf("traceparent header %q, want [%q]", got, want)
	}
	remote := tracing.Remote(h)
	if !remote.IsRemote() || remote.TraceID() != sc.TraceID() || remote.SpanID() != sc.SpanID() {
		t.Errorf("Remote = %v, want %v as a remote parent", remote, sc)
	}
	if tracing.Remote(nats.Header{}).IsValid() || tracing.Remote(nats.Header{tracing.HeaderTraceParent: {"garbage"}}).IsValid() {
		t.Error("a header without a valid traceparent gave a span context")
	}
	empty := nats.Header{}
	tracing.Inject(context.Background(), empty)
	if len(empty) != 0 {
		t.Errorf("Inject without a span wrote %v", empty)
	}
}

// A caller's traceparent (WeChat Pay never sends one; a proxy might, and so might anyone on the internet)
// is a link of the receiver's span, never its parent.
func TestStartRootLinksTheCaller(t *testing.T) {
	exp, tp := recording(t)
	in := http.Header{}
	in.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	_, span := tracing.NewTracer(tp).StartRoot(context.Background(), tracing.SpanNotify, trace.SpanKindServer, in)
	span.End()
	got := exp.GetSpans()[0]
	if got.Parent.IsValid() || got.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("the caller's traceparent became the parent: %v", got.Parent)
	}
	if len(got.Links) != 1 || got.Links[0].SpanContext.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("links %v, want the caller's span", got.Links)
	}
}

// LogIDs puts the trace id on a log line while the span records, and nothing otherwise.
func TestLogIDs(t *testing.T) {
	_, tp := recording(t)
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	_, span := tracing.NewTracer(tp).Start(context.Background(), tracing.SpanProcess, trace.SpanKindConsumer)
	tracing.LogIDs(log.Info(), span).Msg("traced")
	span.End()
	_, off := tracing.NewTracer(nil).Start(context.Background(), tracing.SpanProcess, trace.SpanKindConsumer)
	tracing.LogIDs(log.Info(), off).Msg("untraced")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.Contains(lines[0], `"trace_id":"`+span.SpanContext().TraceID().String()+`"`) {
		t.Errorf("traced line: %s", lines[0])
	}
	if strings.Contains(lines[1], "trace_id") {
		t.Errorf("untraced line: %s", lines[1])
	}
}

// Setup follows the standard variables: OTLP over HTTP to the endpoint, under OTEL_SERVICE_NAME, flushed
// by stop. (The exporters read the process environment, hence t.Setenv.)
func TestSetupExportsOverOTLPHTTP(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths, bodies = append(paths, r.URL.Path), append(bodies, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "wxpay-otlp-test")
	t.Setenv("OTEL_TRACES_EXPORTER", "")

	tp, stop, err := tracing.Setup(context.Background(), os.Getenv, "wxpay-receiver", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.NewTracer(tp).Start(context.Background(), tracing.SpanNotify, trace.SpanKindServer)
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := stop(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 1 || paths[0] != "/v1/traces" {
		t.Fatalf("requests to %v, want one to /v1/traces", paths)
	}
	for _, want := range []string{"wxpay-otlp-test", tracing.SpanNotify} {
		if !bytes.Contains(bodies[0], []byte(want)) {
			t.Errorf("the export does not carry %q", want)
		}
	}
}

// OTEL_EXPORTER_OTLP_PROTOCOL=grpc speaks gRPC (HTTP/2) to the endpoint.
func TestSetupExportsOverOTLPGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	preface := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, len("PRI * HTTP/2.0"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.ReadFull(c, b)
		preface <- string(b)
	}()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
	t.Setenv("OTEL_TRACES_EXPORTER", "")

	tp, stop, err := tracing.Setup(context.Background(), os.Getenv, "wxpay-consumer", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	_, span := tracing.NewTracer(tp).Start(context.Background(), tracing.SpanProcess, trace.SpanKindConsumer)
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = stop(ctx) // the listener never answers: the export times out, after connecting
	select {
	case got := <-preface:
		if got != "PRI * HTTP/2.0" {
			t.Errorf("the exporter sent %q, want the HTTP/2 preface of gRPC", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the gRPC exporter never connected")
	}
}

func TestSetupRejectsAnUnknownExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
	_, _, err := tracing.Setup(context.Background(), os.Getenv, "wxpay-receiver", zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "OTEL_TRACES_EXPORTER") {
		t.Errorf("Setup = %v, want an error naming OTEL_TRACES_EXPORTER", err)
	}
}
