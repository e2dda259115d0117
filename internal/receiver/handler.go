// Package receiver is the HTTP intake that WeChat Pay calls: it verifies a notification's signature,
// stores the still-encrypted body in JetStream and answers 204 only once JetStream has acknowledged it.
// It holds no decryption key and imports nothing that could decrypt.
package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
	"github.com/wxpay-events/wxpay-events/internal/verify"
)

// Store keeps a notification durably. It returns once the message is stored (duplicate reports that
// JetStream already had it under msgID), or with an error when it could not be stored in time.
type Store interface {
	Store(ctx context.Context, msg *nats.Msg, msgID string) (duplicate bool, err error)
}

// Verifier checks a notification's signature (a *verify.Verifier).
type Verifier interface {
	Verify(ctx context.Context, h verify.Headers, body []byte) error
}

// Reasons (metric and log labels) of the receiver's own answers; verification failures use verify.Reason.
const (
	reasonStored          = "stored"
	reasonDuplicate       = "duplicate"
	reasonUnknownMerchant = "unknown_merchant"
	reasonNoMerchant      = "merchant_required"
	reasonTooLarge        = "payload_too_large"
	reasonReadError       = "read_error"
	reasonMalformed       = "malformed_envelope"
	reasonStoreFailed     = "store_failed"
	reasonUncleanPath     = "unclean_path"
)

// Handler serves POST /notify/{mchid} and, with exactly one account, POST /notify.
type Handler struct {
	verifiers      map[string]Verifier
	single         string
	store          Store
	maxBody        int64
	publishTimeout time.Duration
	log            zerolog.Logger
	rejectLog      zerolog.Logger
	metrics        *Metrics
	tracer         tracing.Tracer
	mux            *http.ServeMux
	bufs           sync.Pool
}

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	Verifiers      map[string]Verifier // by merchant id
	Store          Store
	MaxBody        int64
	PublishTimeout time.Duration
	Log            zerolog.Logger
	Metrics        *Metrics
	// TracerProvider, optional, traces each notification (a server span whose context is stored with
	// the message); nil or a no-op provider is tracing off.
	TracerProvider trace.TracerProvider
}

// NewHandler builds the notify handler.
func NewHandler(o HandlerOptions) *Handler {
	h := &Handler{
		verifiers:      o.Verifiers,
		store:          o.Store,
		maxBody:        o.MaxBody,
		publishTimeout: o.PublishTimeout,
		log:            o.Log,
		// Rejections can come in floods (probes, scanners, a misconfigured proxy); keep their log bounded.
		rejectLog: o.Log.Sample(&zerolog.BurstSampler{Burst: 20, Period: time.Second}),
		metrics:   o.Metrics,
		tracer:    tracing.NewTracer(o.TracerProvider),
		bufs:      sync.Pool{New: func() any { return new(bytes.Buffer) }},
	}
	if len(o.Verifiers) == 1 {
		for id := range o.Verifiers {
			h.single = id
		}
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST /notify/{mchid}", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, r.PathValue("mchid"))
	})
	h.mux.HandleFunc("POST /notify", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, h.single)
	})
	// Any other POST (e.g. "/notify/" with an empty merchant id) is answered with WeChat's error body too,
	// not the mux's plain-text 404.
	h.mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, "") })
	return h
}

// ServeHTTP implements http.Handler. A path that is not clean ("//notify/…", "/./", "/../") is answered
// with WeChat's error body and 404 here: the mux would redirect it, which WeChat Pay does not follow, and
// a notify_url is configured once, exactly.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && !cleanPath(r.URL.Path) {
		h.reject(w, r, http.StatusNotFound, reasonUncleanPath)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// cleanPath reports whether p is absolute and clean (a trailing slash allowed): no "//", "/./" or "/../".
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// reject answers a request that never reached a merchant's handler.
func (h *Handler) reject(w http.ResponseWriter, r *http.Request, code int, reason string) {
	start := time.Now()
	h.metrics.observeRequest(code, reason, 0)
	writeFail(w, code, reason)
	h.rejectLog.Warn().Str("path", clip(r.URL.Path)).Int("status", code).Str("outcome", outcome(code)).
		Str("reason", reason).Dur("latency", time.Since(start)).Msg("notification")
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, mchid string) {
	start := time.Now()
	ctx, span := h.tracer.StartRoot(r.Context(), tracing.SpanNotify, trace.SpanKindServer, r.Header)
	code, reason, ev := h.handle(ctx, w, r, mchid)
	h.metrics.observeRequest(code, reason, time.Since(start))
	if span.IsRecording() {
		recordSpan(span, mchid, r, code, reason, ev)
	}
	if code == http.StatusNoContent {
		w.WriteHeader(code)
	} else {
		writeFail(w, code, reason)
	}

	lg := &h.log
	lvl := zerolog.InfoLevel
	switch {
	case code >= 500:
		lvl = zerolog.ErrorLevel
	case code >= 400:
		lg, lvl = &h.rejectLog, zerolog.WarnLevel
	}
	e := lg.WithLevel(lvl).
		Str("mchid", clip(mchid)).
		Str("notification_id", ev.ID).
		Str("event_type", ev.EventType).
		Str("request_id", clip(r.Header.Get(topology.HeaderRequestID))).
		Int("status", code).
		Str("outcome", outcome(code)).
		Str("reason", reason).
		Dur("latency", time.Since(start))
	if ev.keyID != "" {
		// Which key verified it: two accounts configured with the same WeChat Pay key accept each other's
		// notifications at the signature (the consumer then refuses a resource naming another merchant).
		e = e.Str("key_id", clip(ev.keyID))
	}
	if ev.err != nil {
		e = e.AnErr("error", ev.err)
	}
	tracing.LogIDs(e, span).Msg("notification")
	span.End()
}

// recordSpan describes the notification on its span: who sent what, how verification went, how long
// the store took and what was answered — never the body, the signature headers or a key.
func recordSpan(span trace.Span, mchid string, r *http.Request, code int, reason string, ev handled) {
	verified := ev.verify
	if verified == "" {
		verified = tracing.VerifyNotChecked
	}
	span.SetAttributes(
		tracing.AttrHTTPMethod.String(r.Method),
		tracing.AttrHTTPRoute.String("/notify/{mchid}"),
		tracing.AttrHTTPStatus.Int(code),
		tracing.AttrMchID.String(clip(mchid)),
		tracing.AttrOutcome.String(outcome(code)),
		tracing.AttrReason.String(reason),
		tracing.AttrVerifyOutcome.String(verified),
	)
	if ev.verify == tracing.VerifyFailed {
		span.SetAttributes(tracing.AttrVerifyReason.String(reason))
	}
	if ev.ID != "" {
		span.SetAttributes(tracing.AttrNotificationID.String(ev.ID), tracing.AttrEventType.String(ev.EventType))
	}
	if ev.keyID != "" {
		span.SetAttributes(tracing.AttrKeyID.String(clip(ev.keyID)))
	}
	if id := r.Header.Get(topology.HeaderRequestID); id != "" {
		span.SetAttributes(tracing.AttrRequestID.String(clip(id)))
	}
	if ev.subject != "" {
		span.SetAttributes(tracing.Messaging(tracing.Send, ev.subject, ev.msgID)...)
		span.SetAttributes(tracing.AttrPublishSeconds.Float64(ev.publish.Seconds()))
	}
	// A server span is an error only when the server failed (OpenTelemetry's HTTP conventions): a
	// refused signature is the caller's problem, a failed store ours.
	if code >= 500 {
		msg := reason
		if ev.err != nil {
			msg = ev.err.Error()
		}
		span.SetStatus(codes.Error, msg)
	}
}

// handled is what the log line and the span of one request say about its notification.
type handled struct {
	ID, EventType string
	keyID         string // the Wechatpay-Serial that verified it
	err           error
	verify        string        // tracing.VerifyVerified or VerifyFailed; "" before verification
	subject       string        // the inbound subject, once a store was tried
	msgID         string        // its Nats-Msg-Id
	publish       time.Duration // how long the store took
}

func (h *Handler) handle(ctx context.Context, w http.ResponseWriter, r *http.Request, mchid string) (int, string, handled) {
	if mchid == "" {
		return http.StatusNotFound, reasonNoMerchant, handled{}
	}
	ver, ok := h.verifiers[mchid]
	if !ok {
		return http.StatusNotFound, reasonUnknownMerchant, handled{}
	}

	buf := h.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	reuse := true
	defer func() {
		// A publish that timed out may still be retried by the NATS client from this buffer.
		if reuse && buf.Cap() <= 4*int(h.maxBody) {
			h.bufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.maxBody)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return http.StatusRequestEntityTooLarge, reasonTooLarge, handled{}
		}
		return http.StatusBadRequest, reasonReadError, handled{err: err}
	}
	body := buf.Bytes()

	hdr := verify.HeadersFrom(r.Header)
	if err := ver.Verify(ctx, hdr, body); err != nil {
		reason := verify.Reason(err)
		h.metrics.verifyFailures.WithLabelValues(reason).Inc()
		return http.StatusUnauthorized, reason, handled{err: err, verify: tracing.VerifyFailed}
	}

	env, err := parseEnvelope(body)
	if err != nil {
		return http.StatusBadRequest, reasonMalformed, handled{keyID: hdr.Serial, err: err, verify: tracing.VerifyVerified}
	}
	ev := handled{ID: env.ID, EventType: env.EventType, keyID: hdr.Serial, verify: tracing.VerifyVerified}

	msg := &nats.Msg{
		Subject: topology.InboundSubject(mchid, env.SubjectToken()),
		Data:    body,
		Header:  inboundHeader(hdr, r.Header),
	}
	if h.tracer.On() {
		// The consumer continues this trace from the stored message, on every delivery and replay.
		tracing.Inject(ctx, msg.Header)
	}
	ev.subject, ev.msgID = msg.Subject, topology.InboundMsgID(mchid, env.ID)
	sctx, cancel := context.WithTimeout(ctx, h.publishTimeout)
	defer cancel()
	t0 := time.Now()
	dup, err := h.store.Store(sctx, msg, ev.msgID)
	ev.publish = time.Since(t0)
	h.metrics.publishSeconds.Observe(ev.publish.Seconds())
	if err != nil {
		reuse = false
		ev.err = err
		return http.StatusServiceUnavailable, reasonStoreFailed, ev
	}
	if dup {
		return http.StatusNoContent, reasonDuplicate, ev
	}
	return http.StatusNoContent, reasonStored, ev
}

// inboundHeader is what is stored beside the body: exactly the signature headers that were verified, one
// value each (a repeated header's other values, and any other Wechatpay-* header, are not), and the first
// Request-ID, which WeChat Pay support asks for. A traceparent from the request is not among them: with
// tracing on, the handler adds its own span's (tracing.HeaderTraceParent), so that the consumer
// continues the receiver's trace and never one a caller made up.
func inboundHeader(v verify.Headers, in http.Header) nats.Header {
	// Room for the six below, the two the store adds (Nats-Msg-Id, Nats-Expected-Stream) and a
	// traceparent, so that the map is allocated once.
	out := make(nats.Header, 9)
	for _, f := range []struct{ name, value string }{
		{verify.HeaderTimestamp, v.Timestamp}, {verify.HeaderNonce, v.Nonce}, {verify.HeaderSignature, v.Signature},
		{verify.HeaderSerial, v.Serial}, {verify.HeaderSignatureType, v.SignatureType},
	} {
		if f.value != "" {
			out[f.name] = []string{f.value}
		}
	}
	if id := strings.TrimSpace(in.Get(topology.HeaderRequestID)); id != "" {
		out[topology.HeaderRequestID] = []string{id}
	}
	return out
}

// failMessages are the answers' message fields: at most 64 characters, as WeChat Pay's contract asks.
var failMessages = map[string]string{
	reasonUnknownMerchant: "unknown merchant",
	reasonNoMerchant:      "merchant id required in the path: /notify/{mchid}",
	reasonTooLarge:        "body too large",
	reasonReadError:       "could not read body",
	reasonMalformed:       "malformed notification envelope",
	reasonStoreFailed:     "temporarily unable to store the notification, retry",
	reasonUncleanPath:     "unknown path: POST /notify/{mchid}",
}

func writeFail(w http.ResponseWriter, code int, reason string) {
	msg, ok := failMessages[reason]
	if !ok {
		msg = "signature verification failed: " + reason
	}
	body, _ := json.Marshal(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{"FAIL", msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

func outcome(code int) string {
	switch {
	case code == http.StatusNoContent:
		return "stored"
	case code >= 500:
		return "error"
	default:
		return "rejected"
	}
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
