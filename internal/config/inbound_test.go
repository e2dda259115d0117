package config_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/config"
)

// INBOUND_MAX_BYTES reaches both programs (both create the streams, and a program without it would
// lift the limit again); a bad value is named.
func TestInboundMaxBytes(t *testing.T) {
	p, f := setup(t)
	env := p.Env(f)
	env["INBOUND_MAX_BYTES"] = "1048576"
	r, err := config.LoadReceiver(nil, envOf(env), io.Discard)
	if err != nil || r.InboundMaxBytes != 1<<20 {
		t.Fatalf("receiver: %d, %v", r.InboundMaxBytes, err)
	}
	c, err := config.LoadConsumer(nil, envOf(env), io.Discard)
	if err != nil || c.InboundMaxBytes != 1<<20 {
		t.Fatalf("consumer: %d, %v", c.InboundMaxBytes, err)
	}
	delete(env, "INBOUND_MAX_BYTES")
	if r, _ := config.LoadReceiver(nil, envOf(env), io.Discard); r.InboundMaxBytes != 0 {
		t.Fatalf("default %d, want 0 (no limit)", r.InboundMaxBytes)
	}
	env["INBOUND_MAX_BYTES"] = "-1"
	if _, err := config.LoadReceiver(nil, envOf(env), io.Discard); err == nil || !strings.Contains(err.Error(), "INBOUND_MAX_BYTES") {
		t.Fatalf("-1: %v, want an error naming INBOUND_MAX_BYTES", err)
	}
}

// The layout's settings — the streams' sizes and the durable consumer's fleet-wide settings — are read
// alike by every program and by `wxpayctl streams apply` (LoadStreams), with the same defaults and
// checks; nothing a process computes for itself goes into them.
func TestStreamsSettings(t *testing.T) {
	p, f := setup(t)
	env := p.Env(f)
	for k, v := range map[string]string{"CONSUMER_MAX_ACK_PENDING": "2000", "CONSUMER_ACK_WAIT": "45s", "CONSUMER_MAX_DELIVER": "9",
		"ARCHIVE_MAX_BYTES": "1073741824", "STREAM_REPLICAS": "3", "CONSUMER_WORKERS": "32"} {
		env[k] = v
	}
	want := config.Streams{StreamReplicas: 3, ArchiveMaxBytes: 1 << 30,
		Consumer: config.ConsumerSettings{MaxAckPending: 2000, AckWait: 45 * time.Second, MaxDeliver: 9}}
	r, err := config.LoadReceiver(nil, envOf(env), io.Discard)
	if err != nil || r.Streams != want {
		t.Fatalf("receiver: %+v, %v", r.Streams, err)
	}
	c, err := config.LoadConsumer(nil, envOf(env), io.Discard)
	if err != nil || c.Streams != want {
		t.Fatalf("consumer: %+v, %v", c.Streams, err)
	}
	s, err := config.LoadStreams(nil, envOf(env), io.Discard)
	if err != nil || s != want {
		t.Fatalf("streams apply: %+v, %v", s, err)
	}
	if o := s.Topology(); o.Consumer.MaxAckPending != 2000 || o.Consumer.AckWait != 45*time.Second || o.Consumer.MaxDeliver != 9 || o.Replicas != 3 {
		t.Fatalf("Topology() = %+v", o)
	}
	if s, _ := config.LoadStreams([]string{"--consumer-max-ack-pending=5"}, envOf(nil), io.Discard); s.Consumer.MaxAckPending != 5 {
		t.Fatalf("flag: %+v", s.Consumer)
	}
	if s, _ := config.LoadStreams(nil, envOf(nil), io.Discard); s.Consumer != (config.ConsumerSettings{MaxAckPending: 1000, AckWait: 30 * time.Second, MaxDeliver: 20}) {
		t.Fatalf("defaults: %+v", s.Consumer)
	}
	for _, c := range []struct{ k, v, want string }{
		{"CONSUMER_MAX_ACK_PENDING", "0", "CONSUMER_MAX_ACK_PENDING"},
		{"CONSUMER_ACK_WAIT", "500ms", "CONSUMER_ACK_WAIT"},
		{"CONSUMER_MAX_DELIVER", "1", "CONSUMER_MAX_DELIVER"},
		{"ARCHIVE_MAX_BYTES", "lots", "ARCHIVE_MAX_BYTES"},
	} {
		if _, err := config.LoadStreams(nil, envOf(map[string]string{c.k: c.v}), io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: %v", c.k, c.v, err)
		}
	}
	// One process cannot use more workers than the whole fleet may hold.
	env["CONSUMER_MAX_ACK_PENDING"] = "16"
	if _, err := config.LoadConsumer(nil, envOf(env), io.Discard); err == nil || !strings.Contains(err.Error(), "CONSUMER_WORKERS") {
		t.Fatalf("32 workers under a fleet limit of 16: %v", err)
	}
}

// Sentinel and Cluster take passwords; a Sentinel configured by address list needs no REDIS_URL (whose
// default used to clash with REDIS_ADDRS).
func TestRedisPasswords(t *testing.T) {
	p, f := setup(t)
	env := p.Env(f)
	env["REDIS_ADDRS"] = "s1:26379,s2:26379"
	env["REDIS_MASTER_NAME"] = "mymaster"
	env["REDIS_PASSWORD"] = "data"
	env["REDIS_SENTINEL_PASSWORD"] = "sentinel"
	c, err := config.LoadConsumer(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis.URL != "" || c.Redis.Password != "data" || c.Redis.SentinelPassword != "sentinel" {
		t.Fatalf("%+v", c.Redis)
	}
	delete(env, "REDIS_ADDRS")
	delete(env, "REDIS_MASTER_NAME")
	if c, err := config.LoadConsumer(nil, envOf(env), io.Discard); err == nil || !strings.Contains(err.Error(), "REDIS_SENTINEL_PASSWORD") {
		t.Fatalf("a sentinel password without a Sentinel: %+v, %v", c.Redis, err)
	}
	delete(env, "REDIS_SENTINEL_PASSWORD")
	if c, err := config.LoadConsumer(nil, envOf(env), io.Discard); err != nil || c.Redis.URL != config.DefaultRedisURL {
		t.Fatalf("no Redis configured: %+v, %v", c.Redis, err)
	}
	env["REDIS_URL"] = "redis://a:6379"
	env["REDIS_ADDRS"] = "c1:6379,c2:6379"
	if _, err := config.LoadConsumer(nil, envOf(env), io.Discard); err == nil || !strings.Contains(err.Error(), "REDIS_URL") {
		t.Fatalf("URL and addresses: %v", err)
	}
	if got := config.RedactRedisURL("redis://:sp@s1:26379?master_name=m&password=dp&addr=s2:26379"); strings.Contains(got, "sp@") || strings.Contains(got, "dp") {
		t.Fatalf("a Sentinel URL's passwords shown: %s", got)
	}
}
