package topology_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// A deployment of the layout before WECHATPAY_ARCHIVE — WECHATPAY_INBOUND with Limits retention, 7 days,
// holding processed and unprocessed notifications — is migrated by Apply: a dry run says what would
// change and changes nothing; the real run keeps every unprocessed notification in WECHATPAY_INBOUND,
// copies the whole history to WECHATPAY_ARCHIVE, and from then on processed notifications leave the
// inbound stream. A second run has nothing to change.
func TestApplyMigratesTheInboundStream(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The previous release's layout and consumer settings.
	old := topology.InboundConfig(topology.Options{})
	old.Retention, old.MaxAge = jetstream.LimitsPolicy, 7*24*time.Hour
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	// AckWait is short so that the notifications in work during the migration come back quickly.
	want := topology.Options{Replicas: 1, InboundMaxBytes: 1 << 20, Consumer: topology.ConsumerOptions{AckWait: time.Second}}
	prev := topology.ConsumerConfig(want)
	prev.MaxAckPending = 64
	cons, err := js.CreateConsumer(ctx, topology.InboundStream, prev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateConsumer(ctx, topology.InboundStream, jetstream.ConsumerConfig{Durable: "forgotten", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	const stored, processed = 20, 8
	for i := range stored {
		if _, err := js.Publish(ctx, topology.InboundSubject("1900000100", "transaction.success"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(processed + 2) // two more delivered and not settled: in work
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	for m := range batch.Messages() {
		if i < processed {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		i++
	}

	dry, err := topology.Apply(ctx, js, want, true)
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprint(dry.Changes)
	for _, w := range []string{"retention limits → interest", "max_age 168h0m0s → none", "max_bytes none → 1048576",
		"create stream " + topology.ArchiveStream, "create consumer " + topology.InboundStream + " > " + topology.ArchiveConsumerName,
		"max_ack_pending 64 → 1000"} {
		if !strings.Contains(text, w) {
			t.Errorf("the dry run does not say %q: %s", w, text)
		}
	}
	if len(dry.Warnings) != 1 || !strings.Contains(dry.Warnings[0], "forgotten") {
		t.Errorf("warnings %q, want one about the consumer nobody reads", dry.Warnings)
	}
	if _, err := js.Stream(ctx, topology.ArchiveStream); err == nil {
		t.Fatal("the dry run created the archive")
	}
	if info := streamInfo(ctx, t, js, topology.InboundStream); info.Config.Retention != jetstream.LimitsPolicy || info.State.Msgs != stored {
		t.Fatalf("after the dry run: retention %s, %d messages", info.Config.Retention, info.State.Msgs)
	}

	// The consumer nobody reads would keep everything under Interest retention: an operator deletes it
	// after the warning.
	if err := js.DeleteConsumer(ctx, topology.InboundStream, "forgotten"); err != nil {
		t.Fatal(err)
	}
	if _, err := topology.Apply(ctx, js, want, false); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the archive holding the whole history and the inbound stream only unprocessed notifications", func() bool {
		in, ar := streamInfo(ctx, t, js, topology.InboundStream), streamInfo(ctx, t, js, topology.ArchiveStream)
		return ar.State.Msgs == stored && in.State.Msgs == stored-processed
	}, wait.Options{Timeout: 10 * time.Second})
	if info := streamInfo(ctx, t, js, topology.InboundStream); info.Config.Retention != jetstream.InterestPolicy || info.Config.MaxAge != 0 {
		t.Fatalf("inbound: retention %s, max age %s", info.Config.Retention, info.Config.MaxAge)
	}

	// The rest is processed, including the two that were in work during the migration.
	for n := 0; n < stored-processed; {
		batch, err := cons.Fetch(stored, jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	wait.For(t, "the inbound stream empty once everything is processed", func() bool {
		return streamInfo(ctx, t, js, topology.InboundStream).State.Msgs == 0
	}, wait.Options{Timeout: 10 * time.Second})

	again, err := topology.Apply(ctx, js, want, false)
	if err != nil || len(again.Changes) != 0 || len(again.Warnings) != 0 {
		t.Fatalf("a second apply: %v, %v, %v", again.Changes, again.Warnings, err)
	}
}

// With Interest retention a stream without consumers acknowledges a publish and keeps nothing; Ensure
// therefore creates the durable consumer together with the stream.
func TestEnsureCreatesTheDurableWithTheStream(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := topology.Options{Consumer: topology.ConsumerOptions{MaxAckPending: 123}}
	if err := topology.Ensure(ctx, js, o); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, topology.InboundSubject("1900000100", "refund.success"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n := streamInfo(ctx, t, js, topology.InboundStream).State.Msgs; n != 1 {
		t.Fatalf("the inbound stream kept %d of 1 notifications", n)
	}
	// Ensure creates; it never changes what exists.
	o.Consumer.MaxAckPending = 7
	if err := topology.Ensure(ctx, js, o); err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, topology.InboundStream, topology.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.MaxAckPending; got != 123 {
		t.Fatalf("Ensure changed MaxAckPending to %d", got)
	}
}

func streamInfo(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A notification the durable consumer NAKs with a delay stays in WECHATPAY_INBOUND and comes back, also
// after the archive consumer — the stream's other consumer — has copied and acknowledged it: under
// Interest retention a message leaves only when every consumer is done with it, and a NAK is not done.
func TestNakedNotificationOutlivesTheArchivesAck(t *testing.T) {
	srv := natstest.Start(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topology.Ensure(ctx, js, topology.Options{}); err != nil {
		t.Fatal(err)
	}
	const n = 10
	for i := range n {
		if _, err := js.Publish(ctx, topology.InboundSubject("1900000100", "refund.success"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := js.Consumer(ctx, topology.InboundStream, topology.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(n)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.NakWithDelay(2 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	archive, err := js.PushConsumer(ctx, topology.InboundStream, topology.ArchiveConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the archive consumer having copied and acknowledged every notification", func() bool {
		info, err := archive.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream == n
	}, wait.Options{Timeout: 10 * time.Second})
	if got := streamInfo(ctx, t, js, topology.InboundStream).State.Msgs; got != n {
		t.Fatalf("the inbound stream holds %d of the %d NAKed notifications once the archive acknowledged them", got, n)
	}
	var back int
	for back < n {
		batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			md, _ := m.Metadata()
			if md.NumDelivered != 2 {
				t.Errorf("stream seq %d delivered %d times", md.Sequence.Stream, md.NumDelivered)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got == 0 {
			t.Fatalf("%d of %d NAKed notifications came back", back, n)
		}
		back += got
	}
	wait.For(t, "the inbound stream empty once they are processed", func() bool {
		return streamInfo(ctx, t, js, topology.InboundStream).State.Msgs == 0
	}, wait.Options{Timeout: 10 * time.Second})
}
