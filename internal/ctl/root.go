// Package ctl is wxpayctl, the operator's command line: verify a captured notification, manage the
// streams, inspect and replay the dead-letter stream, follow events, simulate WeChat Pay and run
// everything in one process for development.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// Exit codes scripts can rely on.
const (
	ExitOK      = 0
	ExitFailed  = 1 // the command ran and the answer is "no" (verification failed, replay incomplete, …)
	ExitUsage   = 2 // bad flags or arguments
	ExitRuntime = 3 // could not do the work (NATS unreachable, file unreadable, …)
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// defaultNATSURL is where every command looks for NATS without NATS_URL or --nats-url.
const defaultNATSURL = "nats://127.0.0.1:4222"

func failed(err error) error  { return &exitError{ExitFailed, err} }
func runtime(err error) error { return &exitError{ExitRuntime, err} }

// Env is what a command sees of the outside world; tests pass their own.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
	// Stdin answers prompts (dlq purge's confirmation); os.Stdin when nil.
	Stdin io.Reader
	// IsTerminal says whether Stdout is a terminal (progress bars, colours).
	IsTerminal bool
}

// globals are the flags every subcommand shares.
type globals struct {
	env     Env
	natsURL string
	// natsURLSet: --nats-url or NATS_URL was given, rather than the default.
	natsURLSet bool
	natsCreds  string
	output     string
}

// Main runs wxpayctl with args (without the program name) and returns the process exit code.
func Main(ctx context.Context, args []string, env Env) int {
	root := newRoot(env)
	root.SetArgs(args)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	if env.Stdin != nil {
		root.SetIn(env.Stdin)
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintln(env.Stderr, "wxpayctl:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return ExitUsage // cobra's own errors are about flags and arguments
}

func newRoot(env Env) *cobra.Command {
	g := &globals{env: env}
	root := &cobra.Command{
		Use:   "wxpayctl",
		Short: "Operate wxpay-events: verify, streams, dead letters, events, simulator, dev mode",
		Long: `wxpayctl operates a wxpay-events deployment.

It reads the same environment as the receiver and consumer (NATS_URL, NATS_CREDS,
WECHATPAY_* account variables, STREAM_REPLICAS, REDIS_URL); flags override it.

Exit codes: 0 success, 1 the answer is no (e.g. verification failed), 2 usage error,
3 the work could not be done (e.g. NATS unreachable).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := func(k, d string) string {
		if v := env.Getenv(k); v != "" {
			return v
		}
		return d
	}
	root.PersistentFlags().StringVar(&g.natsURL, "nats-url", def("NATS_URL", defaultNATSURL), "NATS server URL(s) [NATS_URL]")
	root.PersistentFlags().StringVar(&g.natsCreds, "nats-creds", env.Getenv("NATS_CREDS"), "NATS credentials file [NATS_CREDS]")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		g.natsURLSet = cmd.Flags().Changed("nats-url") || env.Getenv("NATS_URL") != ""
		if g.output != "table" && g.output != "json" {
			return fmt.Errorf("--output %q: use table or json", g.output)
		}
		return nil
	}
	for _, add := range commands {
		root.AddCommand(add(g))
	}
	return root
}

// commands lists the subcommand constructors; each file adds its own.
var commands []func(*globals) *cobra.Command

// connect opens a NATS connection and a JetStream context for a command.
func (g *globals) connect() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := topology.Connect(topology.ConnectOptions{URL: g.natsURL, Creds: g.natsCreds, Name: "wxpayctl"}, zerolog.Nop())
	if err != nil {
		return nil, nil, runtime(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, runtime(err)
	}
	return nc, js, nil
}

// readFile reads an operator-named file; failure to read is a runtime error.
func readFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, runtime(err)
	}
	return b, nil
}
