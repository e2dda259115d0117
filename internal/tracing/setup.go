package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The variables that decide whether tracing is on. Everything else (protocol, headers, timeouts,
// sampler, batching, resource attributes) the SDK and its exporters read themselves, by the
// OpenTelemetry specification's names.
const (
	envSDKDisabled    = "OTEL_SDK_DISABLED"
	envTracesExporter = "OTEL_TRACES_EXPORTER"
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// Enabled reports whether the environment asks for traces: OTEL_TRACES_EXPORTER names an exporter other
// than "none", or it is unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true turns it off whatever the rest says.
// Unlike the SDK's own default (OTLP to localhost), nothing configured means no tracing: a deployment
// that never heard of OpenTelemetry must not open connections or spend CPU on spans.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv(envSDKDisabled)), "true") {
		return false
	}
	switch exp := strings.TrimSpace(getenv(envTracesExporter)); exp {
	case "none":
		return false
	case "":
		return getenv(envEndpoint) != "" || getenv(envTracesEndpoint) != ""
	default:
		return true
	}
}

// Setup returns the tracer provider the environment asks for, and the function that flushes and stops
// it (call it once on the way out). With tracing off (Enabled false) the provider is a no-op one, which
// NewTracer turns into the zero Tracer, and stop does nothing.
//
// getenv decides on and off; the exporter itself (autoexport: "otlp" over "http/protobuf" or "grpc" by
// OTEL_EXPORTER_OTLP_PROTOCOL, "console", "none") and the SDK read the other OTEL_* variables from the
// process environment, as every OpenTelemetry SDK does. service is the service.name unless
// OTEL_SERVICE_NAME says otherwise. Export errors are logged to log at warn level.
func Setup(ctx context.Context, getenv func(string) string, service string, log zerolog.Logger) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled(getenv) {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%s / OTEL_EXPORTER_OTLP_PROTOCOL: %w", envTracesExporter, err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the default
		resource.WithTelemetrySDK(),
		resource.WithHost(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		_ = exp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	// The exporter retries and drops on its own; its failures must not reach stderr unformatted.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn().Err(err).Msg("tracing: export failed")
	}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info().Str("exporter", exporterName(getenv)).Str("service", serviceName(getenv, service)).Msg("tracing on")
	return tp, tp.Shutdown, nil
}

func exporterName(getenv func(string) string) string {
	if e := strings.TrimSpace(getenv(envTracesExporter)); e != "" {
		return e
	}
	return "otlp"
}

func serviceName(getenv func(string) string, service string) string {
	if s := getenv("OTEL_SERVICE_NAME"); s != "" {
		return s
	}
	return service
}

// Stop runs a provider's stop function on the way out: it exports the spans still buffered, within a
// few seconds even though ctx (the program's) is already cancelled, and logs a failure.
func Stop(ctx context.Context, stop func(context.Context) error, log zerolog.Logger) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	if err := stop(sctx); err != nil {
		log.Warn().Err(err).Msg("tracing: flushing the last spans failed")
	}
}

// stopTimeout bounds the last export at shutdown, well inside Kubernetes' grace period after
// SHUTDOWN_TIMEOUT.
const stopTimeout = 5 * time.Second
