package console

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/admin"
)

// DefaultAddr is where the console listens unless told otherwise: loopback only.
const DefaultAddr = "127.0.0.1:8088"

// MinTokenLength is the shortest token accepted: a guessable token on a network is no protection.
const MinTokenLength = 16

// Sentinel errors of starting a console.
var (
	// ErrTokenRequired means the address is reachable from beyond this machine and no token was given.
	ErrTokenRequired = errors.New("console: a token is required to listen beyond loopback")
	// ErrWeakToken means the token is shorter than MinTokenLength.
	ErrWeakToken = errors.New("console: token too short")
)

// Config says where a console listens and what it may do.
type Config struct {
	Addr  string // host:port; DefaultAddr when empty
	Token string // see Options.Token; required for any address beyond loopback
	// ReceiverAdmin and ConsumerAdmin are the programs' admin base URLs for the health view (optional).
	ReceiverAdmin, ConsumerAdmin string
	// ShutdownTimeout bounds the wait for requests in flight (a replay) at shutdown; 10 s when zero.
	ShutdownTimeout time.Duration
	// TracerProvider traces replays (Options.TracerProvider); nil is tracing off.
	TracerProvider trace.TracerProvider
}

// Server is a console listening on its address.
type Server struct {
	h        *Handler
	ln       net.Listener
	srv      *http.Server
	grace    time.Duration
	loopback bool
}

// New checks cfg and listens. It refuses an address beyond loopback without a token (ErrTokenRequired),
// judged by the address actually bound, so that a host name resolving elsewhere cannot slip through; and
// on such an address every request needs the token, reads too.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, log zerolog.Logger) (*Server, error) {
	if cfg.Token != "" && len(cfg.Token) < MinTokenLength {
		return nil, fmt.Errorf("%w: %d characters, at least %d (e.g. openssl rand -hex 32)", ErrWeakToken, len(cfg.Token), MinTokenLength)
	}
	var err error
	if cfg.ReceiverAdmin, err = NormalizeAdminURL(cfg.ReceiverAdmin); err != nil {
		return nil, err
	}
	if cfg.ConsumerAdmin, err = NormalizeAdminURL(cfg.ConsumerAdmin); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("console: listen on %s: %w", cfg.Addr, err)
	}
	loopback := isLoopback(ln.Addr())
	if !loopback && cfg.Token == "" {
		_ = ln.Close()
		return nil, fmt.Errorf("%w: %s is not a loopback address; give a token (--token-file or CONSOLE_TOKEN_FILE) or listen on 127.0.0.1", ErrTokenRequired, cfg.Addr)
	}
	h := NewHandler(js, Options{Token: cfg.Token, ReadsNeedToken: !loopback, ReceiverAdmin: cfg.ReceiverAdmin, ConsumerAdmin: cfg.ConsumerAdmin, TracerProvider: cfg.TracerProvider},
		log.With().Str("component", "console").Logger())
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		// No WriteTimeout: live streams and paced replays write for longer; each JetStream call has its own
		// timeout, and a vanished client ends its request.
		IdleTimeout:    90 * time.Second,
		MaxHeaderBytes: 32 << 10,
	}
	srv.RegisterOnShutdown(h.Close) // live streams never end by themselves
	return &Server{h: h, ln: ln, srv: srv, grace: cfg.ShutdownTimeout, loopback: loopback}, nil
}

// Addr is the address the console listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Loopback reports whether the console listens on loopback only.
func (s *Server) Loopback() bool { return s.loopback }

// URL is the console's address as a browser on this machine opens it.
func (s *Server) URL() string {
	host, port := "127.0.0.1", ""
	if t, ok := s.ln.Addr().(*net.TCPAddr); ok {
		port = strconv.Itoa(t.Port)
		if !t.IP.IsUnspecified() {
			host = t.IP.String()
		}
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// Handler is the console's http.Handler.
func (s *Server) Handler() *Handler { return s.h }

// Serve serves until ctx ends, then ends the live streams, stops accepting and waits for requests in
// flight up to the shutdown timeout.
func (s *Server) Serve(ctx context.Context) error {
	if err := admin.Serve(ctx, s.srv, s.ln, s.grace); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// isLoopback reports whether a bound address is reachable from this machine only.
func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// ReadTokenFile reads a token from a file (surrounding white space ignored).
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("console: token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLength {
		return "", fmt.Errorf("%w: %s holds %d characters, at least %d", ErrWeakToken, path, len(tok), MinTokenLength)
	}
	return tok, nil
}

// TokenFile reads the token kept at path, or creates one there (readable by its owner only) when there is
// none, so that a development console keeps its link across restarts.
func TokenFile(path string) (string, error) {
	tok, err := ReadTokenFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	tok = hex.EncodeToString(b)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("console: token file: %w", err)
	}
	return tok, nil
}
