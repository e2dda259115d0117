package pipelinetest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

// Options shape a pipeline started by StartWith.
type Options struct {
	// Env overrides the generated configuration of the receiver and every consumer.
	Env map[string]string
	// NATSURL runs the pipeline against these servers (a natstest.Cluster's URLs) instead of a fresh
	// single server; Pipeline.NATS is nil then.
	NATSURL string
	// NoReceiver starts no in-process receiver: the test runs its own (URL and ReceiverAdmin stay empty).
	NoReceiver bool
	// TracerProvider traces the receiver; nil is tracing off.
	TracerProvider trace.TracerProvider
}

// Stack is a pipeline started by StartWith, with the handles fault tests need besides a Pipeline's.
type Stack struct {
	*Pipeline
	// ReceiverAdmin is the base URL of the in-process receiver's /metrics, /healthz and /readyz.
	ReceiverAdmin string
}

// StartWith runs Redis, NATS (unless o.NATSURL names servers) and, unless o.NoReceiver, a receiver
// configured as in production: from the environment, without the APIv3 key (ReceiverEnv).
func StartWith(t testing.TB, o Options) *Stack {
	t.Helper()
	p := &Pipeline{t: t, Platform: SharedPlatform(), Logs: &SyncBuffer{}, client: &http.Client{Timeout: 10 * time.Second}}
	s := &Stack{Pipeline: p}
	files, err := p.Platform.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	natsURL := o.NATSURL
	if natsURL == "" {
		p.NATS = natstest.Start(t)
		natsURL = p.NATS.URL()
	}
	p.Redis = redistest.Start(t)
	p.Env = p.Platform.Env(files)
	p.Env["NATS_URL"] = natsURL
	p.Env["REDIS_URL"] = p.Redis.URL()
	p.Env["RECEIVER_ADDR"] = "127.0.0.1:0"
	p.Env["ADMIN_ADDR"] = "127.0.0.1:0"
	for k, v := range o.Env {
		p.Env[k] = v
	}

	p.nc, err = nats.Connect(natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.nc.Close)
	p.js, _ = jetstream.New(p.nc)

	if o.NoReceiver {
		return s
	}
	renv := p.ReceiverEnv()
	rcfg, err := config.LoadReceiver(nil, func(k string) string { return renv[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := receiver.New(ctx, rcfg, zerolog.New(p.Logs).With().Str("program", "receiver").Logger(), receiver.Deps{TracerProvider: o.TracerProvider})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("receiver stopped with %v", err)
		}
	})
	p.URL = "http://" + r.Addr().String() + "/notify/" + MchID
	s.ReceiverAdmin = "http://" + r.AdminAddr().String()
	return s
}

// ReceiverEnv is the receiver's environment: the pipeline's, without the APIv3 key, which a receiver in
// public-key or static-certificate mode never needs.
func (p *Pipeline) ReceiverEnv() map[string]string {
	env := make(map[string]string, len(p.Env))
	for k, v := range p.Env {
		if k != "WECHATPAY_APIV3_KEY_FILE" {
			env[k] = v
		}
	}
	return env
}
