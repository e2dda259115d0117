package dlq_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

const (
	mchid   = "1900000100"
	inbound = "wechatpay.inbound.1900000100.refund.success"
	body    = `{"id":"n-1","event_type":"REFUND.SUCCESS","resource":{"algorithm":"AEAD_AES_256_GCM","ciphertext":"YQ==","nonce":"Kj7QIyUiYx1q"}}`
)

func inboundHeader() nats.Header {
	h := nats.Header{}
	h.Set("Wechatpay-Timestamp", "1700000000")
	h.Set("Wechatpay-Nonce", "n")
	h.Set("Wechatpay-Signature", "c2ln")
	h.Set("Wechatpay-Serial", "PUB_KEY_ID_1")
	h.Set("Request-ID", "r-1")
	h.Set(jetstream.MsgIDHeader, mchid+":n-1")
	h.Set("Content-Type", "application/json")
	return h
}

func TestMessage(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	cause := errors.New("map notification n-1: field refund_id: required\nsecond line " + strings.Repeat("x", 600))
	m := dlq.Message(dlq.Inbound{Subject: inbound, Data: []byte(body), Header: inboundHeader(), Seq: 7, Deliveries: 3, MchID: mchid}, dlq.ReasonMalformed, cause, now)
	if m.Subject != "wechatpay.dlq.malformed."+mchid || string(m.Data) != body {
		t.Fatalf("subject %q body %q", m.Subject, m.Data)
	}
	want := map[string]string{
		dlq.HeaderReason: "malformed", dlq.HeaderOriginalSubject: inbound, dlq.HeaderDeliveries: "3",
		dlq.HeaderAt: "2026-11-30T10:00:00Z", dlq.HeaderStreamSeq: "7", dlq.HeaderOriginalMsgID: mchid + ":n-1",
		"Wechatpay-Signature": "c2ln", "Request-ID": "r-1",
	}
	for k, v := range want {
		if got := m.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if m.Header.Get("Content-Type") != "" || m.Header.Get(jetstream.MsgIDHeader) != "" {
		t.Errorf("headers beyond the notification's were kept: %v", m.Header)
	}
	if e := m.Header.Get(dlq.HeaderError); len(e) != 512 || strings.Contains(e, "\n") {
		t.Errorf("Dlq-Error of %d bytes, newline %v", len(e), strings.Contains(e, "\n"))
	}
	if m := dlq.Message(dlq.Inbound{Subject: "x", Header: nats.Header{}}, dlq.ReasonMaxDeliveries, nil, now); m.Subject != "wechatpay.dlq.max_deliveries.unknown" {
		t.Errorf("unknown merchant subject %q", m.Subject)
	}
}

func TestEntryFrom(t *testing.T) {
	m := dlq.Message(dlq.Inbound{Subject: inbound, Data: []byte(body), Header: inboundHeader(), Seq: 7, Deliveries: 3, MchID: mchid}, dlq.ReasonDecryptFailed, errors.New("wrong key"), time.Now())
	e := dlq.EntryFrom(42, time.Now(), m.Subject, m.Header, m.Data)
	if e.Seq != 42 || e.Reason != "decrypt_failed" || e.MchID != mchid || e.EventType != "REFUND.SUCCESS" || e.NotificationID != "n-1" ||
		e.Deliveries != 3 || e.DeadLetteredAt.IsZero() || e.Envelope == nil {
		t.Fatalf("entry %+v", e)
	}
	if ok, fix := e.Replayable(); ok || !strings.Contains(fix, "APIv3 key") {
		t.Errorf("a decrypt failure is replayable %v, fix %q", ok, fix)
	}
	bad := dlq.EntryFrom(1, time.Now(), "wechatpay.dlq.max_deliveries.unknown", nats.Header{}, []byte("not json"))
	if bad.Envelope != nil || bad.EnvelopeError == "" || bad.Reason != "max_deliveries" {
		t.Errorf("entry of a non-envelope %+v", bad)
	}
	if ok, _ := bad.Replayable(); !ok {
		t.Error("max_deliveries (an outage) should be replayable as it is")
	}
}

func TestFilter(t *testing.T) {
	f := dlq.Filter{Reasons: []string{"malformed", "decrypt_failed"}, MchIDs: []string{mchid}}
	if got := f.Subjects(); len(got) != 2 || got[0] != "wechatpay.dlq.malformed."+mchid || got[1] != "wechatpay.dlq.decrypt_failed."+mchid {
		t.Errorf("Subjects = %v", got)
	}
	if got := (dlq.Filter{}).Subjects(); len(got) != 1 || got[0] != "wechatpay.dlq.*.*" {
		t.Errorf("zero filter subjects %v", got)
	}
	match := dlq.Filter{EventTypes: []string{"refund.*"}}
	if !match.MatchEventType("REFUND.CLOSED") || match.MatchEventType("TRANSACTION.SUCCESS") || match.MatchEventType("PAYSCORE.X") {
		t.Error("domain pattern matching")
	}
	if !(dlq.Filter{EventTypes: []string{"payscore.user_paid"}}).MatchEventType("PAYSCORE.USER_PAID") {
		t.Error("a WeChat event type matches in any letter case")
	}
	for _, bad := range []dlq.Filter{
		{Reasons: []string{"a.b"}}, {MchIDs: []string{"*"}}, {EventTypes: []string{"["}}, {Limit: -1}, {From: 5, To: 4},
	} {
		if err := bad.Validate(); !errors.Is(err, dlq.ErrBadFilter) {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
	for v, want := range map[string][2]uint64{"7": {7, 7}, "3-9": {3, 9}, "4-": {4, 0}} {
		from, to, err := dlq.ParseSeqRange(v)
		if err != nil || from != want[0] || to != want[1] {
			t.Errorf("ParseSeqRange(%q) = %d, %d, %v", v, from, to, err)
		}
	}
	for _, v := range []string{"0", "x", "9-3", "-4"} {
		if _, _, err := dlq.ParseSeqRange(v); !errors.Is(err, dlq.ErrBadFilter) {
			t.Errorf("ParseSeqRange(%q) = %v", v, err)
		}
	}
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	if got, _ := dlq.ParseWhen("2h", now); !got.Equal(now.Add(-2 * time.Hour)) {
		t.Errorf("ParseWhen 2h = %v", got)
	}
	if _, err := dlq.ParseWhen("yesterday", now); !errors.Is(err, dlq.ErrBadFilter) {
		t.Errorf("ParseWhen yesterday = %v", err)
	}
}

func TestParseRate(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 0, "10/s": 100 * time.Millisecond, "600/m": 100 * time.Millisecond, "4": 250 * time.Millisecond} {
		if got, err := dlq.ParseRate(v); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"0/s", "x", "5/h", "-1"} {
		if _, err := dlq.ParseRate(v); err == nil {
			t.Errorf("ParseRate(%q) accepted", v)
		}
	}
}

// TestStore: scan, get, replay and delete against a real JetStream, without wxpayctl.
func TestStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.Open(ctx, js); !errors.Is(err, dlq.ErrNoStream) {
		t.Fatalf("Open without streams = %v, want ErrNoStream", err)
	}
	if err := topology.Ensure(ctx, js, topology.Options{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := dlq.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	put := func(seq uint64, reason string, in dlq.Inbound) {
		t.Helper()
		in.Seq = seq
		if _, err := js.PublishMsg(ctx, dlq.Message(in, reason, errors.New("why"), time.Now()), jetstream.WithMsgID(dlq.MsgID(seq))); err != nil {
			t.Fatal(err)
		}
	}
	good := dlq.Inbound{Subject: inbound, Data: []byte(body), Header: inboundHeader(), Deliveries: 1, MchID: mchid}
	put(1, dlq.ReasonDecryptFailed, good)
	put(1, dlq.ReasonMaxDeliveries, good) // the advisory's copy of the same inbound message: one entry
	put(2, dlq.ReasonMalformed, dlq.Inbound{Subject: "not.inbound", Data: []byte(body), Header: inboundHeader(), MchID: mchid})
	put(3, dlq.ReasonDecryptFailed, good)

	all, more, err := s.Scan(ctx, dlq.Filter{})
	if err != nil || more || len(all) != 3 {
		t.Fatalf("Scan = %d entries, more %v, %v", len(all), more, err)
	}
	if got, _, _ := s.Scan(ctx, dlq.Filter{Reasons: []string{"decrypt_failed"}, Limit: 1}); len(got) != 1 {
		t.Errorf("limited scan %d", len(got))
	}
	if _, _, err := s.Scan(ctx, dlq.Filter{Limit: -1}); !errors.Is(err, dlq.ErrBadFilter) {
		t.Errorf("Scan with a bad filter = %v", err)
	}

	first := all[0].Seq
	r, err := s.Replay(ctx, first)
	if err != nil || r.Target != inbound || r.MsgID != mchid+":n-1:replay:"+strconv.FormatUint(first, 10) || r.InboundSeq == 0 {
		t.Fatalf("Replay = %+v, %v", r, err)
	}
	in, err := js.Stream(ctx, topology.InboundStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := in.GetMsg(ctx, r.InboundSeq)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != body || msg.Header.Get("Wechatpay-Signature") != "c2ln" || msg.Header.Get(dlq.HeaderReason) != "" || msg.Header.Get(jetstream.MsgIDHeader) != r.MsgID {
		t.Errorf("replayed message: %q %v", msg.Data, msg.Header)
	}
	if _, err := s.Get(ctx, first); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("entry still there after its replay: %v", err)
	}
	if _, err := s.Replay(ctx, first); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("second replay = %v, want ErrNotFound", err)
	}
	// An entry that does not come from the inbound stream cannot be replayed, and stays.
	if _, err := s.Replay(ctx, all[1].Seq); !errors.Is(err, dlq.ErrNotInbound) {
		t.Errorf("replay of a non-inbound entry = %v", err)
	}
	if _, err := s.Get(ctx, all[1].Seq); err != nil {
		t.Errorf("the non-replayable entry was removed: %v", err)
	}
	if err := s.Delete(ctx, all[1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, all[1].Seq); err != nil {
		t.Errorf("deleting a deleted entry: %v", err)
	}
	if left, _, _ := s.Scan(ctx, dlq.Filter{}); len(left) != 1 || left[0].Seq != all[2].Seq {
		t.Errorf("left %+v", left)
	}

	// ReplayAll, what wxpayctl and the console run: a dry run plans every entry and changes nothing; a
	// replay counts the entries gone meanwhile (all[0] replayed, all[1] deleted) apart from the one replayed.
	plan := s.ReplayAll(ctx, all, true, 0, nil)
	if plan.Matched != 3 || !plan.DryRun || len(plan.Entries) != 3 || plan.Replayed != 0 ||
		plan.Entries[1].Error == "" || plan.Entries[2].Error != "" || plan.Entries[2].Target != inbound {
		t.Errorf("dry run %+v", plan)
	}
	if left, _, _ := s.Scan(ctx, dlq.Filter{}); len(left) != 1 {
		t.Errorf("a dry run changed the DLQ: %d entries", len(left))
	}
	var calls []int
	sum := s.ReplayAll(ctx, all, false, 0, func(done int, sum *dlq.Summary) { calls = append(calls, done) })
	if sum.Matched != 3 || sum.Replayed != 1 || sum.Gone != 2 || sum.Failed != 0 || sum.Interrupted || len(calls) != 3 {
		t.Errorf("ReplayAll %+v, progress %v", sum, calls)
	}
	if left, _, _ := s.Scan(ctx, dlq.Filter{}); len(left) != 0 {
		t.Errorf("%d entries left after ReplayAll", len(left))
	}
	cancelled, stop := context.WithCancel(ctx)
	stop()
	if sum := s.ReplayAll(cancelled, all, false, 0, nil); !sum.Interrupted || len(sum.Entries) != 0 {
		t.Errorf("ReplayAll after its context ended: %+v", sum)
	}
}
