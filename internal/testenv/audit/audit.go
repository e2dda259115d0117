// Package audit checks the pipeline's delivery promise from the outside: it records every notification the
// simulated WeChat Pay sent and every answer it got, reads WECHATPAY_EVENTS and WECHATPAY_DLQ, and reports
// business facts that were lost (answered 204 but neither published nor dead-lettered), duplicated (more
// than one event) or forged (an event no validly signed, acknowledged notification accounts for).
//
// It derives business facts from the plaintext the test sent and from the events' data with its own copy of
// the contract's dedupe-key table, so a mapping mistake in internal/events shows as a forged event instead of
// being checked against itself.
package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// Fact names one business fact: "<domain type>:<dedupe key parts>" as the contract defines them, e.g.
// "payment.succeeded:4200001234". It is per merchant; the auditor audits one merchant.
type Fact string

// keyRow is one row of the contract's table: WeChat event_type → domain type and dedupe key fields.
type keyRow struct {
	domain string
	fields []string // dedupe key fields of the decrypted resource; see factOf for the two special cases
}

// contract is CONTRACT.md's "Event types" table, written out again on purpose.
var contract = map[string]keyRow{
	"TRANSACTION.SUCCESS":           {"payment.succeeded", []string{"transaction_id"}},
	"TRANSACTION.FAIL":              {"payment.failed", []string{"transaction_id", "trade_state"}},
	"TRANSACTION.PAY_BACK":          {"payment.repaid", []string{"transaction_id", "trade_state"}},
	"REFUND.SUCCESS":                {"refund.succeeded", []string{"refund_id", "refund_status"}},
	"REFUND.ABNORMAL":               {"refund.abnormal", []string{"refund_id", "refund_status"}},
	"REFUND.CLOSED":                 {"refund.closed", []string{"refund_id", "refund_status"}},
	"VIOLATION.PUNISH":              {"violation.punished", []string{"record_id"}},
	"VIOLATION.INTERCEPT":           {"violation.intercepted", []string{"record_id"}},
	"VIOLATION.APPEAL":              {"violation.appealed", []string{"record_id"}},
	"VEHICLE.ENTRANCE_STATE_CHANGE": {"parking.state_changed", []string{"parking_id", "parking_state", "state_update_time"}},
}

// FactOf is the business fact a notification of eventType with this decrypted resource stands for.
func FactOf(eventType string, plaintext []byte) (Fact, error) {
	row, ok := contract[eventType]
	if !ok {
		return "", fmt.Errorf("audit: event type %s is not in the contract's table", eventType)
	}
	return factOf(row, plaintext)
}

func factOf(row keyRow, resource []byte) (Fact, error) {
	var m map[string]any
	if err := json.Unmarshal(resource, &m); err != nil {
		return "", fmt.Errorf("audit: resource is not a JSON object: %w", err)
	}
	parts := []string{row.domain}
	for _, f := range row.fields {
		v, _ := m[f].(string)
		if f == "transaction_id" && v == "" && row.domain == "payment.succeeded" {
			v, _ = m["id"].(string) // a global payment names its transaction "id"
		}
		if f == "state_update_time" {
			// Events normalise times to RFC 3339; compare instants, not spellings.
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				v = t.UTC().Format(time.RFC3339Nano)
			}
		}
		if v == "" {
			return "", fmt.Errorf("audit: %s resource lacks %s", row.domain, f)
		}
		parts = append(parts, v)
	}
	return Fact(strings.Join(parts, ":")), nil
}

// eventFact is the business fact a published CloudEvent claims to be.
func eventFact(e wxevents.Event) (Fact, error) {
	domain := string(e.DomainType())
	for _, row := range contract {
		if row.domain == domain {
			return factOf(row, e.Data)
		}
	}
	return "", fmt.Errorf("audit: event type %q is not in the contract's table", e.Type)
}

// Answer is one HTTP exchange with the receiver.
type Answer struct {
	NotificationID string
	Code           int // 0 when the request failed without an answer
	Err            error
	Latency        time.Duration
	At             time.Time
}

type sent struct {
	fact     Fact
	valid    bool
	accepted bool // answered 204 at least once
}

// Auditor records what the simulated WeChat Pay sent and what it was told. It is safe for concurrent use.
type Auditor struct {
	mu      sync.Mutex
	sent    map[string]*sent // by notification id
	answers []Answer
	client  *http.Client
}

// New returns an auditor whose Post and Deliver use client (a client with a 10 s timeout when nil).
func New(client *http.Client) *Auditor {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Auditor{sent: map[string]*sent{}, client: client}
}

// Expect registers a notification before it is sent. fact is its business fact ("" when it has none, e.g.
// a malformed or unsupported one); valid says whether it is validly signed, fresh and addressed to the
// merchant whose path it is posted to, i.e. whether the receiver may store it.
func (a *Auditor) Expect(id string, fact Fact, valid bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.sent[id]; ok {
		s.valid = s.valid || valid
		return
	}
	a.sent[id] = &sent{fact: fact, valid: valid}
}

// Record notes one answer to the notification id.
func (a *Auditor) Record(ans Answer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answers = append(a.answers, ans)
	if s, ok := a.sent[ans.NotificationID]; ok && ans.Code == http.StatusNoContent {
		s.accepted = true
	}
}

// Post sends n to url once, as WeChat Pay would, and records the answer. n must have been registered with
// Expect. It returns the status code, or 0 when no answer came.
func (a *Auditor) Post(ctx context.Context, url string, n wechatsim.Notification) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(n.Body))
	if err != nil {
		a.Record(Answer{NotificationID: n.ID, Err: err, At: time.Now()})
		return 0
	}
	req.Header = n.Header.Clone()
	start := time.Now()
	resp, err := a.client.Do(req)
	ans := Answer{NotificationID: n.ID, Err: err, At: start}
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		ans.Code = resp.StatusCode
	}
	ans.Latency = time.Since(start)
	a.Record(ans)
	return ans.Code
}

// Deliver posts n until it is answered 2xx, waiting interval between attempts, as WeChat Pay retries a
// notification that was not acknowledged (with 15 s and longer intervals; tests use shorter ones). It gives
// up when ctx ends and returns the last status code and the number of attempts.
func (a *Auditor) Deliver(ctx context.Context, url string, n wechatsim.Notification, interval time.Duration) (code, attempts int) {
	for {
		attempts++
		code = a.Post(ctx, url, n)
		if code >= 200 && code < 300 {
			return code, attempts
		}
		select {
		case <-ctx.Done():
			return code, attempts
		case <-time.After(interval):
		}
	}
}

// Answers returns a copy of every answer recorded so far.
func (a *Auditor) Answers() []Answer {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Answer(nil), a.answers...)
}

// Codes counts the answers by status code (0: no answer).
func (a *Auditor) Codes() map[int]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[int]int{}
	for _, ans := range a.answers {
		out[ans.Code]++
	}
	return out
}

// Report is the outcome of one audit.
type Report struct {
	Notifications int         // registered with Expect
	Requests      int         // HTTP requests sent
	Codes         map[int]int // answers by status code
	Accepted      int         // valid notifications answered 204
	Facts         int         // distinct business facts among them
	Events, DLQ   int         // messages read from the two streams

	// Lost: facts of accepted notifications with neither an event nor a DLQ entry for any of their notifications.
	Lost []Fact
	// Duplicated: facts with more than one event.
	Duplicated []Fact
	// Forged: events (by id) that no validly signed notification of the same fact accounts for, and DLQ
	// entries of notifications that were never sent validly signed.
	Forged []string
	// AcceptedInvalid: notifications that were not validly signed but were answered 204.
	AcceptedInvalid []string
	// Unacknowledged: events of valid notifications that were never answered 204 (stored although the answer
	// was a timeout or 503 — allowed, WeChat retries and the retry is a duplicate). Informational.
	Unacknowledged []string
	// Max204 is the slowest 204 answer.
	Max204 time.Duration
}

// Clean reports whether nothing was lost, duplicated, forged or wrongly accepted.
func (r Report) Clean() bool {
	return len(r.Lost) == 0 && len(r.Duplicated) == 0 && len(r.Forged) == 0 && len(r.AcceptedInvalid) == 0
}

func (r Report) String() string {
	codes := make([]int, 0, len(r.Codes))
	for c := range r.Codes {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var cs []string
	for _, c := range codes {
		cs = append(cs, fmt.Sprintf("%d×%d", c, r.Codes[c]))
	}
	s := fmt.Sprintf("%d notifications, %d requests [%s], %d accepted (%d facts), %d events, %d DLQ; lost %d, duplicated %d, forged %d, accepted-invalid %d, stored-without-204 %d; slowest 204 %s",
		r.Notifications, r.Requests, strings.Join(cs, " "), r.Accepted, r.Facts, r.Events, r.DLQ,
		len(r.Lost), len(r.Duplicated), len(r.Forged), len(r.AcceptedInvalid), len(r.Unacknowledged), r.Max204.Round(time.Millisecond))
	for _, l := range []struct {
		name string
		list []string
	}{{"lost", facts(r.Lost)}, {"duplicated", facts(r.Duplicated)}, {"forged", r.Forged}, {"accepted-invalid", r.AcceptedInvalid}} {
		if len(l.list) > 0 {
			s += fmt.Sprintf("\n  %s: %s", l.name, strings.Join(first(l.list, 10), ", "))
		}
	}
	return s
}

func facts(fs []Fact) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}

// Check reads both output streams through js and audits them against what was sent.
func (a *Auditor) Check(ctx context.Context, js jetstream.JetStream) (Report, error) {
	events, err := ReadStream(ctx, js, topology.EventsStream)
	if err != nil {
		return Report{}, err
	}
	dlq, err := ReadStream(ctx, js, topology.DLQStream)
	if err != nil {
		return Report{}, err
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	r := Report{Notifications: len(a.sent), Requests: len(a.answers), Codes: map[int]int{}, Events: len(events), DLQ: len(dlq)}
	for _, ans := range a.answers {
		r.Codes[ans.Code]++
		if ans.Code == http.StatusNoContent && ans.Latency > r.Max204 {
			r.Max204 = ans.Latency
		}
	}
	accepted := map[Fact][]string{} // fact → its accepted notification ids
	for id, s := range a.sent {
		switch {
		case s.accepted && !s.valid:
			r.AcceptedInvalid = append(r.AcceptedInvalid, id)
		case s.accepted && s.fact != "":
			r.Accepted++
			accepted[s.fact] = append(accepted[s.fact], id)
		case s.accepted:
			r.Accepted++
		}
	}
	r.Facts = len(accepted)

	published := map[Fact]int{}
	for _, m := range events {
		ce, err := wxevents.Parse(m.Data)
		if err != nil {
			r.Forged = append(r.Forged, fmt.Sprintf("seq %d (not a CloudEvent: %v)", m.Sequence, err))
			continue
		}
		f, err := eventFact(ce)
		if err != nil {
			r.Forged = append(r.Forged, fmt.Sprintf("%s (%v)", ce.ID, err))
			continue
		}
		published[f]++
		s, ok := a.sent[ce.NotificationID]
		switch {
		case !ok || !s.valid:
			r.Forged = append(r.Forged, fmt.Sprintf("%s (notification %q was never sent validly signed)", ce.ID, ce.NotificationID))
		case s.fact != f:
			r.Forged = append(r.Forged, fmt.Sprintf("%s (is %s, but its notification was %s)", ce.ID, f, s.fact))
		case !s.accepted:
			r.Unacknowledged = append(r.Unacknowledged, ce.ID)
		}
	}
	deadLettered := map[string]bool{} // notification ids
	for _, m := range dlq {
		var env struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(m.Data, &env)
		id := env.ID
		if id == "" {
			// Unparseable bodies are dead-lettered too; their id is in the original Nats-Msg-Id.
			_, id, _ = strings.Cut(m.Header.Get("Dlq-Original-Msg-Id"), ":")
		}
		if s, ok := a.sent[id]; !ok || !s.valid {
			r.Forged = append(r.Forged, fmt.Sprintf("DLQ seq %d (notification %q was never sent validly signed)", m.Sequence, id))
		}
		deadLettered[id] = true
	}
	for f, ids := range accepted {
		if published[f] > 1 {
			r.Duplicated = append(r.Duplicated, f)
		}
		if published[f] > 0 {
			continue
		}
		dl := false
		for _, id := range ids {
			dl = dl || deadLettered[id]
		}
		if !dl {
			r.Lost = append(r.Lost, f)
		}
	}
	sort.Slice(r.Lost, func(i, j int) bool { return r.Lost[i] < r.Lost[j] })
	sort.Slice(r.Duplicated, func(i, j int) bool { return r.Duplicated[i] < r.Duplicated[j] })
	sort.Strings(r.Forged)
	sort.Strings(r.AcceptedInvalid)
	return r, nil
}

// ReadStream returns every message in stream, in order, read with an ordered consumer.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string) ([]*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", stream, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", stream, err)
	}
	defer func() {
		// Polling audits would otherwise leave an ephemeral consumer behind each time until it times out.
		if ci := oc.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = s.DeleteConsumer(dctx, ci.Name)
			cancel()
		}
	}()
	var out []*jetstream.RawStreamMsg
	// Ask for exactly what is there (the stream's count, then the last message's pending count): a pull
	// for more than is available would wait out its expiry.
	want := info.State.Msgs
	for want > 0 {
		batch, err := oc.Fetch(int(min(want, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("audit: read %s: %w", stream, err)
			}
			want = meta.NumPending
			out = append(out, &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: meta.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: meta.Timestamp})
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("audit: read %s: %w", stream, err)
		}
		if n == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			return out, nil // messages removed since the count was taken
		}
	}
	return out, nil
}
