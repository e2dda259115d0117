package ctl

import (
	"context"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// devTracing builds dev's tracer providers from the OTEL_* variables, one per program so that a trace
// shows the receiver and the consumer as the services they are in production (OTEL_SERVICE_NAME names
// both), and the function that flushes both on the way out. Without OTEL_* variables both are off.
func (g *globals) devTracing(ctx context.Context, log zerolog.Logger) (receiverTP, consumerTP trace.TracerProvider, stop func(), err error) {
	receiverTP, stopReceiver, err := tracing.Setup(ctx, g.env.Getenv, "wxpay-receiver", log)
	if err != nil {
		return nil, nil, nil, usageError("%v", err)
	}
	consumerTP, stopConsumer, err := tracing.Setup(ctx, g.env.Getenv, "wxpay-consumer", log)
	if err != nil {
		tracing.Stop(ctx, stopReceiver, log)
		return nil, nil, nil, usageError("%v", err)
	}
	return receiverTP, consumerTP, func() {
		tracing.Stop(ctx, stopReceiver, log)
		tracing.Stop(ctx, stopConsumer, log)
	}, nil
}
