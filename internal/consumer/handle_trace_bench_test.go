package consumer_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// BenchmarkHandleTracing is BenchmarkHandle with a no-op provider (what Run builds without OTEL_*
// variables) and with the SDK recording every span into a discarding exporter, the message carrying
// the receiver's traceparent.
func BenchmarkHandleTracing(b *testing.B) {
	b.Run("noop", func(b *testing.B) {
		p, msg := benchProcessor(b)
		p.Tracer = tracing.NewTracer(noop.NewTracerProvider())
		benchHandle(b, p, msg)
	})
	b.Run("sampled", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		p, msg := benchProcessor(b)
		p.Tracer = tracing.NewTracer(tp)
		msg.header.Set(tracing.HeaderTraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		benchHandle(b, p, msg)
	})
}
