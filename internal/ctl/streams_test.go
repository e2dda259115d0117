package ctl_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// streams apply reads STREAM_REPLICAS and INBOUND_MAX_BYTES as the programs do: a bad value is a usage
// error naming the variable, never a silent default; --stream-replicas is the flag the README promises.
func TestStreamsApplyConfiguration(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(env map[string]string, args ...string) result {
		t.Helper()
		return invocation{env: env}.run(ctx, t, append([]string{"--nats-url", srv.URL(), "streams", "apply"}, args...)...)
	}
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"replicas not a number", map[string]string{"STREAM_REPLICAS": "three"}, nil, "STREAM_REPLICAS"},
		{"replicas above five", nil, []string{"--stream-replicas", "7"}, "STREAM_REPLICAS"},
		{"negative byte cap", map[string]string{"INBOUND_MAX_BYTES": "-1"}, nil, "INBOUND_MAX_BYTES"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := run(c.env, c.args...)
			mustCode(t, r, 2, c.name)
			if !strings.Contains(r.stderr, c.want) {
				t.Errorf("the error does not name %s:\n%s", c.want, r.stderr)
			}
		})
	}

	mustCode(t, run(map[string]string{"INBOUND_MAX_BYTES": "1048576"}, "--stream-replicas", "1"), 0, "apply")
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, topology.InboundStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxBytes; got != 1048576 {
		t.Errorf("inbound MaxBytes = %d, want INBOUND_MAX_BYTES", got)
	}
}

// streams apply says what it changes; --dry-run says it and changes nothing; the durable consumer's
// fleet-wide settings come from the same variables (or flags) as every program's; a second run has
// nothing to do; streams info shows the archive beside the other streams.
func TestStreamsApplySaysWhatItChanges(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := map[string]string{"CONSUMER_ACK_WAIT": "45s"}
	run := func(args ...string) result {
		t.Helper()
		return invocation{env: env}.run(ctx, t, append([]string{"--nats-url", srv.URL(), "streams"}, args...)...)
	}
	dry := run("apply", "--dry-run", "--consumer-max-ack-pending", "2000")
	mustCode(t, dry, 0, "apply --dry-run")
	for _, want := range []string{"would create stream WECHATPAY_INBOUND", "would create stream WECHATPAY_ARCHIVE",
		"would create consumer WECHATPAY_INBOUND > wxpay-consumer", "would create consumer WECHATPAY_INBOUND > wxpay-archive", "nothing was changed"} {
		if !strings.Contains(dry.stdout, want) {
			t.Errorf("the dry run does not say %q:\n%s", want, dry.stdout)
		}
	}
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, topology.InboundStream); err == nil {
		t.Fatal("the dry run created the inbound stream")
	}

	applied := run("apply", "--consumer-max-ack-pending", "2000")
	mustCode(t, applied, 0, "apply")
	if !strings.Contains(applied.stdout, "create stream WECHATPAY_ARCHIVE") || !strings.Contains(applied.stdout, "(copy of WECHATPAY_INBOUND)") {
		t.Errorf("apply's output:\n%s", applied.stdout)
	}
	c, err := js.Consumer(ctx, topology.InboundStream, topology.ConsumerName)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := c.CachedInfo().Config; cfg.MaxAckPending != 2000 || cfg.AckWait != 45*time.Second || cfg.MaxDeliver != 20 {
		t.Errorf("durable: MaxAckPending %d, AckWait %s, MaxDeliver %d", cfg.MaxAckPending, cfg.AckWait, cfg.MaxDeliver)
	}

	env["CONSUMER_MAX_DELIVER"] = "30"
	changed := run("apply", "--consumer-max-ack-pending", "2000")
	mustCode(t, changed, 0, "apply a change")
	if !strings.Contains(changed.stdout, "update consumer WECHATPAY_INBOUND > wxpay-consumer: max_deliver 20 → 30") {
		t.Errorf("apply does not say what it changed:\n%s", changed.stdout)
	}
	again := run("apply", "--consumer-max-ack-pending", "2000", "-o", "json")
	mustCode(t, again, 0, "apply again")
	if !strings.Contains(again.stdout, `"changes":[]`) {
		t.Errorf("a second apply changed something:\n%s", again.stdout)
	}
	info := run("info")
	mustCode(t, info, 0, "info")
	if !strings.Contains(info.stdout, topology.ArchiveStream) {
		t.Errorf("info lacks the archive:\n%s", info.stdout)
	}
}

// A mistyped dlq subcommand, or none, is a usage error that says what exists, not help and exit 0.
func TestDLQUsageErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "replya"}, "did you mean replay"},
		{[]string{"dlq"}, "needs a subcommand"},
		{[]string{"dlq", "show"}, "needs one DLQ sequence number"},
	} {
		r := invocation{}.run(ctx, t, c.args...)
		mustCode(t, r, 2, strings.Join(c.args, " "))
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("%v: stderr lacks %q:\n%s", c.args, c.want, r.stderr)
		}
	}
}
