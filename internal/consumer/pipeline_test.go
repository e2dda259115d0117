package consumer_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
	"github.com/wxpay-events/wxpay-events/schemas"
)

var _ consumer.Deduper = (*dedupe.Redis)(nil)

const mchid = pipelinetest.MchID

// want is what the contract says each sample must become, written out here rather than read from the
// code's own table: the domain type, the field the CloudEvent subject comes from, the sub-merchant (the
// <sub> subject token, "_" for none) and how many events (one per business fact).
var want = map[string]struct {
	typ, subjectField, sub string
	events                 int
}{
	"TRANSACTION.SUCCESS":                {"payment.succeeded", "transaction_id", "_", 1},
	"TRANSACTION.SUCCESS.partner":        {"payment.succeeded", "transaction_id", "1900000109", 1},
	"TRANSACTION.SUCCESS.global":         {"payment.succeeded", "id", "_", 1},
	"TRANSACTION.SUCCESS.global-partner": {"payment.succeeded", "id", "20000100", 1},
	"TRANSACTION.SUCCESS.parking":        {"payment.succeeded", "out_trade_no", "10000109", 1},
	"TRANSACTION.SUCCESS.combine":        {"payment.succeeded", "transaction_id", "_", 2},
	"TRANSACTION.FAIL":                   {"payment.failed", "out_trade_no", "10000109", 1},
	"TRANSACTION.PAY_BACK":               {"payment.repaid", "out_trade_no", "10000109", 1},
	"REFUND.SUCCESS":                     {"refund.succeeded", "refund_id", "_", 1},
	"REFUND.SUCCESS.global":              {"refund.succeeded", "refund_id", "_", 1},
	"REFUND.ABNORMAL":                    {"refund.abnormal", "refund_id", "_", 1},
	"REFUND.CLOSED":                      {"refund.closed", "refund_id", "_", 1},
	"VIOLATION.PUNISH":                   {"violation.punished", "record_id", "1900009231", 1},
	"VIOLATION.INTERCEPT":                {"violation.intercepted", "record_id", "1900009231", 1},
	"VIOLATION.APPEAL":                   {"violation.appealed", "record_id", "1900009231", 1},
	"VEHICLE.ENTRANCE_STATE_CHANGE":      {"parking.state_changed", "parking_id", "_", 1},
}

func TestEveryEventTypeBecomesOneCloudEventPerFact(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	set, err := schemas.Load()
	if err != nil {
		t.Fatal(err)
	}

	all := samples.All()
	if len(all) != len(want) {
		t.Fatalf("%d samples, %d expectations: keep them in step", len(all), len(want))
	}
	sent := map[string]string{} // notification id → sample name
	facts := 0
	for name, plain := range all {
		n := p.Build(samples.EventType(name), plain, wechatsim.Options{})
		if code := p.Post(n); code != http.StatusNoContent {
			t.Fatalf("%s: receiver answered %d", name, code)
		}
		sent[n.ID] = name
		facts += want[name].events
	}
	p.WaitFor(20*time.Second, "one event per fact", func() bool { return p.Count(topology.EventsStream) >= uint64(facts) })
	p.WaitFor(10*time.Second, "consumer settled", p.Settled)

	evs := p.Events()
	if len(evs) != facts {
		t.Fatalf("%d events for %d facts in %d notifications", len(evs), facts, len(all))
	}
	perNotification := map[string]int{}
	for _, ev := range evs {
		name, ok := sent[ev.NotificationID]
		if !ok {
			t.Fatalf("event for unknown notification %q", ev.NotificationID)
		}
		perNotification[name]++
		w := want[name]
		t.Run(name, func(t *testing.T) {
			var data map[string]any
			if err := json.Unmarshal(ev.Data, &data); err != nil {
				t.Fatal(err)
			}
			wantSubMchID := w.sub
			if wantSubMchID == "_" {
				wantSubMchID = ""
			}
			checks := []struct{ what, got, want string }{
				{"specversion", ev.SpecVersion, "1.0"},
				{"type", ev.Type, "com.wechatpay." + w.typ},
				{"source", ev.Source, "/wechatpay/" + mchid},
				{"NATS subject", ev.NATSSubject, "wechatpay.events." + w.typ + "." + mchid + "." + w.sub},
				{"wxsubmchid", ev.SubMchID, wantSubMchID},
				{"Nats-Msg-Id", ev.MsgID, ev.ID},
				{"wxeventtype", ev.WechatEventType, samples.EventType(name)},
				{"datacontenttype", ev.DataContentType, "application/json"},
				{"subject", ev.Subject, fmt.Sprint(data[w.subjectField])},
			}
			for _, c := range checks {
				if c.got != c.want {
					t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
				}
			}
			if ev.Time.IsZero() { // wxevents.Parse has read it as RFC 3339
				t.Errorf("event %s has no time", ev.ID)
			}
			if err := set.ValidateCloudEvent(ev.Raw); err != nil {
				t.Errorf("published event does not match its schema: %v", err)
			}
			// data carries the decrypted resource with WeChat's field names (a combined payment's
			// sub-order, with the combined order's fields).
			var plain map[string]any
			_ = json.Unmarshal(all[name], &plain)
			for k := range plain {
				if _, ok := data[k]; !ok && k != "sub_orders" {
					t.Errorf("data lost field %q", k)
				}
			}
		})
	}
	for name, w := range want {
		if perNotification[name] != w.events {
			t.Errorf("%s: %d events, want %d", name, perNotification[name], w.events)
		}
	}
	if n := p.Count(topology.DLQStream); n != 0 {
		t.Fatalf("DLQ holds %d messages", n)
	}
}

func TestDuplicatesYieldOneEvent(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	plain := samples.All()["TRANSACTION.SUCCESS"]

	// WeChat's retries of one notification: the same id five times.
	n := p.Build("TRANSACTION.SUCCESS", plain, wechatsim.Options{})
	for i := 0; i < 5; i++ {
		if code := p.Post(n); code != http.StatusNoContent {
			t.Fatalf("retry %d: %d", i, code)
		}
	}
	// The same business fact under two more notification ids (WeChat sends a fact more than once).
	for i := 0; i < 2; i++ {
		if code := p.Post(p.Build("TRANSACTION.SUCCESS", plain, wechatsim.Options{})); code != http.StatusNoContent {
			t.Fatalf("re-notification %d: %d", i, code)
		}
	}
	p.WaitFor(20*time.Second, "all inbound settled", func() bool { return p.Count(topology.ArchiveStream) == 3 && p.Settled() })
	if evs := p.Events(); len(evs) != 1 {
		t.Fatalf("%d events for one business fact", len(evs))
	}
}

func TestTwoConsumersRacingOnDuplicates(t *testing.T) {
	if testing.Short() {
		t.Log("running the short version: 200 facts")
	}
	facts := 1000
	if testing.Short() {
		facts = 200
	}
	p := pipelinetest.Start(t, map[string]string{"CONSUMER_WORKERS": "8"})
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	p.StartConsumer(pipelinetest.ConsumerOptions{})

	// Each fact is sent twice under two notification ids, from 8 concurrent senders.
	var jobs = make(chan wechatsim.Notification, 64)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				if p.Post(n) != http.StatusNoContent {
					failed.Add(1)
				}
			}
		}()
	}
	for i := 0; i < facts; i++ {
		plain := fmt.Appendf(nil, `{"mchid":"%s","appid":"wx0000","out_trade_no":"o%d","transaction_id":"42%026d","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"ok","bank_type":"OTHERS","success_time":"2026-11-11T00:00:00+08:00","payer":{"openid":"x"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}`, mchid, i, i)
		jobs <- p.Build("TRANSACTION.SUCCESS", plain, wechatsim.Options{})
		jobs <- p.Build("TRANSACTION.SUCCESS", plain, wechatsim.Options{})
	}
	close(jobs)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d posts were not answered 204", failed.Load())
	}
	p.WaitFor(120*time.Second, "all inbound settled", func() bool {
		return p.Count(topology.ArchiveStream) == uint64(2*facts) && p.Settled()
	})
	evs := p.Events()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.Subject] {
			t.Fatalf("two events for transaction %s", e.Subject)
		}
		seen[e.Subject] = true
	}
	if len(evs) != facts {
		t.Fatalf("%d events for %d facts", len(evs), facts)
	}
}

// resign replaces a field of a built notification's envelope and signs the result again, as a
// well-behaved WeChat would have signed the altered notification.
func resign(t *testing.T, p *pipelinetest.Pipeline, n wechatsim.Notification, edit func(env map[string]any)) wechatsim.Notification {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(n.Body, &env); err != nil {
		t.Fatal(err)
	}
	edit(env)
	body, _ := json.Marshal(env)
	h, err := p.Platform.Sign(body, time.Now(), wechatsim.SignWithPublicKeyID, false)
	if err != nil {
		t.Fatal(err)
	}
	return wechatsim.Notification{ID: n.ID, EventType: n.EventType, Body: body, Header: h}
}

func TestUnprocessableGoesToDLQWithReason(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	plain := samples.All()["REFUND.SUCCESS"]
	other, err := wechatsim.NewPlatform(mchid)
	if err != nil {
		t.Fatal(err)
	}
	resource := func(env map[string]any) map[string]any { return env["resource"].(map[string]any) }

	cases := []struct {
		reason string
		n      wechatsim.Notification
	}{
		{"decrypt_failed", resign(t, p, p.Build("REFUND.SUCCESS", plain, wechatsim.Options{}), func(env map[string]any) {
			ct := resource(env)["ciphertext"].(string)
			resource(env)["ciphertext"] = "A" + ct[1:] // tampered ciphertext
		})},
		{"decrypt_failed", func() wechatsim.Notification { // encrypted with another APIv3 key
			wrong, _ := other.Build("REFUND.SUCCESS", plain, wechatsim.Options{})
			return resign(t, p, wrong, func(map[string]any) {})
		}()},
		{"bad_nonce", resign(t, p, p.Build("REFUND.SUCCESS", plain, wechatsim.Options{}), func(env map[string]any) {
			resource(env)["nonce"] = "only11bytes"
		})},
		{"unsupported_event_type", p.Build("PAYSCORE.USER_OPEN_SERVICE", []byte(`{"out_contract_code":"x"}`), wechatsim.Options{})},
		{"malformed", p.Build("REFUND.SUCCESS", []byte(`{"refund_id": "50000000382019052709732678859", "amount": `), wechatsim.Options{})},
		{"malformed", p.Build("REFUND.SUCCESS", []byte(`{"out_refund_no":"no refund_id"}`), wechatsim.Options{})},
		{"unsupported_algorithm", resign(t, p, p.Build("REFUND.SUCCESS", plain, wechatsim.Options{}), func(env map[string]any) {
			resource(env)["algorithm"] = "AEAD_SM4_GCM"
		})},
		// Signed by WeChat and well formed, but not a success, or not this merchant's.
		{"inconsistent", p.Build("TRANSACTION.SUCCESS", bytes.Replace(samples.All()["TRANSACTION.SUCCESS"], []byte(`"SUCCESS"`), []byte(`"NOTPAID"`), 1), wechatsim.Options{})},
		{"inconsistent", p.Build("REFUND.SUCCESS", bytes.Replace(plain, []byte(`"`+mchid+`"`), []byte(`"1900000999"`), 1), wechatsim.Options{})},
		{"too_large", p.Build("VIOLATION.PUNISH", []byte(`{"record_id":"r1","x":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`}`), wechatsim.Options{})},
	}
	byID := map[string]string{}
	for _, c := range cases {
		if code := p.Post(c.n); code != http.StatusNoContent {
			t.Fatalf("%s: receiver answered %d", c.reason, code)
		}
		byID[mchid+":"+c.n.ID] = c.reason
	}
	p.WaitFor(20*time.Second, "every case dead-lettered", func() bool { return p.Count(topology.DLQStream) >= uint64(len(cases)) })
	p.WaitFor(10*time.Second, "consumer settled", p.Settled)

	dead := p.Messages(topology.DLQStream)
	if len(dead) != len(cases) {
		t.Fatalf("DLQ holds %d entries for %d cases", len(dead), len(cases))
	}
	p.WaitFor(30*time.Second, "the archive's copies", p.ArchiveCaughtUp)
	inbound := map[string][]byte{}
	for _, m := range p.Messages(topology.ArchiveStream) {
		inbound[m.Header.Get("Nats-Msg-Id")] = m.Data
	}
	for _, m := range dead {
		orig := m.Header.Get(dlq.HeaderOriginalMsgID)
		reason := byID[orig]
		if got := m.Header.Get(dlq.HeaderReason); got != reason {
			t.Errorf("%s: Dlq-Reason = %q, want %q", orig, got, reason)
		}
		if m.Subject != "wechatpay.dlq."+reason+"."+mchid {
			t.Errorf("%s: DLQ subject %q", orig, m.Subject)
		}
		if !bytes.Equal(m.Data, inbound[orig]) {
			t.Errorf("%s: DLQ body differs from the inbound body", orig)
		}
		for _, h := range []string{dlq.HeaderError, dlq.HeaderOriginalSubject, dlq.HeaderDeliveries, dlq.HeaderAt, "Wechatpay-Signature", "Wechatpay-Serial"} {
			if m.Header.Get(h) == "" {
				t.Errorf("%s: header %s missing", orig, h)
			}
		}
		if !strings.HasPrefix(m.Header.Get(dlq.HeaderOriginalSubject), "wechatpay.inbound."+mchid+".") {
			t.Errorf("%s: Dlq-Original-Subject %q", orig, m.Header.Get(dlq.HeaderOriginalSubject))
		}
	}
	if n := p.Count(topology.EventsStream); n != 0 {
		t.Fatalf("%d events published from unprocessable notifications", n)
	}
	// Neither the decrypted payload nor the key reaches the logs.
	logs := p.Logs.String()
	for _, secret := range []string{string(p.Platform.APIv3Key), "50000000382019052709732678859", "user_received_account"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs contain %q", secret)
		}
	}
}

func TestRedisOutageLosesAndDuplicatesNothing(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	post := func(from, to int) {
		for i := from; i < to; i++ {
			plain := fmt.Appendf(nil, `{"mchid":"%s","transaction_id":"T%05d","out_trade_no":"o","trade_state":"SUCCESS","success_time":"2026-11-11T00:00:00+08:00","amount":{"total":1,"payer_total":1,"currency":"CNY","payer_currency":"CNY"}}`, mchid, i)
			n := p.Build("TRANSACTION.SUCCESS", plain, wechatsim.Options{})
			if code := p.Post(n); code != http.StatusNoContent {
				t.Fatalf("post %d: %d", i, code)
			}
			if i%3 == 0 { // and a duplicate of every third fact
				if code := p.Post(p.Build("TRANSACTION.SUCCESS", plain, wechatsim.Options{})); code != http.StatusNoContent {
					t.Fatalf("duplicate %d: %d", i, code)
				}
			}
		}
	}
	post(0, 30)
	p.WaitFor(20*time.Second, "first batch published", func() bool { return p.Count(topology.EventsStream) == 30 })
	p.Redis.Stop()
	post(30, 60)                        // the receiver needs no Redis: these are stored and wait
	time.Sleep(1500 * time.Millisecond) // let the consumer fail and NAK a few times against the dead Redis
	if n := p.Count(topology.EventsStream); n != 30 {
		t.Fatalf("%d events while Redis was down; nothing may be published unclaimed", n)
	}
	p.Redis.Restart()
	p.WaitFor(60*time.Second, "backlog drained after Redis came back", func() bool {
		return p.Count(topology.EventsStream) == 60 && p.Settled()
	})
	if n := p.Count(topology.DLQStream); n != 0 {
		t.Fatalf("%d dead-lettered during a short outage", n)
	}
	seen := map[string]bool{}
	for _, e := range p.Events() {
		if seen[e.Subject] {
			t.Fatalf("duplicate event for %s", e.Subject)
		}
		seen[e.Subject] = true
	}
}

func TestMaxDeliveriesEndInDLQ(t *testing.T) {
	p := pipelinetest.Start(t, map[string]string{"CONSUMER_MAX_DELIVER": "2", "CONSUMER_ACK_WAIT": "1s"})
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	p.Redis.Stop() // every attempt fails with a retryable error
	n := p.Build("REFUND.CLOSED", samples.All()["REFUND.CLOSED"], wechatsim.Options{})
	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("post: %d", code)
	}
	p.WaitFor(30*time.Second, "dead-lettered after 2 deliveries", func() bool { return p.Count(topology.DLQStream) == 1 })
	m := p.Messages(topology.DLQStream)[0]
	if got := m.Header.Get(dlq.HeaderReason); got != "max_deliveries" {
		t.Fatalf("Dlq-Reason = %q", got)
	}
	if !strings.Contains(m.Header.Get(dlq.HeaderError), "unavailable") && m.Header.Get(dlq.HeaderError) == "" {
		t.Fatalf("Dlq-Error does not say why: %q", m.Header.Get(dlq.HeaderError))
	}
}

// A retryable failure comes back after the consumer's own short delay, not after an ack timeout: with
// production settings (AckWait 30 s) a notification stored during a brief Redis outage is published
// seconds after Redis returns.
func TestRetryDelayIsTheConsumersNotAckWait(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	p.Redis.Stop()
	n := p.Build("REFUND.SUCCESS", samples.All()["REFUND.SUCCESS"], wechatsim.Options{})
	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("post: %d", code)
	}
	// Wait for two failed deliveries, so the next one is on the 2-5 s delays of the retry ladder.
	p.WaitFor(20*time.Second, "two failed deliveries", func() bool {
		return strings.Count(p.Logs.String(), `"outcome":"retried"`) >= 2
	})
	p.Redis.Restart()
	start := time.Now()
	p.WaitFor(25*time.Second, "the event after Redis returned", func() bool { return p.Count(topology.EventsStream) == 1 })
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("published %s after Redis returned; the retry ladder's delays are at most 10 s here", d)
	}
}
