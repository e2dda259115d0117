package receiver_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/wxpay-events/wxpay-events/internal/receiver"
)

// BenchmarkServeNotificationTracing compares the handler with a no-op provider (what Run builds without
// OTEL_* variables) and with the SDK recording every span into a discarding exporter (tracing on,
// everything sampled; the export's own cost is the batch exporter's, off the request path).
func BenchmarkServeNotificationTracing(b *testing.B) {
	b.Run("noop", func(b *testing.B) {
		o := benchOptions()
		o.TracerProvider = noop.NewTracerProvider()
		benchServe(b, receiver.NewHandler(o))
	})
	b.Run("sampled", func(b *testing.B) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter())))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		o := benchOptions()
		o.TracerProvider = tp
		benchServe(b, receiver.NewHandler(o))
	})
}
