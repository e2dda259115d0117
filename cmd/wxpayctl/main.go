// Command wxpayctl operates wxpay-events: verify captured notifications, manage streams, inspect and
// replay dead letters, follow events, simulate WeChat Pay, and run everything at once for development.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/wxpay-events/wxpay-events/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], ctl.Env{
		Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr,
		IsTerminal: term.IsTerminal(int(os.Stdout.Fd())),
	})
	stop()
	os.Exit(code)
}
