// Package tracing follows one notification end to end with OpenTelemetry: it builds the tracer
// provider that the standard OTEL_* variables ask for (none unless they ask, see Setup), and carries the
// W3C trace context across JetStream in NATS message headers, so that the receiver's answer, the
// consumer's deliveries and a subscriber's handler are one trace.
//
// Tracing off is a nil check: a zero Tracer starts no span and its callers skip building attributes,
// so the hot path does no tracing work at all unless a provider is configured.
package tracing

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The W3C trace-context headers: written on WECHATPAY_INBOUND and WECHATPAY_EVENTS messages, kept by
// dead-letter entries and their replays. traceparent is also the CloudEvents distributed-tracing
// extension attribute of an event.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// Scope is the instrumentation scope of the pipeline's spans.
const Scope = "github.com/wxpay-events/wxpay-events"

// w3c is the one propagator: the contract names the W3C headers, so the wire format does not depend on
// a process-wide propagator someone else may have set.
var w3c = propagation.TraceContext{}

// Tracer starts the pipeline's spans. The zero value is tracing off: Start returns a span that records
// nothing and costs nothing, and On reports false so that callers skip work meant for a span.
type Tracer struct{ t trace.Tracer }

// NewTracer returns the tracer of tp; nil or a no-op provider give the zero Tracer (off), so that "no
// exporter configured" and "no provider at all" behave the same, down to the bytes published.
func NewTracer(tp trace.TracerProvider) Tracer {
	if tp == nil {
		return Tracer{}
	}
	if _, ok := tp.(noop.TracerProvider); ok {
		return Tracer{}
	}
	return Tracer{t: tp.Tracer(Scope)}
}

// On reports whether spans are recorded and trace context is propagated.
func (t Tracer) On() bool { return t.t != nil }

// noSpan is what Start returns with tracing off: the API's non-recording span, without an allocation.
var noSpan = trace.SpanFromContext(context.Background())

// Start starts a span of kind under ctx's span. Its options are built here, after the nil check, so
// that a caller with tracing off pays for none of them.
func (t Tracer) Start(ctx context.Context, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if t.t == nil {
		return ctx, noSpan
	}
	return t.t.Start(ctx, name, trace.WithSpanKind(kind))
}

// StartRoot starts a span of kind that begins a new trace whatever ctx carries. A valid W3C context in
// in (an HTTP request's headers) becomes a link rather than the parent: the request comes from the
// internet, and a caller must not choose our trace id or our sampling decision, while a proxy in front
// that traces can still be followed.
func (t Tracer) StartRoot(ctx context.Context, name string, kind trace.SpanKind, in http.Header) (context.Context, trace.Span) {
	if t.t == nil {
		return ctx, noSpan
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(kind), trace.WithNewRoot()}
	if in.Get(HeaderTraceParent) != "" {
		if sc := trace.SpanContextFromContext(w3c.Extract(context.Background(), propagation.HeaderCarrier(in))); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc, Attributes: []attribute.KeyValue{AttrLinkKind.String(LinkIncoming)}}))
		}
	}
	return t.t.Start(ctx, name, opts...)
}

// Header adapts a NATS message's headers to OpenTelemetry's carrier. NATS keeps header names as
// written, and the W3C names are lower-case, so Get and Set use them exactly.
type Header nats.Header

// Get returns the first value of key.
func (h Header) Get(key string) string { return nats.Header(h).Get(key) }

// Set replaces the values of key.
func (h Header) Set(key, value string) { nats.Header(h).Set(key, value) }

// Keys lists the header names.
func (h Header) Keys() []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	return out
}

// Inject writes the trace context of ctx's span into h: traceparent, and tracestate when there is one.
// It writes nothing when ctx carries no valid span context.
func Inject(ctx context.Context, h nats.Header) {
	w3c.Inject(ctx, Header(h))
}

// Extract returns ctx carrying the remote span context stored in h, when h has a valid one, so that
// spans started under it continue that trace.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h.Get(HeaderTraceParent) == "" {
		return ctx
	}
	return w3c.Extract(ctx, Header(h))
}

// Remote is the span context stored in h; invalid when h has none.
func Remote(h nats.Header) trace.SpanContext {
	return trace.SpanContextFromContext(Extract(context.Background(), h))
}

// LogIDs adds trace_id and span_id to a log line when span records, so that a log line and its trace
// find each other.
func LogIDs(e *zerolog.Event, span trace.Span) *zerolog.Event {
	if !span.IsRecording() {
		return e
	}
	sc := span.SpanContext()
	return e.Str("trace_id", sc.TraceID().String()).Str("span_id", sc.SpanID().String())
}
