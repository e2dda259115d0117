package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// List limits: a page lists what a person can read; replay and purge act on every match, as the CLI does.
const (
	defaultListLimit = 200
	maxListLimit     = 1000
)

// filterParams are dlq.Filter as the API takes it, with the same meaning as wxpayctl dlq's flags: reason,
// mchid and event_type comma-separated; since and until an RFC 3339 time or a duration ago ("2h"); seq
// N, A-B or A-; limit at most that many (0: no limit).
type filterParams struct {
	Reason    string `json:"reason"`
	MchID     string `json:"mchid"`
	EventType string `json:"event_type"`
	Since     string `json:"since"`
	Until     string `json:"until"`
	Seq       string `json:"seq"`
	Limit     int    `json:"limit"`
}

func filterFromQuery(q url.Values) (filterParams, error) {
	p := filterParams{Reason: q.Get("reason"), MchID: q.Get("mchid"), EventType: q.Get("event_type"),
		Since: q.Get("since"), Until: q.Get("until"), Seq: q.Get("seq"), Limit: defaultListLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			return p, fmt.Errorf("%w: limit %q: 1 to %d", dlq.ErrBadFilter, v, maxListLimit)
		}
		p.Limit = n
	}
	return p, nil
}

// filter turns the parameters into a dlq.Filter, or an error wrapping dlq.ErrBadFilter that names the
// parameter.
func (p filterParams) filter(now time.Time) (dlq.Filter, error) {
	f := dlq.Filter{Reasons: list(p.Reason), MchIDs: list(p.MchID), EventTypes: list(p.EventType), Limit: p.Limit}
	var err error
	if f.Since, err = dlq.ParseWhen(p.Since, now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = dlq.ParseWhen(p.Until, now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	if p.Seq != "" {
		if f.From, f.To, err = dlq.ParseSeqRange(p.Seq); err != nil {
			return f, fmt.Errorf("seq: %w", err)
		}
	}
	return f, f.Validate()
}

func list(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// openDLQ opens the DLQ for one request: the stream may be created after the console started.
func (h *Handler) openDLQ(ctx context.Context, w http.ResponseWriter) (*dlq.Store, bool) {
	s, err := dlq.Open(ctx, h.js, dlq.WithTracerProvider(h.opts.TracerProvider))
	if err != nil {
		status, code := errStatus(err)
		if errors.Is(err, dlq.ErrNoStream) {
			status, code = http.StatusServiceUnavailable, "no_stream"
		}
		writeError(w, status, code, err.Error())
		return nil, false
	}
	return s, true
}

// dlqList is the dead-letter list: entries in stream order, and whether the limit cut it short.
type dlqList struct {
	Entries []dlq.Entry `json:"entries"`
	More    bool        `json:"more"`
	Now     time.Time   `json:"now"` // the server's clock, for ages that do not depend on the browser's
}

func (h *Handler) listDLQ(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	p, err := filterFromQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_filter", err.Error())
		return
	}
	f, err := p.filter(now)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_filter", err.Error())
		return
	}
	s, ok := h.openDLQ(r.Context(), w)
	if !ok {
		return
	}
	entries, more, err := s.Scan(r.Context(), f)
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, err.Error())
		return
	}
	if entries == nil {
		entries = []dlq.Entry{}
	}
	writeJSON(w, http.StatusOK, dlqList{Entries: entries, More: more, Now: now.UTC()})
}

// entryDetail is one dead letter as the detail view shows it: the entry, its headers, the envelope and the
// raw body as stored — still encrypted: the console holds no key and never decrypts.
type entryDetail struct {
	dlq.Entry
	Subject       string             `json:"subject"`
	Headers       map[string]string  `json:"headers"`
	Envelope      *envelope.Envelope `json:"envelope,omitempty"`
	EnvelopeError string             `json:"envelope_error,omitempty"`
	Body          string             `json:"body"`
	BodyBytes     int                `json:"body_bytes"`
	Replayable    bool               `json:"replayable"`
	FixFirst      string             `json:"fix_first,omitempty"`
	ReplayTo      *dlq.Replayed      `json:"replay_to,omitempty"`
	Now           time.Time          `json:"now"`
}

func (h *Handler) getDLQ(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		writeError(w, http.StatusBadRequest, "bad_seq", "a DLQ sequence number, e.g. /api/dlq/42")
		return
	}
	s, ok := h.openDLQ(r.Context(), w)
	if !ok {
		return
	}
	e, err := s.Get(r.Context(), seq)
	if errors.Is(err, dlq.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, err.Error())
		return
	}
	d := entryDetail{Entry: e, Subject: e.Subject, Headers: map[string]string{}, Envelope: e.Envelope,
		EnvelopeError: e.EnvelopeError, Body: string(e.Body), BodyBytes: len(e.Body), Now: time.Now().UTC()}
	d.Replayable, d.FixFirst = e.Replayable()
	if plan, err := dlq.Plan(e); err == nil {
		d.ReplayTo = &plan
	}
	for k, v := range e.Header {
		d.Headers[k] = strings.Join(v, ", ")
	}
	writeJSON(w, http.StatusOK, d)
}

// replayRequest selects the entries to replay, with wxpayctl dlq replay's --dry-run and --rate.
type replayRequest struct {
	filterParams
	DryRun bool   `json:"dry_run"`
	Rate   string `json:"rate"` // "20/s", "600/m"; "": no limit
}

// decodeBody reads a change's JSON body; unknown fields are refused, so that a misspelt "dry_run" cannot
// turn a dry run into the real thing.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "the body is not the JSON this route takes: "+err.Error())
		return false
	}
	return true
}

// replay sends the matching entries back to WECHATPAY_INBOUND through dlq.Store.Replay, paced by
// dlq.Pacer, exactly as wxpayctl dlq replay does. A page that goes away, or the console shutting down,
// stops it between two entries: what is left stays in the DLQ.
func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req replayRequest
	if !decodeBody(w, r, &req) {
		return
	}
	f, err := req.filter(start)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_filter", err.Error())
		return
	}
	interval, err := dlq.ParseRate(req.Rate)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_rate", err.Error())
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.life, cancel)()
	s, ok := h.openDLQ(ctx, w)
	if !ok {
		return
	}
	entries, _, err := s.Scan(ctx, f)
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, err.Error())
		return
	}
	sum := s.ReplayAll(ctx, entries, req.DryRun, interval, nil)
	if !req.DryRun {
		h.log.Info().Str("action", "replay").Str("filter", describe(req.filterParams)).Int("matched", sum.Matched).
			Int("replayed", sum.Replayed).Int("failed", sum.Failed).Int("gone", sum.Gone).Bool("interrupted", sum.Interrupted).
			Str("remote", r.RemoteAddr).Msg("console: dead letters replayed to " + topology.InboundStream)
	}
	writeJSON(w, http.StatusOK, sum)
}

// purgeRequest selects the entries to purge. Confirm must be the number of entries the filter matches:
// the page shows that number from a dry run and has the person type it, and a filter that matches more
// by now (new dead letters) is refused rather than purged.
type purgeRequest struct {
	filterParams
	DryRun  bool `json:"dry_run"`
	Confirm int  `json:"confirm"`
}

// purgeSummary answers a purge, as wxpayctl dlq purge -o json prints it.
type purgeSummary struct {
	Matched int      `json:"matched"`
	Purged  int      `json:"purged"`
	DryRun  bool     `json:"dry_run"`
	Seqs    []uint64 `json:"seqs"`
	Errors  []string `json:"errors,omitempty"`
}

// purgeConflict is the answer to an unconfirmed or mis-confirmed purge.
type purgeConflict struct {
	apiError
	Matched int `json:"matched"`
}

func (h *Handler) purge(w http.ResponseWriter, r *http.Request) {
	var req purgeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	f, err := req.filter(time.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_filter", err.Error())
		return
	}
	ctx := r.Context()
	s, ok := h.openDLQ(ctx, w)
	if !ok {
		return
	}
	entries, _, err := s.Scan(ctx, f)
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, err.Error())
		return
	}
	sum := purgeSummary{Matched: len(entries), DryRun: req.DryRun, Seqs: []uint64{}}
	if req.DryRun || len(entries) == 0 {
		for _, e := range entries {
			sum.Seqs = append(sum.Seqs, e.Seq)
		}
		writeJSON(w, http.StatusOK, sum)
		return
	}
	switch {
	case req.Confirm == 0:
		writeJSON(w, http.StatusBadRequest, purgeConflict{apiError{Code: "confirmation_required",
			Error: fmt.Sprintf("purging deletes for good: confirm with \"confirm\": %d, the number of entries the filter matches", len(entries))}, len(entries)})
		return
	case req.Confirm != len(entries):
		writeJSON(w, http.StatusConflict, purgeConflict{apiError{Code: "confirmation_mismatch",
			Error: fmt.Sprintf("the filter matches %d entries now, not %d: look again before purging", len(entries), req.Confirm)}, len(entries)})
		return
	}
	for _, e := range entries {
		if err := s.Delete(context.WithoutCancel(ctx), e.Seq); err != nil {
			sum.Errors = append(sum.Errors, err.Error())
			continue
		}
		sum.Purged++
		sum.Seqs = append(sum.Seqs, e.Seq)
	}
	h.log.Info().Str("action", "purge").Str("filter", describe(req.filterParams)).Int("matched", sum.Matched).
		Int("purged", sum.Purged).Int("errors", len(sum.Errors)).Str("remote", r.RemoteAddr).Msg("console: dead letters purged from " + topology.DLQStream)
	writeJSON(w, http.StatusOK, sum)
}

// describe writes a filter for the log the way the CLI's flags would say it.
func describe(p filterParams) string {
	var parts []string
	for _, kv := range []struct{ k, v string }{{"reason", p.Reason}, {"mchid", p.MchID}, {"event-type", p.EventType},
		{"since", p.Since}, {"until", p.Until}, {"seq", p.Seq}} {
		if kv.v != "" {
			parts = append(parts, "--"+kv.k+" "+kv.v)
		}
	}
	if p.Limit > 0 {
		parts = append(parts, "--limit "+strconv.Itoa(p.Limit))
	}
	if len(parts) == 0 {
		return "(every entry)"
	}
	return strings.Join(parts, " ")
}
