// Command consumer decrypts stored WeChat Pay notifications, drops duplicates with Redis and publishes one
// typed CloudEvent per business fact; what it cannot process goes to the dead-letter stream.
// Configuration: see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wxpay-events/wxpay-events/internal/consumer"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := consumer.Run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}
