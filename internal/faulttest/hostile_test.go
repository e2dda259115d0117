package faulttest

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/testenv/audit"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// hostile is a real receiver (with a consumer behind it) under attack, and the good traffic that must
// keep flowing.
type hostile struct {
	t    *testing.T
	p    *pipelinetest.Stack
	a    *audit.Auditor
	l    *load
	addr string // host:port of the receiver
	next atomic.Int64
}

func startHostile(t *testing.T) *hostile {
	p := pipelinetest.StartWith(t, pipelinetest.Options{})
	p.StartConsumer(fastConsumer(t, p.Pipeline))
	a := audit.New(nil)
	u, err := url.Parse(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &hostile{t: t, p: p, a: a, l: newLoad(t, p.Pipeline, a), addr: u.Host}
}

// good sends one valid notification (a new fact) and returns its answer and latency.
func (h *hostile) good(ctx context.Context) (int, time.Duration) {
	eventType, plain := factPlaintext(h.l.run, int(h.next.Add(1)))
	fact, _ := audit.FactOf(eventType, plain)
	n, err := h.p.Platform.Build(eventType, plain, wechatsim.Options{})
	if err != nil {
		panic(err)
	}
	h.a.Expect(n.ID, fact, true)
	start := time.Now()
	code := h.a.Post(ctx, h.p.URL, n)
	return code, time.Since(start)
}

// signed is body with headers validly signed by key at ts with nonce, as WeChat Pay signs.
func signed(key *rsa.PrivateKey, serial string, ts int64, nonce string, body []byte) http.Header {
	stamp := strconv.FormatInt(ts, 10)
	digest := sha256.Sum256([]byte(stamp + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		panic(err)
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Wechatpay-Timestamp", stamp)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Serial", serial)
	h.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
	return h
}

func (h *hostile) sign(body []byte) http.Header {
	return signed(h.p.Platform.Key, h.p.Platform.PublicKeyID, time.Now().Unix(), wechatsim.NewUUID()[:16], body)
}

// send posts body with hdr once and records the answer under id (registered with valid and no fact).
func (h *hostile) send(id string, valid bool, body []byte, hdr http.Header) (int, time.Duration) {
	h.a.Expect(id, "", valid)
	n := wechatsim.Notification{ID: id, Body: body, Header: hdr}
	start := time.Now()
	code := h.a.Post(context.Background(), h.p.URL, n)
	return code, time.Since(start)
}

// raw writes req on a fresh connection (concurrently, so a server that answers early is heard) and reads
// the answer. It returns the status, or 0 and the error when the connection ended without one.
func (h *hostile) raw(req io.Reader, timeout time.Duration) (int, error) {
	conn, err := net.DialTimeout("tcp", h.addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	go func() { _, _ = io.Copy(conn, req) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func requestHead(path string, hdr http.Header, contentLength int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: receiver\r\n", path)
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	if contentLength >= 0 {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", contentLength)
	}
	b.WriteString("\r\n")
	return b.String()
}

func envelopeWith(id, resource string) []byte {
	return []byte(`{"id":"` + id + `","create_time":"2026-11-11T11:11:11+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"x","resource":` + resource + `}`)
}

// Hostile input against the real receiver over HTTP: each attack is answered quickly with the right 4xx,
// never 5xx, never 204 unless validly signed; good notifications keep getting 204 meanwhile; and whatever
// was accepted ends as an event or a DLQ entry.
func TestHostileInput(t *testing.T) {
	h := startHostile(t)
	path := "/notify/" + pipelinetest.MchID
	fast := 2 * time.Second // every rejection comes well within WeChat's 5 s

	t.Run("oversized bodies", func(t *testing.T) {
		big := bytes.Repeat([]byte("a"), 1<<20)
		code, d := h.send("oversized-length", false, big, h.sign(big))
		if code != http.StatusRequestEntityTooLarge || d > fast {
			t.Errorf("1 MiB body with Content-Length: %d in %s, want 413", code, d)
		}
		// 10 MiB with no declared length, as a stream; the server stops reading at the limit.
		start := time.Now()
		head := requestHead(path, h.sign(nil), -1)
		head = strings.Replace(head, "\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n", 1)
		chunk := fmt.Sprintf("%x\r\n%s\r\n", 64<<10, bytes.Repeat([]byte("b"), 64<<10))
		code, err := h.raw(io.MultiReader(strings.NewReader(head), strings.NewReader(strings.Repeat(chunk, 160))), 5*time.Second)
		if code != http.StatusRequestEntityTooLarge || time.Since(start) > fast {
			t.Errorf("10 MiB chunked body: %d (%v) in %s, want 413", code, err, time.Since(start))
		}
	})

	t.Run("huge header values", func(t *testing.T) {
		body := envelopeWith("huge-header", `{}`)
		hdr := h.sign(body)
		hdr.Set("Wechatpay-Signature", strings.Repeat("A", 20<<10))
		if code, d := h.send("huge-header-20k", false, body, hdr); code != http.StatusUnauthorized || d > fast {
			t.Errorf("20 KiB signature: %d in %s, want 401", code, d)
		}
		for _, c := range []struct {
			name string
			hdr  func() http.Header
		}{
			{"one 40 KiB value", func() http.Header { x := h.sign(body); x.Set("Wechatpay-Nonce", strings.Repeat("n", 40<<10)); return x }},
			{"one 1 MiB value", func() http.Header { x := h.sign(body); x.Set("X-Padding", strings.Repeat("p", 1<<20)); return x }},
			{"2000 headers", func() http.Header {
				x := h.sign(body)
				for i := 0; i < 2000; i++ {
					x.Set(fmt.Sprintf("X-H%d", i), strings.Repeat("v", 32))
				}
				return x
			}},
		} {
			start := time.Now()
			code, err := h.raw(io.MultiReader(strings.NewReader(requestHead(path, c.hdr(), len(body))), bytes.NewReader(body)), 5*time.Second)
			if code != http.StatusRequestHeaderFieldsTooLarge || time.Since(start) > fast {
				t.Errorf("%s: %d (%v) in %s, want 431", c.name, code, err, time.Since(start))
			}
		}
	})

	t.Run("JSON bombs", func(t *testing.T) {
		deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
		cases := []struct {
			name   string
			id     string // the envelope's id
			body   []byte
			signed bool
			want   []int
		}{
			{"20000 levels inside resource", "bomb-1", envelopeWith("bomb-1", `{"x":`+deep(20000)+`}`), true, []int{400}},
			{"30000 levels at the top", "bomb-2", []byte(deep(30000)), true, []int{400}},
			{"ciphertext is a nested object", "bomb-3", envelopeWith("bomb-3", `{"ciphertext":{"a":{"b":{"c":[1,2,3]}}}}`), true, []int{400}},
			// Legal JSON (Go's decoder allows 10000 levels) in a field the envelope ignores: a usable
			// envelope, so it may be stored; the consumer must then dead-letter it (the audit checks).
			{"5000 levels in an unknown field", "bomb-4", envelopeWith("bomb-4", `{"x":`+deep(5000)+`}`), true, []int{204, 400}},
			{"unsigned bomb", "bomb-5", envelopeWith("bomb-5", `{"x":`+deep(20000)+`}`), false, []int{401}},
		}
		for _, c := range cases {
			hdr := h.sign(c.body)
			if !c.signed {
				hdr.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 256)))
			}
			code, d := h.send(c.id, c.signed, c.body, hdr)
			if !contains(c.want, code) || d > fast {
				t.Errorf("%s: %d in %s, want one of %v", c.name, code, d, c.want)
			}
			t.Logf("%s: %d in %s", c.name, code, d.Round(time.Microsecond))
		}
	})

	t.Run("invalid UTF-8", func(t *testing.T) {
		eventType, plain := factPlaintext(h.l.run, int(h.next.Add(1)))
		fact, _ := audit.FactOf(eventType, plain)
		n, err := h.p.Platform.Build(eventType, plain, wechatsim.Options{Summary: "bad \xff\xfe utf-8"})
		if err != nil {
			t.Fatal(err)
		}
		h.a.Expect(n.ID, fact, true)
		code := h.a.Post(context.Background(), h.p.URL, n)
		if code != 204 && code != 400 {
			t.Errorf("invalid UTF-8 in summary: %d, want 204 or 400", code)
		}
		t.Logf("invalid UTF-8 in the summary of a validly signed notification: %d", code)
		body := envelopeWith("id-\xff\xfe", `{}`)
		if code, _ := h.send("id-\xff\xfe", true, body, h.sign(body)); code != http.StatusBadRequest {
			t.Errorf("invalid UTF-8 in id: %d, want 400", code)
		}
		// A nonce of invalid UTF-8, validly signed: the signature covers raw bytes.
		eventType, plain = factPlaintext(h.l.run, int(h.next.Add(1)))
		fact, _ = audit.FactOf(eventType, plain)
		n, _ = h.p.Platform.Build(eventType, plain, wechatsim.Options{})
		n.Header = signed(h.p.Platform.Key, h.p.Platform.PublicKeyID, time.Now().Unix(), "nonce-\xff\xfe\x80", n.Body)
		h.a.Expect(n.ID, fact, true)
		code = h.a.Post(context.Background(), h.p.URL, n)
		if code != 204 && code != 400 && code != 401 {
			t.Errorf("invalid UTF-8 in the nonce: %d, want 204 or 4xx", code)
		}
		t.Logf("invalid UTF-8 in the nonce of a validly signed notification: %d", code)
		code, err = h.raw(strings.NewReader(requestHead("/notify/%FF%FE", h.sign(body), len(body))+string(body)), 5*time.Second)
		if code != http.StatusNotFound {
			t.Errorf("invalid UTF-8 in the merchant id: %d (%v), want 404", code, err)
		}
	})

	t.Run("replays outside the skew window", func(t *testing.T) {
		eventType, plain := factPlaintext(h.l.run, int(h.next.Add(1)))
		fact, _ := audit.FactOf(eventType, plain)
		// Half a minute beyond the 5-minute window each way: a request built now may reach the receiver seconds
		// later on a loaded machine, which moves a timestamp from the future towards the window.
		for _, off := range []time.Duration{-330 * time.Second, -10 * time.Minute, 330 * time.Second, -24 * time.Hour} {
			n, _ := h.p.Platform.Build(eventType, plain, wechatsim.Options{Timestamp: time.Now().Add(off)})
			h.a.Expect(n.ID, fact, false)
			if code := h.a.Post(context.Background(), h.p.URL, n); code != http.StatusUnauthorized {
				t.Errorf("signed %s from now: %d, want 401", off, code)
			}
		}
		// A replay inside the window is a duplicate: 204, and nothing new downstream (the audit checks).
		n, _ := h.p.Platform.Build(eventType, plain, wechatsim.Options{Timestamp: time.Now().Add(-240 * time.Second)})
		h.a.Expect(n.ID, fact, true)
		for i := 0; i < 3; i++ {
			if code := h.a.Post(context.Background(), h.p.URL, n); code != http.StatusNoContent {
				t.Errorf("replay %d within the window: %d, want 204", i, code)
			}
		}
	})

	t.Run("another merchant's key", func(t *testing.T) {
		other, err := wechatsim.NewPlatform("1900000200")
		if err != nil {
			t.Fatal(err)
		}
		eventType, plain := factPlaintext(h.l.run, int(h.next.Add(1)))
		n, _ := other.Build(eventType, plain, wechatsim.Options{})
		for _, serial := range []string{other.PublicKeyID, h.p.Platform.PublicKeyID, h.p.Platform.CertSerial} {
			id := wechatsim.NewUUID()
			body := bytes.Replace(n.Body, []byte(n.ID), []byte(id), 1)
			hdr := signed(other.Key, serial, time.Now().Unix(), "nonce", body)
			if code, _ := h.send(id, false, body, hdr); code != http.StatusUnauthorized {
				t.Errorf("signed by another merchant's platform key, serial %s: %d, want 401", serial, code)
			}
		}
	})

	t.Run("slow-loris", func(t *testing.T) {
		type result struct {
			kind   string
			closed time.Duration
		}
		results := make(chan result, 64)
		var wg sync.WaitGroup
		trickle := func(kind string, first string) {
			defer wg.Done()
			conn, err := net.Dial("tcp", h.addr)
			if err != nil {
				results <- result{kind, -1}
				return
			}
			defer conn.Close()
			start := time.Now()
			_ = conn.SetDeadline(start.Add(20 * time.Second))
			if _, err := io.WriteString(conn, first); err != nil {
				results <- result{kind, time.Since(start)}
				return
			}
			closed := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, conn); close(closed) }()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-closed:
					results <- result{kind, time.Since(start)}
					return
				case <-tick.C:
					_, _ = conn.Write([]byte("x"))
				}
			}
		}
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go trickle("headers", "POST "+path+" HTTP/1.1\r\nHost: receiver\r\nX-Slow: ")
		}
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go trickle("body", requestHead(path, h.sign(nil), 4000))
		}
		// Good traffic while the slow clients hang on.
		var goodMax time.Duration
		stop := time.Now().Add(11 * time.Second)
		sent := 0
		for time.Now().Before(stop) {
			code, d := h.good(context.Background())
			if code != http.StatusNoContent {
				t.Errorf("good notification during slow-loris: %d", code)
			}
			goodMax = max(goodMax, d)
			sent++
			time.Sleep(100 * time.Millisecond) // pacing of the good sender, not a wait on a condition
		}
		wg.Wait()
		close(results)
		worst := map[string]time.Duration{}
		for r := range results {
			if r.closed < 0 {
				t.Errorf("%s: could not connect", r.kind)
			}
			worst[r.kind] = max(worst[r.kind], r.closed)
		}
		// ReadHeaderTimeout is 5 s and ReadTimeout 10 s (admin.Server).
		if worst["headers"] > 7*time.Second {
			t.Errorf("a client trickling headers was kept %s (ReadHeaderTimeout is 5 s)", worst["headers"])
		}
		if worst["body"] > 12*time.Second {
			t.Errorf("a client trickling its body was kept %s (ReadTimeout is 10 s)", worst["body"])
		}
		if goodMax > fast {
			t.Errorf("good notifications took up to %s during slow-loris", goodMax)
		}
		t.Logf("40 header and 10 body tricklers dropped after at most %s and %s; %d good notifications meanwhile, slowest %s",
			worst["headers"].Round(time.Millisecond), worst["body"].Round(time.Millisecond), sent, goodMax.Round(time.Millisecond))
	})

	t.Run("bad-signature flood", func(t *testing.T) {
		before := scrape(t, h.p.ReceiverAdmin)
		logBefore := strings.Count(h.p.Logs.String(), `"reason":"signature_mismatch"`)
		body := envelopeWith("flood", `{}`)
		h.a.Expect("flood", "", false)
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer client.CloseIdleConnections()
		var sent, rejected, other atomic.Int64
		// The flood stops issuing requests after 2 s but lets those in flight finish, so that every one is
		// counted on both sides.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sig := make([]byte, 256)
				for ctx.Err() == nil {
					_, _ = rand.Read(sig)
					// Fresh timestamp, known serial: every request reaches the RSA check, the expensive one.
					req, _ := http.NewRequest(http.MethodPost, h.p.URL, bytes.NewReader(body))
					req.Header.Set("Wechatpay-Timestamp", strconv.FormatInt(time.Now().Unix(), 10))
					req.Header.Set("Wechatpay-Nonce", "flood")
					req.Header.Set("Wechatpay-Serial", h.p.Platform.PublicKeyID)
					req.Header.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
					resp, err := client.Do(req)
					if err != nil {
						other.Add(1)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					sent.Add(1)
					if resp.StatusCode == http.StatusUnauthorized {
						rejected.Add(1)
					} else {
						other.Add(1)
					}
				}
			}()
		}
		var goods []time.Duration
		for ctx.Err() == nil {
			code, d := h.good(context.Background())
			if code != http.StatusNoContent {
				t.Errorf("good notification during the flood: %d", code)
			}
			goods = append(goods, d)
		}
		wg.Wait()
		if other.Load() > 0 {
			t.Errorf("%d flood requests were not answered 401", other.Load())
		}
		var goodMax time.Duration
		for _, d := range goods {
			goodMax = max(goodMax, d)
		}
		if goodMax > 5*time.Second || len(goods) == 0 {
			t.Errorf("%d good notifications during the flood, slowest %s (WeChat's deadline is 5 s)", len(goods), goodMax)
		}
		after := scrape(t, h.p.ReceiverAdmin)
		series := `wxpay_receiver_verify_failures_total{reason="signature_mismatch"}`
		if got := metricValue(after, series) - max(metricValue(before, series), 0); got != float64(rejected.Load()) {
			t.Errorf("%s grew by %v, want %d", series, got, rejected.Load())
		}
		logged := strings.Count(h.p.Logs.String(), `"reason":"signature_mismatch"`) - logBefore
		if logged > 100 {
			t.Errorf("%d log lines for %d rejections: rejection logging is not bounded", logged, rejected.Load())
		}
		t.Logf("flood: %d requests, %d bad signatures rejected in 2 s (%.0f/s), %d log lines; %d good notifications meanwhile, slowest %s",
			sent.Load(), rejected.Load(), float64(rejected.Load())/2, logged, len(goods), goodMax.Round(time.Millisecond))
	})

	settle(t, h.p.Pipeline, h.a, time.Minute, h.p.Logs.String)
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
