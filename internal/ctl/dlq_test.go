package ctl_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/ctl"
	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// invocation is one wxpayctl run.
type invocation struct {
	env      map[string]string
	terminal bool
	stdin    string
}

type result struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// run runs wxpayctl in-process with its own environment and output, as cmd/wxpayctl would.
func (inv invocation) run(ctx context.Context, t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr pipelinetest.SyncBuffer
	env := ctl.Env{
		Getenv:     func(k string) string { return inv.env[k] },
		Stdout:     &stdout,
		Stderr:     &stderr,
		Stdin:      strings.NewReader(inv.stdin),
		IsTerminal: inv.terminal,
	}
	start := time.Now()
	code := ctl.Main(ctx, args, env)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
}

func ctlRun(t *testing.T, natsURL string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return invocation{}.run(ctx, t, append([]string{"--nats-url", natsURL}, args...)...)
}

func mustCode(t *testing.T, r result, want int, what string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", what, r.code, want, r.stdout, r.stderr)
	}
}

type dlqRow struct {
	Seq            uint64 `json:"seq"`
	Reason         string `json:"reason"`
	MchID          string `json:"mchid"`
	EventType      string `json:"event_type"`
	NotificationID string `json:"notification_id"`
}

func lsJSON(t *testing.T, natsURL string, args ...string) []dlqRow {
	t.Helper()
	r := ctlRun(t, natsURL, append([]string{"dlq", "ls", "-o", "json"}, args...)...)
	mustCode(t, r, 0, "dlq ls")
	var rows []dlqRow
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		t.Fatalf("dlq ls -o json: %v\n%s", err, r.stdout)
	}
	return rows
}

func refundID(t *testing.T, plain []byte) string {
	t.Helper()
	var m struct {
		RefundID string `json:"refund_id"`
	}
	if err := json.Unmarshal(plain, &m); err != nil || m.RefundID == "" {
		t.Fatalf("no refund_id in %s", plain)
	}
	return m.RefundID
}

// TestDLQReplayAfterAPIv3KeyFix fills the DLQ with real failures — a consumer configured with the wrong
// APIv3 key dead-letters every refund as decrypt_failed, and two PAYSCORE notifications as
// unsupported_event_type — then fixes the key and works through the DLQ with wxpayctl.
func TestDLQReplayAfterAPIv3KeyFix(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	url := p.NATS.URL()
	good := p.Env["WECHATPAY_APIV3_KEY_FILE"]
	wrong := filepath.Join(t.TempDir(), "wrong-apiv3.key")
	if err := os.WriteFile(wrong, []byte(strings.Repeat("w", 32)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Env["WECHATPAY_APIV3_KEY_FILE"] = wrong
	stopWrong := p.StartConsumer(pipelinetest.ConsumerOptions{})

	// Three refunds; the first one WeChat sends twice, under two notification ids.
	var plains [][]byte
	var refundIDs []string
	post := func(n wechatsim.Notification) {
		t.Helper()
		if code := p.Post(n); code != http.StatusNoContent {
			t.Fatalf("receiver answered %d", code)
		}
	}
	for range 3 {
		plain := wechatsim.Fresh(samples.All()["REFUND.SUCCESS"], pipelinetest.MchID, time.Now())
		plains = append(plains, plain)
		refundIDs = append(refundIDs, refundID(t, plain))
		post(p.Build("REFUND.SUCCESS", plain, wechatsim.Options{}))
	}
	post(p.Build("REFUND.SUCCESS", plains[0], wechatsim.Options{}))
	post(p.Build("PAYSCORE.USER_OPEN_SERVICE", []byte(`{"out_request_no":"a"}`), wechatsim.Options{}))
	post(p.Build("PAYSCORE.USER_PAID", []byte(`{"out_order_no":"b"}`), wechatsim.Options{}))
	p.WaitFor(20*time.Second, "six dead letters", func() bool { return p.Count(topology.DLQStream) == 6 && p.Settled() })
	stopWrong()

	// The key is fixed.
	p.Env["WECHATPAY_APIV3_KEY_FILE"] = good
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	// Everything stored in the inbound stream is copied to the archive: its count is what was stored.
	p.WaitFor(10*time.Second, "the archive caught up", func() bool { return p.ArchiveCaughtUp() })
	inboundBefore := p.Count(topology.ArchiveStream)

	t.Run("ls filters", func(t *testing.T) {
		all := lsJSON(t, url)
		if len(all) != 6 {
			t.Fatalf("%d rows: %+v", len(all), all)
		}
		for _, c := range []struct {
			args []string
			want int
		}{
			{[]string{"--reason", "decrypt_failed"}, 4},
			{[]string{"--reason", "decrypt_failed,unsupported_event_type"}, 6},
			{[]string{"--mchid", pipelinetest.MchID, "--reason", "unsupported_event_type"}, 2},
			{[]string{"--mchid", "1900000999"}, 0},
			{[]string{"--event-type", "refund.*"}, 4},
			{[]string{"--event-type", "REFUND.SUCCESS"}, 4},
			{[]string{"--event-type", "PAYSCORE.USER_PAID"}, 1},
			{[]string{"--seq", strconv.FormatUint(all[1].Seq, 10) + "-" + strconv.FormatUint(all[3].Seq, 10)}, 3},
			{[]string{"--seq", strconv.FormatUint(all[4].Seq, 10) + "-"}, 2},
			{[]string{"--since", "1h"}, 6},
			{[]string{"--until", "1h"}, 0},
			{[]string{"--limit", "2"}, 2},
		} {
			if got := lsJSON(t, url, c.args...); len(got) != c.want {
				t.Errorf("dlq ls %v: %d rows, want %d", c.args, len(got), c.want)
			}
		}
		r := ctlRun(t, url, "dlq", "ls", "--limit", "2")
		mustCode(t, r, 0, "dlq ls --limit 2")
		if !strings.Contains(r.stdout, "REASON") || !strings.Contains(r.stdout, all[0].Reason) || !strings.Contains(r.stdout, "more entries match") {
			t.Errorf("table:\n%s", r.stdout)
		}
		mustCode(t, ctlRun(t, url, "dlq", "ls", "--seq", "x"), 2, "bad --seq")
		mustCode(t, ctlRun(t, url, "dlq", "ls", "--since", "yesterday"), 2, "bad --since")
	})

	t.Run("show never prints the plaintext without --decrypt", func(t *testing.T) {
		seq := strconv.FormatUint(lsJSON(t, url, "--reason", "decrypt_failed")[0].Seq, 10)
		for _, args := range [][]string{{"dlq", "show", seq}, {"dlq", "show", seq, "-o", "json"}, {"dlq", "show", seq, "--body"}} {
			r := ctlRun(t, url, args...)
			mustCode(t, r, 0, strings.Join(args, " "))
			for _, secret := range append([]string{"user_received_account", string(p.Platform.APIv3Key)}, refundIDs...) {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Fatalf("%v printed %q:\n%s", args, secret, r.stdout)
				}
			}
			for _, want := range []string{"decrypt_failed", "Wechatpay-Signature", "REFUND.SUCCESS", "wechatpay.inbound." + pipelinetest.MchID + ".refund.success"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("%v does not show %q:\n%s", args, want, r.stdout)
				}
			}
		}
		mustCode(t, ctlRun(t, url, "dlq", "show", seq, "--decrypt"), 2, "--decrypt without a key")
		mustCode(t, ctlRun(t, url, "dlq", "show", seq, "--decrypt", "--apiv3-key-file", wrong), 1, "--decrypt with the wrong key")
		r := ctlRun(t, url, "dlq", "show", seq, "--decrypt", "--apiv3-key-file", good)
		mustCode(t, r, 0, "--decrypt")
		// The consumer's workers dead-letter in any order: the entry is one of the refunds.
		shown := false
		for _, id := range refundIDs {
			shown = shown || strings.Contains(r.stdout, id)
		}
		if !shown || !strings.Contains(r.stdout, "plaintext (decrypted)") {
			t.Fatalf("--decrypt does not show the plaintext:\n%s", r.stdout)
		}
		mustCode(t, ctlRun(t, url, "dlq", "show", "999999"), 1, "show of a missing entry")
	})

	t.Run("dry run changes nothing", func(t *testing.T) {
		r := ctlRun(t, url, "dlq", "replay", "--reason", "decrypt_failed", "--dry-run")
		mustCode(t, r, 0, "replay --dry-run")
		if !strings.Contains(r.stdout, ":replay:") || !strings.Contains(r.stdout, "4 entries would be replayed") {
			t.Fatalf("dry run output:\n%s", r.stdout)
		}
		time.Sleep(300 * time.Millisecond) // give a wrongly published replay the time to show
		if n := p.Count(topology.DLQStream); n != 6 {
			t.Fatalf("DLQ holds %d after a dry run", n)
		}
		if n := p.Count(topology.ArchiveStream); n != inboundBefore {
			t.Fatalf("inbound grew from %d to %d after a dry run", inboundBefore, n)
		}
	})

	t.Run("an entry stays until the inbound stream acknowledges its replay", func(t *testing.T) {
		js := p.JetStream()
		ctx := context.Background()
		s, err := js.Stream(ctx, topology.InboundStream)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := s.Info(ctx)
		full := info.Config
		full.MaxBytes = int64(info.State.Bytes) + 1 // DiscardNew: the next publish is refused
		if _, err := js.UpdateStream(ctx, full); err != nil {
			t.Fatal(err)
		}
		seq := strconv.FormatUint(lsJSON(t, url, "--reason", "decrypt_failed")[0].Seq, 10)
		r := ctlRun(t, url, "dlq", "replay", "--seq", seq)
		full.MaxBytes = -1
		if _, err := js.UpdateStream(ctx, full); err != nil {
			t.Fatal(err)
		}
		mustCode(t, r, 1, "replay into a full inbound stream")
		if !strings.Contains(r.stdout, "stays in the DLQ") {
			t.Errorf("output:\n%s", r.stdout)
		}
		if n := p.Count(topology.DLQStream); n != 6 {
			t.Fatalf("DLQ holds %d: an entry was removed without its replay being stored", n)
		}
	})

	// A copy of one entry, to simulate a replay that crashed after the PubAck and before the delete.
	var leftover *jetstream.RawStreamMsg
	for _, m := range p.Messages(topology.DLQStream) {
		if m.Header.Get(dlq.HeaderReason) == "decrypt_failed" {
			leftover = m
			break
		}
	}

	t.Run("replay once fixed, at the given rate", func(t *testing.T) {
		r := ctlRun(t, url, "dlq", "replay", "--reason", "decrypt_failed", "--rate", "10/s")
		mustCode(t, r, 0, "replay")
		// 4 entries at 10/s: the last starts no earlier than 300 ms after the first.
		if floor := 300 * time.Millisecond; r.took < floor {
			t.Fatalf("4 replays at 10/s took %s, less than %s", r.took, floor)
		}
		if !strings.Contains(r.stdout, "replayed 4 of 4") {
			t.Fatalf("summary:\n%s", r.stdout)
		}
		if n := p.Count(topology.DLQStream); n != 2 {
			t.Fatalf("DLQ holds %d after the replay, want the 2 unsupported ones", n)
		}
		p.WaitFor(20*time.Second, "three events, one per refund", func() bool { return p.Count(topology.EventsStream) >= 3 && p.Settled() })
		var subjects []string
		for _, e := range p.Events() {
			subjects = append(subjects, e.Subject)
		}
		slices.Sort(subjects)
		want := slices.Clone(refundIDs)
		slices.Sort(want)
		if !slices.Equal(subjects, want) {
			t.Fatalf("event subjects %v, want the refunds %v", subjects, want)
		}
		// The replays carried new message ids, so the inbound stream's duplicate window let them in.
		var replayIDs int
		p.WaitFor(10*time.Second, "the archive caught up", func() bool { return p.ArchiveCaughtUp() })
		for _, m := range p.Messages(topology.ArchiveStream) {
			if strings.Contains(m.Header.Get("Nats-Msg-Id"), ":replay:") {
				replayIDs++
				if m.Header.Get("Wechatpay-Signature") == "" || m.Header.Get("Request-ID") == "" {
					t.Errorf("replay lost the original headers: %v", m.Header)
				}
			}
		}
		if replayIDs != 4 {
			t.Fatalf("%d replays in the inbound stream, want 4", replayIDs)
		}
	})

	t.Run("replaying again publishes no second event", func(t *testing.T) {
		msg := &nats.Msg{Subject: leftover.Subject, Data: leftover.Data, Header: leftover.Header}
		msg.Header.Del(jetstream.MsgIDHeader) // else the DLQ's duplicate window would drop the copy
		if _, err := p.JetStream().PublishMsg(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		inv := invocation{terminal: true}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r := inv.run(ctx, t, "--nats-url", url, "dlq", "replay", "--reason", "decrypt_failed")
		mustCode(t, r, 0, "second replay")
		if !strings.Contains(r.stderr, "1/1") || !strings.Contains(r.stderr, "[####") {
			t.Errorf("no progress bar on a terminal:\n%q", r.stderr)
		}
		p.WaitFor(20*time.Second, "the second replay processed", func() bool { return p.Count(topology.DLQStream) == 2 && p.Settled() })
		if n := p.Count(topology.EventsStream); n != 3 {
			t.Fatalf("%d events after replaying a fact twice, want 3", n)
		}
		// It did reach the consumer, which found the fact done (as it did for WeChat's re-notification).
		p.WaitFor(10*time.Second, "two duplicate outcomes", func() bool {
			return strings.Count(p.Logs.String(), `"outcome":"duplicate"`) >= 2
		})
		r = ctlRun(t, url, "dlq", "replay", "--reason", "decrypt_failed", "-o", "json")
		mustCode(t, r, 0, "replay of nothing")
		var sum struct{ Matched, Replayed int }
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Matched != 0 {
			t.Fatalf("summary %s: %v", r.stdout, err)
		}
	})

	t.Run("purge removes only the filtered entries, after confirmation", func(t *testing.T) {
		filter := []string{"dlq", "purge", "--event-type", "PAYSCORE.USER_PAID"}
		mustCode(t, ctlRun(t, url, filter...), 2, "purge without a terminal and without --yes")
		ctx := context.Background()
		r := invocation{terminal: true, stdin: "no\n"}.run(ctx, t, append([]string{"--nats-url", url}, filter...)...)
		mustCode(t, r, 1, "purge answered no")
		if n := p.Count(topology.DLQStream); n != 2 {
			t.Fatalf("DLQ holds %d after refusals", n)
		}
		r = ctlRun(t, url, append(filter, "--dry-run")...)
		mustCode(t, r, 0, "purge --dry-run")
		if n := p.Count(topology.DLQStream); n != 2 {
			t.Fatalf("DLQ holds %d after a dry run", n)
		}
		r = invocation{terminal: true, stdin: "yes\n"}.run(ctx, t, append([]string{"--nats-url", url}, filter...)...)
		mustCode(t, r, 0, "purge confirmed")
		if !strings.Contains(r.stdout, "purged 1 of 1") {
			t.Errorf("output:\n%s", r.stdout)
		}
		left := lsJSON(t, url)
		if len(left) != 1 || left[0].EventType != "PAYSCORE.USER_OPEN_SERVICE" {
			t.Fatalf("left after purge: %+v", left)
		}
		mustCode(t, ctlRun(t, url, "dlq", "purge", "--reason", "unsupported_event_type", "--yes"), 0, "purge --yes")
		if n := p.Count(topology.DLQStream); n != 0 {
			t.Fatalf("DLQ holds %d", n)
		}
	})
}

func TestDLQWithoutStreams(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	// A NATS without the streams: a server of its own.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.JetStream().DeleteStream(ctx, topology.DLQStream); err != nil {
		t.Fatal(err)
	}
	r := ctlRun(t, p.NATS.URL(), "dlq", "ls")
	mustCode(t, r, 3, "dlq ls without the stream")
	if !strings.Contains(r.stderr, "streams apply") {
		t.Errorf("stderr does not say what to do: %s", r.stderr)
	}
	mustCode(t, ctlRun(t, "nats://127.0.0.1:1", "dlq", "ls"), 3, "dlq ls without NATS")
	mustCode(t, ctlRun(t, p.NATS.URL(), "dlq", "replay", "--rate", "fast"), 2, "bad --rate")
}
