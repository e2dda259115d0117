package ctl_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// TestReplayMalformedAfterUpgrade: before parking deductions and combined payments were understood, the
// consumer dead-lettered them as malformed ("field transaction_id: required"). Those entries — WeChat's
// published sample resources, as testdata/real in internal/events holds them — must become events when
// an operator replays them after upgrading, once each, and a second replay must find nothing to do.
func TestReplayMalformedAfterUpgrade(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	url := p.NATS.URL()
	js := p.JetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// What the consumer before this change wrote to the DLQ for each of them: the raw body and headers of
	// the stored notification, reason malformed. (dlqMessage is unchanged; only the mapping was.)
	names := []string{"TRANSACTION.SUCCESS.parking", "TRANSACTION.FAIL.parking", "TRANSACTION.PAY_BACK.parking", "TRANSACTION.SUCCESS.combine"}
	for i, name := range names {
		plain := realSample(t, name)
		eventType := name[:strings.LastIndex(name, ".")]
		n := p.Build(eventType, plain, wechatsim.Options{})
		inbound := topology.InboundSubject(pipelinetest.MchID, strings.ToLower(eventType))
		m := &nats.Msg{Subject: topology.DLQSubject("malformed", pipelinetest.MchID), Data: n.Body, Header: nats.Header{}}
		for k, v := range n.Header {
			if strings.HasPrefix(k, "Wechatpay-") {
				m.Header[k] = v
			}
		}
		m.Header.Set(dlq.HeaderReason, "malformed")
		m.Header.Set(dlq.HeaderError, "map notification "+n.ID+": events: malformed notification: field transaction_id: required")
		m.Header.Set(dlq.HeaderOriginalSubject, inbound)
		m.Header.Set(dlq.HeaderDeliveries, "1")
		m.Header.Set(dlq.HeaderAt, time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano))
		m.Header.Set(dlq.HeaderStreamSeq, strconv.Itoa(i+1))
		m.Header.Set(dlq.HeaderOriginalMsgID, topology.InboundMsgID(pipelinetest.MchID, n.ID))
		if _, err := js.PublishMsg(ctx, m, jetstream.WithExpectStream(topology.DLQStream)); err != nil {
			t.Fatal(err)
		}
	}
	if rows := lsJSON(t, url, "--reason", "malformed"); len(rows) != len(names) {
		t.Fatalf("%d malformed entries, want %d", len(rows), len(names))
	}

	// The upgraded consumer runs; the operator replays.
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	r := ctlRun(t, url, "dlq", "replay", "--reason", "malformed")
	mustCode(t, r, 0, "replay --reason malformed")
	if !strings.Contains(r.stdout, "replayed 4 of 4") {
		t.Errorf("replay output:\n%s", r.stdout)
	}
	// Parking SUCCESS, FAIL and PAY_BACK are three facts; the combined payment has one sub-order.
	p.WaitFor(20*time.Second, "four events", func() bool { return p.Count(topology.EventsStream) == 4 && p.Settled() })
	if n := p.Count(topology.DLQStream); n != 0 {
		t.Fatalf("DLQ holds %d after the replay", n)
	}
	types := map[string]int{}
	for _, ev := range p.Events() {
		types[ev.Type]++
	}
	if types["com.wechatpay.payment.succeeded"] != 2 || types["com.wechatpay.payment.failed"] != 1 || types["com.wechatpay.payment.repaid"] != 1 {
		t.Errorf("events by type: %v", types)
	}

	// Nothing left to replay; posting the same notices again (WeChat's retries) adds nothing either.
	r = ctlRun(t, url, "dlq", "replay", "--reason", "malformed")
	mustCode(t, r, 0, "second replay")
	for _, name := range names {
		plain := realSample(t, name)
		if code := p.Post(p.Build(name[:strings.LastIndex(name, ".")], plain, wechatsim.Options{})); code != http.StatusNoContent {
			t.Fatalf("%s: receiver answered %d", name, code)
		}
	}
	p.WaitFor(20*time.Second, "the re-notifications settled", func() bool { return p.Count(topology.ArchiveStream) == 8 && p.Settled() })
	if n := p.Count(topology.EventsStream); n != 4 {
		t.Fatalf("%d events after re-notification, want still 4", n)
	}
	if n := p.Count(topology.DLQStream); n != 0 {
		t.Fatalf("DLQ holds %d after re-notification", n)
	}
}

// realSample reads one of WeChat's published samples (internal/events/testdata/real) and addresses it to
// the test merchant: the published samples name other merchants as service provider (sp_mchid) or
// combined-payment initiator (combine_mchid, and its sub-order's mchid), which the consumer rightly
// refuses for another account.
func realSample(t *testing.T, name string) []byte {
	t.Helper()
	plain, err := os.ReadFile(filepath.Join("..", "events", "testdata", "real", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, published := range []string{"10000100", "1900000109"} {
		plain = bytes.ReplaceAll(plain, []byte(`"sp_mchid": "`+published+`"`), []byte(`"sp_mchid": "`+pipelinetest.MchID+`"`))
		plain = bytes.ReplaceAll(plain, []byte(`"combine_mchid": "`+published+`"`), []byte(`"combine_mchid": "`+pipelinetest.MchID+`"`))
	}
	return plain
}
