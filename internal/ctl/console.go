package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/console"
	"github.com/wxpay-events/wxpay-events/internal/logging"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

func init() { commands = append(commands, consoleCommand) }

type consoleOptions struct {
	addr, tokenFile, receiverAdmin, consumerAdmin string
	logLevel, logFormat                           string
}

func consoleCommand(g *globals) *cobra.Command {
	var o consoleOptions
	def := func(k, d string) string {
		if v := g.env.Getenv(k); v != "" {
			return v
		}
		return d
	}
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Serve the web console: live events, dead letters with replay and purge, health",
		Long: `console serves a web page for the on-call engineer: the events on WECHATPAY_EVENTS as they are
published (filter by type, merchant, sub-merchant, business id; a click shows the CloudEvent), the
dead letters on WECHATPAY_DLQ (reason, merchant, age, deliveries, error; headers and the still
encrypted body; replay one or a filtered set, at a rate and as a dry run first, as dlq replay does;
purge after typing the number of entries), and the streams, the durable consumer and, given their
admin URLs, the receiver's and consumer's answers and rates from /metrics.

It listens on 127.0.0.1 unless told otherwise. Replay and purge need a token, read from --token-file
(CONSOLE_TOKEN_FILE) or CONSOLE_TOKEN, at least 16 characters; without one the console is read-only.
An address beyond loopback needs the token, and then every request does, reads too. The console
never holds a key and never decrypts anything.`,
		Example: `  # on the machine, read-only
  wxpayctl console

  # with replay and purge, and the programs' metrics
  openssl rand -hex 32 > console.token
  wxpayctl console --token-file console.token \
      --receiver-admin http://127.0.0.1:9090 --consumer-admin http://127.0.0.1:9091`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.console(cmd.Context(), o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.addr, "addr", def("CONSOLE_ADDR", console.DefaultAddr), "listen address; beyond loopback it needs a token [CONSOLE_ADDR]")
	fl.StringVar(&o.tokenFile, "token-file", g.env.Getenv("CONSOLE_TOKEN_FILE"), "file holding the token for replay and purge (else CONSOLE_TOKEN) [CONSOLE_TOKEN_FILE]")
	fl.StringVar(&o.receiverAdmin, "receiver-admin", "", "receiver's admin URL, for its answers and intake rate (e.g. http://127.0.0.1:9090)")
	fl.StringVar(&o.consumerAdmin, "consumer-admin", "", "consumer's admin URL, for its outcomes (e.g. http://127.0.0.1:9091)")
	fl.StringVar(&o.logLevel, "log-level", def("LOG_LEVEL", "info"), "trace, debug, info, warn or error [LOG_LEVEL]")
	fl.StringVar(&o.logFormat, "log-format", def("LOG_FORMAT", "console"), "console or json [LOG_FORMAT]")
	return cmd
}

// consoleToken is the token from --token-file (CONSOLE_TOKEN_FILE), else CONSOLE_TOKEN; "" for none.
func (g *globals) consoleToken(file string) (string, error) {
	if file != "" {
		tok, err := console.ReadTokenFile(file)
		if errors.Is(err, console.ErrWeakToken) {
			return "", usageError("--token-file: %v", err)
		}
		if err != nil {
			return "", runtime(err)
		}
		return tok, nil
	}
	return g.env.Getenv("CONSOLE_TOKEN"), nil
}

// consoleStartError turns a refusal to start into a usage error (the operator must change a flag) and
// anything else into a runtime error.
func consoleStartError(err error) error {
	if errors.Is(err, console.ErrTokenRequired) || errors.Is(err, console.ErrWeakToken) || errors.Is(err, console.ErrBadAdminURL) {
		return usageError("%v", err)
	}
	return runtime(err)
}

// consoleStarted is what console prints once it listens.
type consoleStarted struct {
	URL      string `json:"url"`
	ReadOnly bool   `json:"read_only"`
	Loopback bool   `json:"loopback"`
}

func (g *globals) console(ctx context.Context, o consoleOptions) error {
	if o.logFormat != "console" && o.logFormat != "json" {
		return usageError("--log-format %q: console or json", o.logFormat)
	}
	tok, err := g.consoleToken(o.tokenFile)
	if err != nil {
		return err
	}
	log := logging.New(o.logLevel, o.logFormat, g.env.Stderr)
	nc, js, err := g.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	// Replays from the page are traced as `wxpayctl dlq replay`'s are, when OTEL_* variables ask for it.
	tp, stopTracing, err := tracing.Setup(ctx, g.env.Getenv, "wxpayctl", log)
	if err != nil {
		return usageError("%v", err)
	}
	defer tracing.Stop(ctx, stopTracing, log)
	srv, err := console.New(ctx, js, console.Config{Addr: o.addr, Token: tok, ReceiverAdmin: o.receiverAdmin, ConsumerAdmin: o.consumerAdmin, TracerProvider: tp}, log)
	if err != nil {
		return consoleStartError(err)
	}
	started := consoleStarted{URL: srv.URL(), ReadOnly: tok == "", Loopback: srv.Loopback()}
	if g.output == "json" {
		_ = json.NewEncoder(g.env.Stdout).Encode(started)
	} else {
		mode := "replay and purge need the token"
		if started.ReadOnly {
			mode = "read-only: no token (--token-file or CONSOLE_TOKEN_FILE) for replay and purge"
		}
		if !started.Loopback {
			mode += "; reachable beyond this machine, so every request needs the token"
		}
		outf(g.env.Stdout, "wxpay-events console on %s (%s); Ctrl-C stops it\n", started.URL, mode)
	}
	if err := srv.Serve(ctx); err != nil {
		return runtime(err)
	}
	if g.output != "json" {
		outln(g.env.Stdout, "console: stopped")
	}
	return nil
}

// devConsole starts dev's console on addr with the token from CONSOLE_TOKEN_FILE or CONSOLE_TOKEN, else the
// one kept in dir, and returns it with the link to print: the token rides in the link's fragment, which
// the browser keeps to itself, and the page moves it into the tab's storage.
func (g *globals) devConsole(ctx context.Context, log zerolog.Logger, js jetstream.JetStream, tp trace.TracerProvider, dir, addr, receiverAdmin, consumerAdmin string) (*console.Server, string, error) {
	tok, err := g.consoleToken(g.env.Getenv("CONSOLE_TOKEN_FILE"))
	if err != nil {
		return nil, "", err
	}
	if tok == "" {
		if tok, err = console.TokenFile(filepath.Join(dir, "console.token")); err != nil {
			return nil, "", runtime(err)
		}
	}
	srv, err := console.New(ctx, js, console.Config{Addr: addr, Token: tok, ReceiverAdmin: receiverAdmin, ConsumerAdmin: consumerAdmin, TracerProvider: tp}, log)
	if err != nil {
		return nil, "", consoleStartError(fmt.Errorf("--console-addr: %w", err))
	}
	return srv, srv.URL() + "#token=" + tok, nil
}
