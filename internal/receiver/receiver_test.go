package receiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

const mchid = pipelinetest.MchID

// testPlatform is the simulated WeChat Pay platform of the merchant, shared by the test binary.
func testPlatform(*testing.T) *wechatsim.Platform { return pipelinetest.SharedPlatform() }

type harness struct {
	t      *testing.T
	nats   *natstest.Server
	recv   *receiver.Receiver
	base   string
	admin  string
	p      *wechatsim.Platform
	logs   *pipelinetest.SyncBuffer
	stop   context.CancelFunc
	done   chan error
	client *http.Client
}

// start runs a real receiver against an embedded JetStream server, configured from the environment the
// way an operator would, with the simulated platform's public key and certificate.
func start(t *testing.T, extraEnv map[string]string) *harness {
	t.Helper()
	p := testPlatform(t)
	files, err := p.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := p.Env(files)
	delete(env, "WECHATPAY_APIV3_KEY_FILE") // the receiver must run without the decryption key
	for k, v := range extraEnv {
		env[k] = v
	}
	return startWith(t, p, env, receiver.Deps{})
}

// startWith runs a real receiver for p's merchant, configured by env, against an embedded JetStream server.
func startWith(t *testing.T, p *wechatsim.Platform, env map[string]string, deps receiver.Deps) *harness {
	t.Helper()
	ns := natstest.Start(t)
	env["NATS_URL"] = ns.URL()
	env["RECEIVER_ADDR"] = "127.0.0.1:0"
	env["ADMIN_ADDR"] = "127.0.0.1:0"
	cfg, err := config.LoadReceiver(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &pipelinetest.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := receiver.New(ctx, cfg, zerolog.New(logs), deps)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	h := &harness{
		t: t, nats: ns, recv: r, p: p, logs: logs, stop: cancel, done: make(chan error, 1),
		base:   "http://" + r.Addr().String(),
		admin:  "http://" + r.AdminAddr().String(),
		client: &http.Client{Timeout: 10 * time.Second},
	}
	go func() { h.done <- r.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(15 * time.Second):
			t.Error("receiver did not stop")
		}
	})
	return h
}

func (h *harness) post(path string, body []byte, hdr http.Header) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.base+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header = hdr.Clone()
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (h *harness) js() jetstream.JetStream {
	h.t.Helper()
	nc, err := nats.Connect(h.nats.URL())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	return js
}

func (h *harness) inboundCount() uint64 {
	h.t.Helper()
	s, err := h.js().Stream(context.Background(), topology.InboundStream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

func (h *harness) build(eventType string, o wechatsim.Options) wechatsim.Notification {
	h.t.Helper()
	n, err := h.p.Build(eventType, []byte(`{"transaction_id":"4200001234","trade_state":"SUCCESS"}`), o)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func TestStoredBeforeNoContent(t *testing.T) {
	h := start(t, nil)
	for _, kind := range []wechatsim.KeyKind{wechatsim.SignWithPublicKeyID, wechatsim.SignWithCertificate} {
		n := h.build("TRANSACTION.SUCCESS", wechatsim.Options{Key: kind})
		code, body := h.post("/notify/"+mchid, n.Body, n.Header)
		if code != http.StatusNoContent || body != "" {
			t.Fatalf("POST = %d %q, want 204 and no body", code, body)
		}
		stream, err := h.js().Stream(context.Background(), topology.InboundStream)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := stream.GetLastMsgForSubject(context.Background(), "wechatpay.inbound."+mchid+".transaction.success")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg.Data, n.Body) {
			t.Fatalf("stored body differs from the raw body")
		}
		for _, k := range []string{"Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial", "Wechatpay-Signature-Type", "Request-ID"} {
			if got, want := msg.Header.Get(k), n.Header.Get(k); got != want || got == "" {
				t.Errorf("header %s = %q, want %q", k, got, want)
			}
		}
		if got := msg.Header.Get(jetstream.MsgIDHeader); got != mchid+":"+n.ID {
			t.Errorf("Nats-Msg-Id = %q", got)
		}
		if msg.Header.Get("Content-Type") != "" {
			t.Errorf("non-WeChat header copied")
		}
	}
}

func TestRetryWithinWindowAddsNothing(t *testing.T) {
	h := start(t, nil)
	n := h.build("REFUND.SUCCESS", wechatsim.Options{})
	for i := 0; i < 3; i++ {
		if code, body := h.post("/notify/"+mchid, n.Body, n.Header); code != http.StatusNoContent {
			t.Fatalf("attempt %d: %d %s", i, code, body)
		}
	}
	if got := h.inboundCount(); got != 1 {
		t.Fatalf("inbound stream holds %d messages, want 1", got)
	}
	if !strings.Contains(h.metrics(), `wxpay_receiver_requests_total{code="204",reason="duplicate"} 2`) {
		t.Fatalf("duplicates not counted:\n%s", h.metrics())
	}
}

func (h *harness) metrics() string {
	h.t.Helper()
	resp, err := h.client.Get(h.admin + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (h *harness) get(url string) int {
	h.t.Helper()
	resp, err := h.client.Get(url)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestNATSDownMeansServiceUnavailable(t *testing.T) {
	h := start(t, map[string]string{"PUBLISH_TIMEOUT": "500ms"})
	if code := h.get(h.admin + "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz = %d before the outage", code)
	}
	h.nats.Stop()
	for i := 0; i < 5; i++ {
		n := h.build("TRANSACTION.SUCCESS", wechatsim.Options{})
		start := time.Now()
		code, body := h.post("/notify/"+mchid, n.Body, n.Header)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("with NATS stopped: %d %s, want 503", code, body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("503 took %s; WeChat's deadline is 5 s", d)
		}
		assertFail(t, body)
	}
	if code := h.get(h.admin + "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz = %d during the outage, want 503", code)
	}
	if code := h.get(h.admin + "/healthz"); code != http.StatusOK {
		t.Fatalf("healthz = %d during the outage, want 200 (the process is fine)", code)
	}

	h.nats.Restart()
	// WeChat retries: once the client has reconnected, the same notification is stored.
	n := h.build("TRANSACTION.SUCCESS", wechatsim.Options{})
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := h.post("/notify/"+mchid, n.Body, n.Header)
		if code == http.StatusNoContent {
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("after restart: %d", code)
		}
		time.Sleep(100 * time.Millisecond) // WeChat's own retry interval is 15 s; poll faster here
	}
	if got := h.inboundCount(); got != 1 {
		t.Fatalf("inbound holds %d messages, want exactly the one answered 204", got)
	}
}

func assertFail(t *testing.T, body string) {
	t.Helper()
	var f struct{ Code, Message string }
	if err := json.Unmarshal([]byte(body), &f); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if f.Code != "FAIL" || f.Message == "" || len([]rune(f.Message)) > 64 {
		t.Fatalf("error body %q does not follow WeChat's {code: FAIL, message ≤ 64}", body)
	}
}

func TestAnswers(t *testing.T) {
	h := start(t, map[string]string{"RECEIVER_MAX_BODY": "4096"})
	good := h.build("TRANSACTION.SUCCESS", wechatsim.Options{})
	stale := h.build("TRANSACTION.SUCCESS", wechatsim.Options{Timestamp: time.Now().Add(-10 * time.Minute)})
	probe := h.build("TRANSACTION.SUCCESS", wechatsim.Options{Probe: true})
	badJSON := []byte(`{"id":"x y","event_type":"TRANSACTION.SUCCESS"}`)
	badJSONHdr, err := h.p.Sign(badJSON, time.Now(), wechatsim.SignWithPublicKeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("a"), 5000)
	bigHdr, _ := h.p.Sign(big, time.Now(), wechatsim.SignWithPublicKeyID, false)
	noSig := good.Header.Clone()
	noSig.Del("Wechatpay-Signature")
	signed := func(body string) ([]byte, http.Header) {
		hdr, err := h.p.Sign([]byte(body), time.Now(), wechatsim.SignWithPublicKeyID, false)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(body), hdr
	}
	noResource, noResourceHdr := signed(`{"id":"n-1","event_type":"TRANSACTION.SUCCESS"}`)
	nullResource, nullResourceHdr := signed(`{"id":"n-2","event_type":"TRANSACTION.SUCCESS","resource":null}`)
	rerouted, reroutedHdr := signed(`{"id":"n-3","event_type":"TRANSACTION.SUCCESS","EVENT_TYPE":"REFUND.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`)

	cases := []struct {
		name   string
		path   string
		body   []byte
		hdr    http.Header
		code   int
		reason string
	}{
		{"single account at /notify", "/notify", good.Body, good.Header, 204, "stored"},
		{"unknown merchant", "/notify/1900000999", good.Body, good.Header, 404, "unknown_merchant"},
		{"missing signature", "/notify/" + mchid, good.Body, noSig, 401, "missing_header"},
		{"stale timestamp", "/notify/" + mchid, stale.Body, stale.Header, 401, "stale_timestamp"},
		{"signature probe", "/notify/" + mchid, probe.Body, probe.Header, 401, "probe"},
		{"tampered body", "/notify/" + mchid, bytes.Replace(good.Body, []byte(`"id":"`), []byte(`"id":"X`), 1), good.Header, 401, "signature_mismatch"},
		{"signed but malformed envelope", "/notify/" + mchid, badJSON, badJSONHdr, 400, "malformed_envelope"},
		{"body over the limit", "/notify/" + mchid, big, bigHdr, 413, "payload_too_large"},
		// Nothing to decrypt: answered now rather than stored and dead-lettered later.
		{"signed, without a resource", "/notify/" + mchid, noResource, noResourceHdr, 400, "malformed_envelope"},
		{"signed, resource null", "/notify/" + mchid, nullResource, nullResourceHdr, 400, "malformed_envelope"},
		// Keys are exact: a case variant could re-route the message or change its id.
		{"signed, EVENT_TYPE beside event_type", "/notify/" + mchid, rerouted, reroutedHdr, 400, "malformed_envelope"},
		// Unclean paths get WeChat's error body, not a redirect WeChat does not follow.
		{"double slash", "//notify/" + mchid, good.Body, good.Header, 404, "unclean_path"},
		{"dot segment", "/notify/./" + mchid, good.Body, good.Header, 404, "unclean_path"},
		{"dot-dot segment", "/x/../notify/" + mchid, good.Body, good.Header, 404, "unclean_path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body := h.post(c.path, c.body, c.hdr)
			if code != c.code {
				t.Fatalf("POST %s = %d %s, want %d", c.path, code, body, c.code)
			}
			if code != 204 {
				assertFail(t, body)
			}
			if want := fmt.Sprintf(`wxpay_receiver_requests_total{code="%d",reason="%s"}`, c.code, c.reason); !strings.Contains(h.metrics(), want) {
				t.Fatalf("metrics lack %s", want)
			}
		})
	}
	if m := h.metrics(); !strings.Contains(m, `wxpay_receiver_verify_failures_total{reason="probe"} 1`) {
		t.Fatalf("probe not counted apart:\n%s", m)
	}
	req, _ := http.NewRequest(http.MethodGet, h.base+"/notify/"+mchid, nil)
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET = %d, want 405", resp.StatusCode)
	}
	if got := h.inboundCount(); got != 1 {
		t.Fatalf("inbound holds %d messages; only the one good notification may be stored", got)
	}
	// Logs name the outcome but never carry the body or the signature.
	logs := h.logs.String()
	if strings.Contains(logs, good.Header.Get("Wechatpay-Signature")) || strings.Contains(logs, "ciphertext") {
		t.Fatalf("logs carry request material:\n%s", logs)
	}
	if !strings.Contains(logs, `"notification_id":"`+good.ID+`"`) || !strings.Contains(logs, `"outcome":"stored"`) {
		t.Fatalf("log lacks the notification id and outcome:\n%s", logs)
	}
}

// What is stored beside the body is exactly what was verified: one value of each signature header (the
// first, which verify read), no other Wechatpay-* header an intermediary or attacker added.
func TestStoredHeadersAreTheVerifiedOnes(t *testing.T) {
	h := start(t, nil)
	n := h.build("TRANSACTION.SUCCESS", wechatsim.Options{})
	hdr := n.Header.Clone()
	hdr.Add("Wechatpay-Timestamp", "1")
	hdr.Add("Wechatpay-Serial", "ATTACKER")
	hdr.Set("Wechatpay-Extra", "injected")
	hdr.Add("Request-ID", "second")
	if code, body := h.post("/notify/"+mchid, n.Body, hdr); code != http.StatusNoContent {
		t.Fatalf("POST = %d %s", code, body)
	}
	stream, err := h.js().Stream(context.Background(), topology.InboundStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(context.Background(), "wechatpay.inbound."+mchid+".transaction.success")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial", "Request-ID"} {
		if got := msg.Header.Values(k); len(got) != 1 || got[0] != n.Header.Get(k) {
			t.Errorf("%s stored as %q, want exactly [%q]", k, got, n.Header.Get(k))
		}
	}
	if v := msg.Header.Values("Wechatpay-Extra"); len(v) != 0 {
		t.Errorf("an undocumented Wechatpay-* header was stored: %q", v)
	}
	// The log line says which key verified it.
	if !strings.Contains(h.logs.String(), `"key_id":"`+n.Header.Get("Wechatpay-Serial")+`"`) {
		t.Errorf("the log line does not name the key:\n%s", h.logs.String())
	}
}

// Two merchants share one receiver; a valid signature of one is no good for the other's path.
func TestOtherMerchantsSignatureRejected(t *testing.T) {
	p := testPlatform(t)
	other, err := wechatsim.NewPlatform("1900000200")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f1, _ := p.WriteFiles(dir)
	f2, _ := other.WriteFiles(dir)
	yaml := fmt.Sprintf("accounts:\n  - mchid: %q\n    public_key_id: %s\n    public_key_file: %s\n  - mchid: %q\n    public_key_id: %s\n    public_key_file: %s\n",
		p.MchID, p.PublicKeyID, f1.PublicKeyFile, other.MchID, other.PublicKeyID, f2.PublicKeyFile)
	path := dir + "/accounts.yaml"
	if err := writeFile(path, yaml); err != nil {
		t.Fatal(err)
	}
	h := start(t, map[string]string{"WECHATPAY_ACCOUNTS_FILE": path, "WECHATPAY_MCHID": "", "WECHATPAY_PUBLIC_KEY_ID": "",
		"WECHATPAY_PUBLIC_KEY_FILE": "", "WECHATPAY_PLATFORM_CERT_FILES": ""})
	n, _ := other.Build("REFUND.SUCCESS", []byte(`{}`), wechatsim.Options{})
	if code, _ := h.post("/notify/"+other.MchID, n.Body, n.Header); code != 204 {
		t.Fatalf("own path: %d", code)
	}
	if code, _ := h.post("/notify/"+p.MchID, n.Body, n.Header); code != 401 {
		t.Fatalf("other merchant's path: %d, want 401", code)
	}
	if code, _ := h.post("/notify", n.Body, n.Header); code != 404 {
		t.Fatalf("/notify with two accounts: %d, want 404", code)
	}
}

// A request in flight when SIGTERM arrives is finished and stored; new connections are refused.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	h := start(t, nil)
	n := h.build("TRANSACTION.SUCCESS", wechatsim.Options{})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest(http.MethodPost, h.base+"/notify/"+mchid, pr)
	req.Header = n.Header.Clone()
	req.ContentLength = int64(len(n.Body))
	result := make(chan int, 1)
	go func() {
		resp, err := h.client.Do(req)
		if err != nil {
			result <- -1
			return
		}
		resp.Body.Close()
		result <- resp.StatusCode
	}()
	half := len(n.Body) / 2
	if _, err := pw.Write(n.Body[:half]); err != nil {
		t.Fatal(err)
	}
	// The server has the request's headers and is reading its body; give the handler a moment to start
	// (nothing observable marks it), then stop the receiver.
	time.Sleep(100 * time.Millisecond)
	h.stop()
	time.Sleep(50 * time.Millisecond) // let Shutdown close the listener before the body completes
	if _, err := pw.Write(n.Body[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-result; code != http.StatusNoContent {
		t.Fatalf("in-flight request = %d, want 204", code)
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
	h.done <- nil // for the cleanup
	if _, err := h.client.Post(h.base+"/notify/"+mchid, "application/json", bytes.NewReader(n.Body)); err == nil {
		t.Fatal("a stopped receiver still accepts connections")
	}
	if got := h.inboundCount(); got != 1 {
		t.Fatalf("inbound = %d, want 1", got)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
