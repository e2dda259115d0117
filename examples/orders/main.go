// Command orders is an example downstream service of wxpay-events: an order
// service on PostgreSQL that marks an order paid on payment.succeeded and
// refunded on refund.succeeded, exactly once per event, using only the public
// packages wxevents and wxevents/subscribe (and pgx); README.md says how it
// stays correct and how to run it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}
