package config_test

import (
	"io"
	"strings"
	"testing"

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
