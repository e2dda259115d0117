package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// Live streams.
const (
	// keepAlive is how often an idle stream sends a comment, so that proxies keep it open and a vanished
	// client is noticed.
	keepAlive = 15 * time.Second
	// maxBacklog bounds how many stored events a stream may start with.
	maxBacklog = 1000
	// streamInactive lets the server remove a stream's ordered consumer soon after the console died
	// without removing it.
	streamInactive = 30 * time.Second
)

// info is what the page needs to draw itself.
type info struct {
	ReadOnly       bool     `json:"read_only"`        // no token configured: replay and purge are refused
	ReadsNeedToken bool     `json:"reads_need_token"` // every request needs the token
	EventTypes     []string `json:"event_types"`      // domain types, for the live filter
	Reasons        []string `json:"reasons"`          // dead-letter reasons, for the DLQ filter
}

func (h *Handler) info(w http.ResponseWriter, _ *http.Request) {
	in := info{ReadOnly: h.opts.Token == "", ReadsNeedToken: h.opts.ReadsNeedToken,
		Reasons: []string{dlq.ReasonUnsupportedEventType, dlq.ReasonDecryptFailed, dlq.ReasonUnknownMerchant, dlq.ReasonMaxDeliveries,
			dlq.ReasonMalformed, dlq.ReasonInconsistent, dlq.ReasonTooLarge, dlq.ReasonBadNonce, dlq.ReasonBadCiphertext, dlq.ReasonUnsupportedAlgorithm},
	}
	for _, m := range events.Mappings() {
		in.EventTypes = append(in.EventTypes, m.Type)
	}
	writeJSON(w, http.StatusOK, in)
}

// eventFilter is the live view's filter: the subject filter the server applies, and the business id the
// console matches itself (it is inside the event, not in the subject).
type eventFilter struct {
	subject string
	query   string
}

// errBadFilter: a query parameter cannot select anything; the text names it.
var errBadFilter = errors.New("bad filter")

// parseEventFilter reads type (a domain type such as payment.succeeded, a family such as refund or
// refund.*, or a WeChat event type such as REFUND.SUCCESS), mchid, sub (a sub-merchant, or _ for direct
// merchants only) and q (part of the business id, event id or notification id).
func parseEventFilter(typ, mchid, sub, q string) (eventFilter, error) {
	for _, p := range []struct{ name, value string }{{"mchid", mchid}, {"sub", sub}} {
		if p.value != "" && strings.ContainsAny(p.value, ".*> \t\r\n") {
			return eventFilter{}, fmt.Errorf("%w: %s %q is not a merchant id", errBadFilter, p.name, p.value)
		}
	}
	pattern := ""
	if typ = strings.TrimPrefix(strings.TrimSpace(typ), wxevents.CloudEventTypePrefix); typ != "" {
		pattern = typ
		for _, m := range events.Mappings() {
			if strings.EqualFold(typ, m.EventType) {
				pattern = m.Type
			}
		}
		if !strings.Contains(pattern, ".") {
			pattern += ".*"
		}
		family, kind, _ := strings.Cut(pattern, ".")
		known := false
		for _, m := range events.Mappings() {
			if ok, _ := path.Match(pattern, m.Type); ok {
				known = true
			}
		}
		if !known || !subjectToken(family) || !subjectToken(kind) {
			return eventFilter{}, fmt.Errorf("%w: type %q is no known event type or family", errBadFilter, typ)
		}
	}
	return eventFilter{subject: topology.EventFilter(pattern, mchid, sub), query: strings.ToLower(strings.TrimSpace(q))}, nil
}

// eventSummary is one line of the live view.
type eventSummary struct {
	Seq             uint64    `json:"seq"`
	Stored          time.Time `json:"stored"`
	NATSSubject     string    `json:"nats_subject"`
	Type            string    `json:"type"`
	MchID           string    `json:"mchid"`
	SubMchID        string    `json:"sub_mchid,omitempty"`
	ID              string    `json:"id"`
	Subject         string    `json:"subject"` // the business id
	Time            string    `json:"time"`    // the business time, in WeChat's offset
	NotificationID  string    `json:"notification_id"`
	WechatEventType string    `json:"wx_event_type"`
	Invalid         string    `json:"invalid,omitempty"` // why the message is no CloudEvent of ours (never its content)
}

// summarize reads the attributes the live view shows through wxevents.Parse. A message that does not
// parse still shows as a line, from its subject, with the reason; its content on a click.
func summarize(seq uint64, stored time.Time, subject string, data []byte) eventSummary {
	s := eventSummary{Seq: seq, Stored: stored.UTC(), NATSSubject: subject}
	if p, ok := topology.ParseEventSubject(subject); ok {
		s.Type, s.MchID, s.SubMchID = p.Type, p.MchID, p.Sub
	}
	e, err := wxevents.Parse(data)
	if err != nil {
		s.Invalid = err.Error()
		return s
	}
	s.ID, s.Subject, s.Time = e.ID, e.Subject, e.Time.Format(time.RFC3339Nano)
	s.NotificationID, s.WechatEventType = e.NotificationID, e.WechatEventType
	return s
}

func (f eventFilter) match(s eventSummary) bool {
	if f.query == "" {
		return true
	}
	for _, v := range []string{s.Subject, s.ID, s.NotificationID} {
		if strings.Contains(strings.ToLower(v), f.query) {
			return true
		}
	}
	return false
}

// streamEvents sends WECHATPAY_EVENTS live as server-sent events: first a "ready" event, then one "event"
// per matching message (its id the stream sequence), read by an ordered consumer that starts backlog
// messages before the end of the stream, or right after the sequence given as after (a reconnecting page).
func (h *Handler) streamEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := parseEventFilter(q.Get("type"), q.Get("mchid"), q.Get("sub"), q.Get("q"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_filter", err.Error())
		return
	}
	backlog, after, err := parseStart(q.Get("backlog"), q.Get("after"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_filter", err.Error())
		return
	}
	if n := h.streams.Add(1); int(n) > h.opts.MaxStreams {
		h.streams.Add(-1)
		writeError(w, http.StatusServiceUnavailable, "too_many_streams", fmt.Sprintf("at most %d live streams at once; close a tab", h.opts.MaxStreams))
		return
	}
	defer h.streams.Add(-1)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(h.life, cancel)()

	stream, err := h.js.Stream(ctx, topology.EventsStream)
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, fmt.Sprintf("stream %s: %v", topology.EventsStream, err))
		return
	}
	last := stream.CachedInfo().State.LastSeq
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.subject}, DeliverPolicy: jetstream.DeliverNewPolicy, InactiveThreshold: streamInactive}
	switch {
	case after > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	case backlog > 0 && last > 0:
		start := uint64(1)
		if last > uint64(backlog) {
			start = last - uint64(backlog) + 1
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(start, stream.CachedInfo().State.FirstSeq)
	}
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, fmt.Sprintf("follow %s: %v", topology.EventsStream, err))
		return
	}
	defer h.removeConsumer(cons)

	msgs := make(chan jetstream.Msg, 64)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m: // a slow page slows the consumer down; the ordered consumer's flow control holds the rest
		case <-ctx.Done():
		}
	})
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, fmt.Sprintf("follow %s: %v", topology.EventsStream, err))
		return
	}
	defer cc.Stop()
	defer cancel() // before Stop: a callback waiting to hand over a message gives up

	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream; charset=utf-8")
	hd.Set("X-Accel-Buffering", "no") // tell a proxy in front not to hold events back
	w.WriteHeader(http.StatusOK)
	send := func(event string, id uint64, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s: %w", event, err)
		}
		frame := "event: " + event + "\n"
		if id > 0 {
			frame += "id: " + strconv.FormatUint(id, 10) + "\n"
		}
		if _, err := fmt.Fprintf(w, "%sdata: %s\n\n", frame, b); err != nil {
			return fmt.Errorf("write %s: %w", event, err)
		}
		return rc.Flush()
	}
	if err := send("ready", 0, map[string]any{"last_seq": last, "filter": f.subject}); err != nil {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case m := <-msgs:
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			s := summarize(meta.Sequence.Stream, meta.Timestamp, m.Subject(), m.Data())
			if !f.match(s) {
				continue
			}
			if err := send("event", s.Seq, s); err != nil {
				return
			}
		}
	}
}

// subjectToken reports whether t is a whole-token wildcard or a literal subject token.
func subjectToken(t string) bool {
	return t == "*" || t != "" && !strings.ContainsAny(t, "*>. \t\r\n")
}

// parseStart reads the backlog (how many stored messages to start with) and after (resume after this
// sequence) parameters.
func parseStart(backlogParam, afterParam string) (backlog int, after uint64, err error) {
	if backlogParam != "" {
		if backlog, err = strconv.Atoi(backlogParam); err != nil || backlog < 0 || backlog > maxBacklog {
			return 0, 0, fmt.Errorf("%w: backlog %q: 0 to %d", errBadFilter, backlogParam, maxBacklog)
		}
	}
	if afterParam != "" {
		if after, err = strconv.ParseUint(afterParam, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("%w: after %q: a stream sequence", errBadFilter, afterParam)
		}
	}
	return backlog, after, nil
}

// removeConsumer deletes a stream's ordered consumer as the stream ends, instead of leaving it to the
// inactivity threshold.
func (h *Handler) removeConsumer(cons jetstream.Consumer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.js.DeleteConsumer(ctx, topology.EventsStream, cons.CachedInfo().Name) // best effort: the threshold is the fallback
}

// storedEvent is one event as stored: the CloudEvent exactly as published, with where it is.
type storedEvent struct {
	Seq         uint64            `json:"seq"`
	Stored      time.Time         `json:"stored"`
	NATSSubject string            `json:"nats_subject"`
	Headers     map[string]string `json:"headers"`
	Event       json.RawMessage   `json:"event"`
}

func (h *Handler) getEvent(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		writeError(w, http.StatusBadRequest, "bad_seq", "a stream sequence number, e.g. /api/events/42")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dlq.DefaultTimeout)
	defer cancel()
	stream, err := h.js.Stream(ctx, topology.EventsStream)
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, fmt.Sprintf("stream %s: %v", topology.EventsStream, err))
		return
	}
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s has no message %d (aged out?)", topology.EventsStream, seq))
		return
	}
	if err != nil {
		status, code := errStatus(err)
		writeError(w, status, code, fmt.Sprintf("get event %d: %v", seq, err))
		return
	}
	out := storedEvent{Seq: seq, Stored: m.Time.UTC(), NATSSubject: m.Subject, Headers: map[string]string{}, Event: m.Data}
	for k, v := range m.Header {
		out.Headers[k] = strings.Join(v, ", ")
	}
	if !json.Valid(m.Data) {
		out.Event, _ = json.Marshal(string(m.Data))
	}
	writeJSON(w, http.StatusOK, out)
}
