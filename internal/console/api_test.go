package console_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/console"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

const testToken = "console-test-token-0123456789abcdef"

// world is the whole pipeline with a console in front of it, and two real dead letters: a refund that a
// consumer with the wrong APIv3 key could not decrypt, and a notification of a type nobody supports.
type world struct {
	*pipelinetest.Stack
	console       *console.Server
	url           string
	consumerAdmin string
	apiv3Keys     [][]byte // the right and the wrong key: neither may appear in any answer
	refundPlain   []byte   // the dead-lettered refund's plaintext: no dead-letter answer may show it
	refundID      string
	refundSeq     uint64 // its DLQ sequence
	unsupported   uint64 // the unsupported notification's DLQ sequence
}

func startWorld(t *testing.T) *world {
	t.Helper()
	s := pipelinetest.StartWith(t, pipelinetest.Options{})
	w := &world{Stack: s}
	good := s.Env["WECHATPAY_APIV3_KEY_FILE"]
	goodKey, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong-apiv3.key")
	wrongKey := []byte(strings.Repeat("w", 32))
	if err := os.WriteFile(wrong, wrongKey, 0o600); err != nil {
		t.Fatal(err)
	}
	w.apiv3Keys = [][]byte{bytes.TrimSpace(goodKey), wrongKey}

	s.Env["WECHATPAY_APIV3_KEY_FILE"] = wrong
	stopWrong := s.StartConsumer(pipelinetest.ConsumerOptions{})
	w.refundPlain = wechatsim.Fresh(samples.All()["REFUND.SUCCESS"], pipelinetest.MchID, time.Now())
	w.refundID = field(t, w.refundPlain, "refund_id")
	w.post(t, "REFUND.SUCCESS", w.refundPlain)
	w.post(t, "PAYSCORE.USER_OPEN_SERVICE", []byte(`{"out_request_no":"console-test"}`))
	s.WaitFor(20*time.Second, "two dead letters", func() bool { return s.Count(topology.DLQStream) == 2 && s.Settled() })
	stopWrong()
	for _, m := range s.Messages(topology.DLQStream) {
		if strings.HasPrefix(m.Subject, topology.DLQSubject("decrypt_failed", "")) {
			w.refundSeq = m.Sequence
		} else {
			w.unsupported = m.Sequence
		}
	}

	s.Env["WECHATPAY_APIV3_KEY_FILE"] = good
	_, w.consumerAdmin = s.StartConsumerAdmin(pipelinetest.ConsumerOptions{})
	w.console = startConsole(t, s.JetStream(), console.Config{Addr: "127.0.0.1:0", Token: testToken,
		ReceiverAdmin: s.ReceiverAdmin, ConsumerAdmin: w.consumerAdmin}, s.Logs)
	w.url = strings.TrimSuffix(w.console.URL(), "/")
	return w
}

// startConsole runs a console until the test ends, and checks that it shut down cleanly.
func startConsole(t *testing.T, js jetstream.JetStream, cfg console.Config, logs io.Writer) *console.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := console.New(ctx, js, cfg, zerolog.New(logs))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("console stopped with %v", err)
		}
	})
	return srv
}

func (w *world) post(t *testing.T, eventType string, plain []byte) {
	t.Helper()
	if code := w.Post(w.Build(eventType, plain, wechatsim.Options{})); code != http.StatusNoContent {
		t.Fatalf("receiver answered %d to %s", code, eventType)
	}
}

func field(t *testing.T, plain []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(plain, &m); err != nil {
		t.Fatal(err)
	}
	v, _ := m[name].(string)
	if v == "" {
		t.Fatalf("no %s in %s", name, plain)
	}
	return v
}

// answer is one HTTP exchange with the console.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(a.body, v); err != nil {
		t.Fatalf("answer %d is not the JSON expected: %v\n%s", a.status, err, a.body)
	}
}

// client talks to a console and keeps every answer, so that the test can check none leaked a secret.
type client struct {
	base string
	mu   sync.Mutex
	seen []answer
}

type reqOption func(*http.Request)

func bearerToken(tok string) reqOption {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func header(k, v string) reqOption { return func(r *http.Request) { r.Header.Set(k, v) } }

func host(h string) reqOption { return func(r *http.Request) { r.Host = h } }

// do sends a request; a body is sent as JSON unless an option says otherwise.
func (c *client) do(t *testing.T, method, path string, body any, opts ...reqOption) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: b}
	c.mu.Lock()
	c.seen = append(c.seen, a)
	c.mu.Unlock()
	return a
}

func (c *client) want(t *testing.T, status int, method, path string, body any, opts ...reqOption) answer {
	t.Helper()
	a := c.do(t, method, path, body, opts...)
	if a.status != status {
		t.Fatalf("%s %s: %d, want %d\n%s", method, path, a.status, status, a.body)
	}
	return a
}

// sse reads a live stream's events.
type sse struct {
	events chan sseEvent
	cancel context.CancelFunc
}

type sseEvent struct {
	name string
	data string
}

func openStream(t *testing.T, base, query string, opts ...reqOption) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/events/stream?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("stream ?%s: %d\n%s", query, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("stream content type %q", ct)
	}
	s := &sse{events: make(chan sseEvent, 256), cancel: cancel}
	go func() {
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(cancel)
	return s
}

// next returns the next event, failing the test after timeout.
func (s *sse) next(t *testing.T, timeout time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
		return sseEvent{}
	}
}

type liveEvent struct {
	Seq      uint64 `json:"seq"`
	Type     string `json:"type"`
	MchID    string `json:"mchid"`
	SubMchID string `json:"sub_mchid"`
	ID       string `json:"id"`
	Subject  string `json:"subject"`
}

// until reads events until one satisfies ok.
func (s *sse) until(t *testing.T, timeout time.Duration, ok func(liveEvent) bool) liveEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ev := s.next(t, time.Until(deadline))
		if ev.name != "event" {
			continue
		}
		var e liveEvent
		if err := json.Unmarshal([]byte(ev.data), &e); err != nil {
			t.Fatalf("event data %q: %v", ev.data, err)
		}
		if ok(e) {
			return e
		}
	}
}

type dlqEntry struct {
	Seq            uint64 `json:"seq"`
	Reason         string `json:"reason"`
	MchID          string `json:"mchid"`
	EventType      string `json:"event_type"`
	NotificationID string `json:"notification_id"`
	Deliveries     int    `json:"deliveries"`
	Error          string `json:"error"`
	Stored         string `json:"stored"`
}

func (c *client) dlq(t *testing.T, query string) []dlqEntry {
	t.Helper()
	var out struct {
		Entries []dlqEntry `json:"entries"`
	}
	c.want(t, http.StatusOK, http.MethodGet, "/api/dlq?"+query, nil).decode(t, &out)
	return out.Entries
}

// TestConsoleAPI drives the console's API against the real pipeline — simulator, receiver, JetStream,
// consumer — the way the page does, and checks the safety rules at each step.
func TestConsoleAPI(t *testing.T) {
	w := startWorld(t)
	c := &client{base: w.url}
	seq := func(n uint64) string { return strconv.FormatUint(n, 10) }

	t.Run("the page is served from the binary with a strict policy", func(t *testing.T) {
		a := c.want(t, http.StatusOK, http.MethodGet, "/", nil)
		if !strings.Contains(string(a.body), "wxpay-events console") || !strings.HasPrefix(a.header.Get("Content-Type"), "text/html") {
			t.Fatalf("index: %s\n%s", a.header.Get("Content-Type"), a.body)
		}
		for k, want := range map[string]string{"Content-Security-Policy": "script-src 'self'", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"} {
			if !strings.Contains(a.header.Get(k), want) {
				t.Errorf("%s = %q, want it to hold %q", k, a.header.Get(k), want)
			}
		}
		for _, asset := range []string{"/assets/app.js", "/assets/app.css"} {
			c.want(t, http.StatusOK, http.MethodGet, asset, nil)
		}
		if a.header.Get("Access-Control-Allow-Origin") != "" {
			t.Error("the console grants another origin access")
		}
		var in struct {
			ReadOnly   bool     `json:"read_only"`
			EventTypes []string `json:"event_types"`
		}
		c.want(t, http.StatusOK, http.MethodGet, "/api/info", nil).decode(t, &in)
		if in.ReadOnly || len(in.EventTypes) != 10 {
			t.Errorf("info: %+v", in)
		}
	})

	t.Run("events arrive live over server-sent events, and a click shows the CloudEvent", func(t *testing.T) {
		stream := openStream(t, w.url, "type=payment.succeeded&mchid="+pipelinetest.MchID)
		if ev := stream.next(t, 10*time.Second); ev.name != "ready" {
			t.Fatalf("first event %q, want ready", ev.name)
		}
		refunds := openStream(t, w.url, "type=refund")
		refunds.next(t, 10*time.Second)
		plain := wechatsim.Fresh(samples.All()["TRANSACTION.SUCCESS"], pipelinetest.MchID, time.Now())
		txid := field(t, plain, "transaction_id")
		w.post(t, "TRANSACTION.SUCCESS", plain)
		refundPlain := wechatsim.Fresh(samples.All()["REFUND.CLOSED"], pipelinetest.MchID, time.Now())
		w.post(t, "REFUND.CLOSED", refundPlain)

		e := stream.until(t, 20*time.Second, func(e liveEvent) bool { return true })
		if e.Subject != txid || e.Type != "payment.succeeded" || e.MchID != pipelinetest.MchID || e.ID == "" {
			t.Fatalf("first payment event %+v, want the payment %s", e, txid)
		}
		if r := refunds.until(t, 20*time.Second, func(liveEvent) bool { return true }); r.Type != "refund.closed" {
			t.Fatalf("the refund stream showed %+v", r)
		}

		var stored struct {
			NATSSubject string            `json:"nats_subject"`
			Headers     map[string]string `json:"headers"`
			Event       struct {
				ID      string          `json:"id"`
				Type    string          `json:"type"`
				Subject string          `json:"subject"`
				Data    json.RawMessage `json:"data"`
			} `json:"event"`
		}
		c.want(t, http.StatusOK, http.MethodGet, "/api/events/"+seq(e.Seq), nil).decode(t, &stored)
		if stored.Event.Type != "com.wechatpay.payment.succeeded" || stored.Event.Subject != txid || stored.Event.ID != e.ID ||
			stored.Headers["Nats-Msg-Id"] != e.ID || len(stored.Event.Data) < 10 {
			t.Fatalf("stored event: %+v", stored)
		}
		c.want(t, http.StatusNotFound, http.MethodGet, "/api/events/999999", nil)

		// The business-id filter, from the stream's start: only that payment.
		byID := openStream(t, w.url, "backlog=100&q="+txid[len(txid)-8:])
		got := byID.until(t, 10*time.Second, func(liveEvent) bool { return true })
		if got.Subject != txid {
			t.Fatalf("filtered by business id, got %+v", got)
		}
		// A page that reconnects resumes right after the last event it showed.
		all := openStream(t, w.url, "backlog=100")
		any := func(liveEvent) bool { return true }
		first, second := all.until(t, 10*time.Second, any), all.until(t, 10*time.Second, any)
		after := openStream(t, w.url, "after="+seq(first.Seq))
		if next := after.until(t, 10*time.Second, any); next.Seq != second.Seq || next.ID != second.ID {
			t.Fatalf("resumed after %d, got %+v; want %+v", first.Seq, next, second)
		}
	})

	t.Run("bad live filters are refused, naming the filter", func(t *testing.T) {
		for _, q := range []string{"type=payment.nonsense", "type=nonsense", "mchid=a.b", "sub=*", "backlog=5000", "after=x"} {
			a := c.want(t, http.StatusBadRequest, http.MethodGet, "/api/events/stream?"+q, nil)
			name, _, _ := strings.Cut(q, "=")
			if !strings.Contains(string(a.body), name) {
				t.Errorf("%s: %s", q, a.body)
			}
		}
	})

	t.Run("dead letters are listed with reason, merchant, age, deliveries and error", func(t *testing.T) {
		all := c.dlq(t, "")
		if len(all) != 2 {
			t.Fatalf("%d entries: %+v", len(all), all)
		}
		for _, e := range all {
			if e.MchID != pipelinetest.MchID || e.Deliveries < 1 || e.Stored == "" || e.NotificationID == "" {
				t.Errorf("entry %+v", e)
			}
			if e.Seq == w.refundSeq && (e.Reason != "decrypt_failed" || e.Error == "" || e.EventType != "REFUND.SUCCESS") {
				t.Errorf("refund entry %+v", e)
			}
		}
		for _, tc := range []struct {
			query string
			want  []uint64
		}{
			{"reason=unsupported_event_type", []uint64{w.unsupported}},
			// Listed in stream order; which of the two was dead-lettered first is the consumer's business
			// (one batch may hold both).
			{"reason=decrypt_failed,unsupported_event_type", []uint64{min(w.refundSeq, w.unsupported), max(w.refundSeq, w.unsupported)}},
			{"event_type=refund.*", []uint64{w.refundSeq}},
			{"mchid=1900000999", nil},
			{"seq=" + seq(w.unsupported), []uint64{w.unsupported}},
			{"since=1h&limit=1", []uint64{min(w.refundSeq, w.unsupported)}},
		} {
			var got []uint64
			for _, e := range c.dlq(t, tc.query) {
				got = append(got, e.Seq)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && (got[0] != tc.want[0] || got[len(got)-1] != tc.want[len(tc.want)-1])) {
				t.Errorf("?%s: %v, want %v", tc.query, got, tc.want)
			}
		}
		for _, q := range []string{"reason=a.b", "since=yesterday", "seq=9-3", "limit=0"} {
			c.want(t, http.StatusBadRequest, http.MethodGet, "/api/dlq?"+q, nil)
		}
	})

	t.Run("the detail shows headers and the still-encrypted body, never the plaintext", func(t *testing.T) {
		var d struct {
			Reason   string            `json:"reason"`
			Headers  map[string]string `json:"headers"`
			Body     string            `json:"body"`
			Envelope struct {
				Resource struct {
					Ciphertext string `json:"ciphertext"`
				} `json:"resource"`
			} `json:"envelope"`
			Replayable bool `json:"replayable"`
			ReplayTo   struct {
				Target string `json:"target"`
			} `json:"replay_to"`
		}
		a := c.want(t, http.StatusOK, http.MethodGet, "/api/dlq/"+seq(w.refundSeq), nil)
		a.decode(t, &d)
		if d.Reason != "decrypt_failed" || d.Headers["Wechatpay-Signature"] == "" || d.Headers["Dlq-Reason"] != "decrypt_failed" ||
			d.Envelope.Resource.Ciphertext == "" || !strings.Contains(d.Body, d.Envelope.Resource.Ciphertext) ||
			d.ReplayTo.Target != topology.InboundSubject(pipelinetest.MchID, "refund.success") {
			t.Fatalf("detail: %s", a.body)
		}
		if strings.Contains(string(a.body), w.refundID) {
			t.Fatalf("the detail shows the decrypted refund (%s)", w.refundID)
		}
		c.want(t, http.StatusNotFound, http.MethodGet, "/api/dlq/999999", nil)
		c.want(t, http.StatusBadRequest, http.MethodGet, "/api/dlq/x", nil)
	})

	replayOne := map[string]any{"seq": seq(w.refundSeq)}
	t.Run("changes are refused without the token, from other origins and from forms", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body any
			opts []reqOption
			want int
		}{
			{"no token", replayOne, nil, http.StatusUnauthorized},
			{"a wrong token", replayOne, []reqOption{bearerToken("not-the-console-token-at-all")}, http.StatusUnauthorized},
			{"the token in a cookie", replayOne, []reqOption{header("Cookie", "token="+testToken)}, http.StatusUnauthorized},
			{"another scheme", replayOne, []reqOption{header("Authorization", "Basic "+testToken)}, http.StatusUnauthorized},
			{"another origin", replayOne, []reqOption{bearerToken(testToken), header("Origin", "https://evil.example")}, http.StatusForbidden},
			{"a cross-site fetch", replayOne, []reqOption{bearerToken(testToken), header("Sec-Fetch-Site", "cross-site")}, http.StatusForbidden},
			{"an HTML form", "seq=1", []reqOption{bearerToken(testToken), header("Content-Type", "application/x-www-form-urlencoded")}, http.StatusUnsupportedMediaType},
			{"a multipart form", replayOne, []reqOption{bearerToken(testToken), header("Content-Type", "multipart/form-data; boundary=x")}, http.StatusUnsupportedMediaType},
			{"text/plain", replayOne, []reqOption{bearerToken(testToken), header("Content-Type", "text/plain")}, http.StatusUnsupportedMediaType},
			{"a rebound host name", replayOne, []reqOption{bearerToken(testToken), host("evil.example:8088")}, http.StatusForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, path := range []string{"/api/dlq/replay", "/api/dlq/purge"} {
					body := tc.body
					if path == "/api/dlq/purge" {
						if m, ok := body.(map[string]any); ok {
							body = map[string]any{"seq": m["seq"], "confirm": 1}
						}
					}
					a := c.want(t, tc.want, http.MethodPost, path, body, tc.opts...)
					if tc.want == http.StatusUnauthorized && !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("401 without a Bearer challenge")
					}
				}
			})
		}
		// Another site's page cannot read the API, nor can a page that rebinds its name to 127.0.0.1.
		for _, site := range []string{"cross-site", "same-site"} {
			c.want(t, http.StatusForbidden, http.MethodGet, "/api/dlq", nil, header("Sec-Fetch-Site", site))
		}
		c.want(t, http.StatusOK, http.MethodGet, "/", nil, header("Sec-Fetch-Site", "cross-site")) // a link to the console still opens it
		c.want(t, http.StatusForbidden, http.MethodGet, "/api/dlq", nil, host("evil.example"))
		c.want(t, http.StatusOK, http.MethodGet, "/api/dlq", nil, host("localhost:1"))
		if n := len(c.dlq(t, "")); n != 2 {
			t.Fatalf("%d dead letters after the refused changes, want 2", n)
		}
		// The same request with the token, same-origin, is accepted (a dry run, to change nothing yet).
		c.want(t, http.StatusOK, http.MethodPost, "/api/dlq/replay", map[string]any{"seq": seq(w.refundSeq), "dry_run": true},
			bearerToken(testToken), header("Origin", w.url), header("Sec-Fetch-Site", "same-origin"))
		c.want(t, http.StatusBadRequest, http.MethodPost, "/api/dlq/replay", map[string]any{"seq": "1", "dryrun": true}, bearerToken(testToken))
	})

	t.Run("a console started without a token is read-only", func(t *testing.T) {
		ro := startConsole(t, w.JetStream(), console.Config{Addr: "127.0.0.1:0"}, io.Discard)
		rc := &client{base: strings.TrimSuffix(ro.URL(), "/")}
		a := rc.want(t, http.StatusForbidden, http.MethodPost, "/api/dlq/replay", replayOne, bearerToken(testToken))
		if !strings.Contains(string(a.body), "read_only") {
			t.Errorf("%s", a.body)
		}
		rc.want(t, http.StatusOK, http.MethodGet, "/api/dlq", nil)
	})

	t.Run("a dry run says where an entry would go and changes nothing", func(t *testing.T) {
		var sum struct {
			Matched int  `json:"matched"`
			DryRun  bool `json:"dry_run"`
			Entries []struct {
				Seq    uint64 `json:"seq"`
				Target string `json:"target"`
				MsgID  string `json:"msg_id"`
			} `json:"entries"`
		}
		c.want(t, http.StatusOK, http.MethodPost, "/api/dlq/replay", map[string]any{"reason": "decrypt_failed", "dry_run": true}, bearerToken(testToken)).decode(t, &sum)
		if sum.Matched != 1 || !sum.DryRun || len(sum.Entries) != 1 || sum.Entries[0].Seq != w.refundSeq ||
			!strings.HasSuffix(sum.Entries[0].MsgID, ":replay:"+seq(w.refundSeq)) {
			t.Fatalf("dry run: %+v", sum)
		}
		if n := len(c.dlq(t, "")); n != 2 {
			t.Fatalf("%d dead letters after a dry run", n)
		}
		c.want(t, http.StatusBadRequest, http.MethodPost, "/api/dlq/replay", map[string]any{"rate": "fast"}, bearerToken(testToken))
	})

	t.Run("a replay with the token sends the entry back, and its event arrives", func(t *testing.T) {
		inbound := lastSeq(t, w.JetStream(), topology.InboundStream)
		refunds := openStream(t, w.url, "type=refund.succeeded")
		refunds.next(t, 10*time.Second)
		var sum struct {
			Matched  int `json:"matched"`
			Replayed int `json:"replayed"`
			Entries  []struct {
				InboundSeq uint64 `json:"inbound_seq"`
			} `json:"entries"`
		}
		c.want(t, http.StatusOK, http.MethodPost, "/api/dlq/replay", map[string]any{"seq": seq(w.refundSeq), "rate": "20/s"}, bearerToken(testToken)).decode(t, &sum)
		if sum.Matched != 1 || sum.Replayed != 1 || sum.Entries[0].InboundSeq == 0 {
			t.Fatalf("replay: %+v", sum)
		}
		c.want(t, http.StatusNotFound, http.MethodGet, "/api/dlq/"+seq(w.refundSeq), nil)
		if got := sum.Entries[0].InboundSeq; got != inbound+1 || lastSeq(t, w.JetStream(), topology.InboundStream) != got {
			t.Fatalf("replayed as inbound %d; the stream's last was %d", got, inbound)
		}
		e := refunds.until(t, 20*time.Second, func(liveEvent) bool { return true })
		if e.Subject != w.refundID {
			t.Fatalf("after the replay the stream showed %+v, want refund %s", e, w.refundID)
		}
	})

	t.Run("purging needs the number of entries as confirmation", func(t *testing.T) {
		sel := map[string]any{"reason": "unsupported_event_type"}
		var conflict struct {
			Code    string `json:"code"`
			Matched int    `json:"matched"`
		}
		c.want(t, http.StatusBadRequest, http.MethodPost, "/api/dlq/purge", sel, bearerToken(testToken)).decode(t, &conflict)
		if conflict.Code != "confirmation_required" || conflict.Matched != 1 {
			t.Fatalf("unconfirmed purge: %+v", conflict)
		}
		c.want(t, http.StatusConflict, http.MethodPost, "/api/dlq/purge", map[string]any{"reason": "unsupported_event_type", "confirm": 5}, bearerToken(testToken))
		var sum struct {
			Matched int      `json:"matched"`
			Purged  int      `json:"purged"`
			Seqs    []uint64 `json:"seqs"`
		}
		c.want(t, http.StatusOK, http.MethodPost, "/api/dlq/purge", map[string]any{"reason": "unsupported_event_type", "dry_run": true}, bearerToken(testToken)).decode(t, &sum)
		if sum.Matched != 1 || sum.Purged != 0 || len(sum.Seqs) != 1 || sum.Seqs[0] != w.unsupported {
			t.Fatalf("purge dry run: %+v", sum)
		}
		if n := len(c.dlq(t, "")); n != 1 {
			t.Fatalf("%d dead letters before the confirmed purge, want 1", n)
		}
		c.want(t, http.StatusOK, http.MethodPost, "/api/dlq/purge", map[string]any{"reason": "unsupported_event_type", "confirm": 1}, bearerToken(testToken)).decode(t, &sum)
		if sum.Purged != 1 {
			t.Fatalf("purge: %+v", sum)
		}
		if n := len(c.dlq(t, "")); n != 0 {
			t.Fatalf("%d dead letters after the purge", n)
		}
	})

	t.Run("health shows the streams, the durable consumer and the programs' answers", func(t *testing.T) {
		type group struct {
			Key  string `json:"key"`
			Rows []struct {
				Label string  `json:"label"`
				Value float64 `json:"value"`
			} `json:"rows"`
		}
		var h struct {
			Streams []struct {
				Name     string `json:"name"`
				Messages uint64 `json:"messages"`
				Error    string `json:"error"`
			} `json:"streams"`
			Consumer struct {
				Name    string `json:"name"`
				Pending uint64 `json:"pending"`
				Error   string `json:"error"`
			} `json:"consumer"`
			Programs []struct {
				Name   string  `json:"name"`
				Up     bool    `json:"up"`
				Error  string  `json:"error"`
				Groups []group `json:"groups"`
			} `json:"programs"`
		}
		c.want(t, http.StatusOK, http.MethodGet, "/api/health", nil).decode(t, &h)
		if h.Consumer.Name != topology.ConsumerName || h.Consumer.Error != "" {
			t.Fatalf("health: %+v", h)
		}
		seen := map[string]bool{}
		for _, s := range h.Streams {
			seen[s.Name] = true
			if s.Error != "" || (s.Name == topology.EventsStream && s.Messages < 3) {
				t.Errorf("stream %+v", s)
			}
		}
		for _, name := range []string{topology.InboundStream, topology.EventsStream, topology.DLQStream} {
			if !seen[name] {
				t.Errorf("health lacks %s: %+v", name, h.Streams)
			}
		}
		value := func(prog, key, label string) float64 {
			for _, p := range h.Programs {
				if p.Name != prog {
					continue
				}
				if !p.Up {
					t.Fatalf("%s down: %s", prog, p.Error)
				}
				for _, g := range p.Groups {
					for _, r := range g.Rows {
						if g.Key == key && r.Label == label {
							return r.Value
						}
					}
				}
			}
			return 0
		}
		if v := value("receiver", "answers", "204 stored"); v < 4 {
			t.Errorf("receiver answered 204 %v times, want at least 4", v)
		}
		if v := value("consumer", "processed", "published"); v < 1 {
			t.Errorf("consumer published %v, want at least 1", v)
		}
	})

	t.Run("no answer carries a key or a dead letter's plaintext", func(t *testing.T) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, a := range c.seen {
			for _, k := range w.apiv3Keys {
				if bytes.Contains(a.body, k) {
					t.Fatalf("an answer carries an APIv3 key:\n%s", a.body)
				}
			}
			if bytes.Contains(a.body, []byte("PRIVATE KEY")) {
				t.Fatalf("an answer carries a private key:\n%s", a.body)
			}
		}
	})
}

// lastSeq is a stream's last sequence, which only grows whatever the stream's retention.
func lastSeq(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// A console on an address others can reach needs a token, which then guards reads too.
func TestConsoleBeyondLoopback(t *testing.T) {
	ns := natstest.Start(t)
	js := connect(t, ns.URL())
	for _, tc := range []struct {
		name string
		cfg  console.Config
		want error
	}{
		{"every interface without a token", console.Config{Addr: "0.0.0.0:0"}, console.ErrTokenRequired},
		{"every IPv6 interface without a token", console.Config{Addr: "[::]:0"}, console.ErrTokenRequired},
		{"a short token", console.Config{Addr: "0.0.0.0:0", Token: "short"}, console.ErrWeakToken},
		{"a short token on loopback", console.Config{Addr: "127.0.0.1:0", Token: "short"}, console.ErrWeakToken},
		{"an admin URL that is not HTTP", console.Config{Addr: "127.0.0.1:0", ReceiverAdmin: "ftp://x"}, console.ErrBadAdminURL},
		{"loopback without a token", console.Config{Addr: "127.0.0.1:0"}, nil},
		{"every interface with a token", console.Config{Addr: "0.0.0.0:0", Token: testToken}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := console.New(context.Background(), js, tc.cfg, zerolog.Nop())
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if err != nil {
				return
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx) }()
			defer func() { cancel(); <-done }()
			if srv.Loopback() == (tc.cfg.Token != "") {
				t.Fatalf("loopback %v for %s", srv.Loopback(), tc.cfg.Addr)
			}
			c := &client{base: strings.TrimSuffix(srv.URL(), "/")}
			if srv.Loopback() {
				c.want(t, http.StatusOK, http.MethodGet, "/api/info", nil)
				return
			}
			// Reads need the token too, and the page itself (no data in it) loads to ask for it.
			c.want(t, http.StatusOK, http.MethodGet, "/", nil, host("console.example:8088"))
			for _, path := range []string{"/api/info", "/api/dlq", "/api/health", "/api/events/stream", "/api/events/1", "/api/dlq/1"} {
				c.want(t, http.StatusUnauthorized, http.MethodGet, path, nil, host("console.example:8088"))
			}
			c.want(t, http.StatusOK, http.MethodGet, "/api/info", nil, bearerToken(testToken), host("console.example:8088"))
		})
	}
}

func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "console.token")
	tok, err := console.TokenFile(path)
	if err != nil || len(tok) < console.MinTokenLength {
		t.Fatalf("TokenFile created %q, %v", tok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, %v", fi.Mode(), err)
	}
	again, err := console.TokenFile(path)
	if err != nil || again != tok {
		t.Fatalf("TokenFile read %q, %v; want the token it created", again, err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := console.ReadTokenFile(short); !errors.Is(err, console.ErrWeakToken) {
		t.Fatalf("short token: %v", err)
	}
	if _, err := console.ReadTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing token file reads")
	}
}

// A shutdown ends the live streams at once instead of waiting for them until its deadline.
func TestConsoleShutdownEndsStreams(t *testing.T) {
	ns := natstest.Start(t)
	js := connect(t, ns.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topology.Ensure(ctx, js, topology.Options{}); err != nil {
		t.Fatal(err)
	}
	srv, err := console.New(ctx, js, console.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 20 * time.Second}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx) }()
	stream := openStream(t, strings.TrimSuffix(srv.URL(), "/"), "")
	if ev := stream.next(t, 5*time.Second); ev.name != "ready" {
		t.Fatalf("first event %q", ev.name)
	}
	start := time.Now()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the console did not stop within 5 s with a live stream open")
	}
	for range stream.events {
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s", took)
	}
}
