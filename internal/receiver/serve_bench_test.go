package receiver_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/receiver"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/verify"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// acceptAll stands in for the RSA verifier, which would dominate the measurement (about 30 µs): the
// benchmark is about what the handler adds around it.
type acceptAll struct{}

func (acceptAll) Verify(context.Context, verify.Headers, []byte) error { return nil }

// nopStore acknowledges every message at once, as a JetStream that is never slow would.
type nopStore struct{}

func (nopStore) Store(context.Context, *nats.Msg, string) (bool, error) { return false, nil }

// benchOptions are the handler's options in the benchmarks: everything but the verifier and the store
// real, the log line encoded and discarded.
func benchOptions() receiver.HandlerOptions {
	return receiver.HandlerOptions{
		Verifiers:      map[string]receiver.Verifier{pipelinetest.MchID: acceptAll{}},
		Store:          nopStore{},
		MaxBody:        64 << 10,
		PublishTimeout: 2 * time.Second,
		Log:            zerolog.New(io.Discard),
		Metrics:        receiver.NewMetrics(prometheus.NewRegistry()),
	}
}

// benchServe runs one notification through h per op, reusing the request and the writer so that only
// the handler's own work and allocations count.
func benchServe(b *testing.B, h http.Handler) {
	n, err := pipelinetest.SharedPlatform().Build("TRANSACTION.SUCCESS", samples.All()["TRANSACTION.SUCCESS"], wechatsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.NewReader(n.Body)
	r := httptest.NewRequest(http.MethodPost, "/notify/"+pipelinetest.MchID, nil)
	r.Header = n.Header
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		body.Reset(n.Body)
		r.Body = io.NopCloser(body)
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, r)
		if w.code != http.StatusNoContent {
			b.Fatalf("answered %d", w.code)
		}
	}
}

// nopWriter is a reusable ResponseWriter.
type nopWriter struct {
	h    http.Header
	code int
}

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(code int)        { w.code = code }

// BenchmarkServeNotification: the receiver's handler without tracing configured (the default).
func BenchmarkServeNotification(b *testing.B) {
	benchServe(b, receiver.NewHandler(benchOptions()))
}
