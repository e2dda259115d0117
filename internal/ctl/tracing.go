package ctl

import (
	"context"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

// devTracing builds dev's tracer providers from the OTEL_* variables, one per program so that a trace
// shows the receiver, the consumer and the console's replays (as wxpayctl) as the services they are in
// production (OTEL_SERVICE_NAME names all three), and the function that flushes them on the way out.
// Without OTEL_* variables all are off.
func (g *globals) devTracing(ctx context.Context, log zerolog.Logger) (receiverTP, consumerTP, consoleTP trace.TracerProvider, stop func(), err error) {
	var stops []func(context.Context) error
	stopAll := func() {
		for _, s := range stops {
			tracing.Stop(ctx, s, log)
		}
	}
	providers := make([]trace.TracerProvider, 0, 3)
	for _, service := range []string{"wxpay-receiver", "wxpay-consumer", "wxpayctl"} {
		tp, s, err := tracing.Setup(ctx, g.env.Getenv, service, log)
		if err != nil {
			stopAll()
			return nil, nil, nil, nil, usageError("%v", err)
		}
		providers = append(providers, tp)
		stops = append(stops, s)
	}
	return providers[0], providers[1], providers[2], stopAll, nil
}
