// Package console is the on-call engineer's web console: live domain events, the dead-letter queue with
// replay and purge, and the pipeline's health, served as one http.Handler with its page embedded in the
// binary. It reads and changes JetStream only through topology and dlq, never holds a key and never
// decrypts anything.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

//go:embed assets
var assets embed.FS

// Options shape a Handler.
type Options struct {
	// Token authorises changes (replay, purge) and, with ReadsNeedToken, every API request. Empty makes the
	// console read-only: changes are refused whoever asks.
	Token string
	// ReadsNeedToken makes reads need the token too. A console reachable from the network would otherwise
	// show payment events to anyone who can reach it; Server sets it for every bind beyond loopback.
	ReadsNeedToken bool
	// ReceiverAdmin and ConsumerAdmin are the base URLs of the programs' admin servers, whose /metrics the
	// health view reads; empty leaves that program out.
	ReceiverAdmin, ConsumerAdmin string
	// MaxStreams bounds the live event streams open at once (each is an ordered consumer on the server);
	// 0 means 32.
	MaxStreams int
	// TracerProvider traces replays as `wxpayctl dlq replay` does: a span per replayed notification,
	// linked to its original trace. Nil is tracing off.
	TracerProvider trace.TracerProvider
}

// Handler serves the console's page and its JSON API. Close ends its live streams, which would otherwise
// hold a graceful shutdown until its deadline.
type Handler struct {
	js        jetstream.JetStream
	opts      Options
	log       zerolog.Logger
	tokenHash [sha256.Size]byte
	root      http.Handler
	scraper   *scraper
	streams   atomic.Int32
	life      context.Context
	close     context.CancelFunc
}

// NewHandler returns the console over js. log receives one line per change (replay, purge) and per
// refused request; never a token, a body or plaintext.
func NewHandler(js jetstream.JetStream, o Options, log zerolog.Logger) *Handler {
	if o.MaxStreams == 0 {
		o.MaxStreams = 32
	}
	h := &Handler{js: js, opts: o, log: log, tokenHash: sha256.Sum256([]byte(o.Token))}
	h.life, h.close = context.WithCancel(context.Background())
	h.scraper = newScraper([]program{
		{name: "receiver", url: o.ReceiverAdmin, groups: receiverGroups},
		{name: "consumer", url: o.ConsumerAdmin, groups: consumerGroups},
	})
	h.root = h.routes()
	return h
}

// ServeHTTP serves the page and the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.root.ServeHTTP(w, r) }

// Close ends the live streams and any bulk replay between two entries; requests that are not streams finish
// normally.
func (h *Handler) Close() { h.close() }

// routes lists the API. Every route goes through guard (headers, host); reads through read, changes through
// change, which add the token and CSRF checks described in guard.go.
func (h *Handler) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets") // the directory is embedded above; Sub cannot fail on it
	files := http.FileServerFS(static)
	mux.Handle("GET /{$}", files)
	mux.Handle("GET /assets/", http.StripPrefix("/assets", files))

	mux.Handle("GET /api/info", h.read(h.info))
	mux.Handle("GET /api/events/stream", h.read(h.streamEvents))
	mux.Handle("GET /api/events/{seq}", h.read(h.getEvent))
	mux.Handle("GET /api/dlq", h.read(h.listDLQ))
	mux.Handle("GET /api/dlq/{seq}", h.read(h.getDLQ))
	mux.Handle("POST /api/dlq/replay", h.change(h.replay))
	mux.Handle("POST /api/dlq/purge", h.change(h.purge))
	mux.Handle("GET /api/health", h.read(h.health))
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API route")
	}))
	return h.guard(mux)
}

// authorized reports whether r carries the console's token as a bearer token. Hashes are compared so that
// the comparison takes the same time whatever the token's length.
func (h *Handler) authorized(r *http.Request) bool {
	got, ok := bearer(r)
	if !ok || h.opts.Token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], h.tokenHash[:]) == 1
}

// apiError is every error answer of the API.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(true)
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

// errStatus maps an error of the packages below to an answer, so that a handler states only what it did.
func errStatus(err error) (int, string) {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return http.StatusServiceUnavailable, "no_stream"
	}
	return http.StatusBadGateway, "nats"
}
