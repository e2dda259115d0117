package consumer

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
)

// Metrics are the consumer's Prometheus metrics.
type Metrics struct {
	processed    *prometheus.CounterVec
	dlq          *prometheus.CounterVec
	leaseLost    *prometheus.CounterVec
	dedupeErrors *prometheus.CounterVec
	seconds      prometheus.Histogram
	pending      prometheus.Gauge
	ackPending   prometheus.Gauge
}

// Dedupe store operations, as the op label of wxpay_consumer_dedupe_errors_total.
const (
	opClaim   = "claim"
	opCommit  = "commit"
	opRelease = "release"
)

// NewMetrics registers the consumer's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		processed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_consumer_processed_total",
			Help: "Inbound notifications settled, by domain type and outcome (published, duplicate, dead_lettered, retried).",
		}, []string{"type", "outcome"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_consumer_dlq_total",
			Help: "Notifications dead-lettered, by reason.",
		}, []string{"reason"}),
		leaseLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_consumer_dedupe_lease_lost_total",
			Help: "Commits after the dedupe lease had expired or been taken over (the event was published; JetStream's duplicate window covers the overlap).",
		}, []string{"result"}),
		dedupeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_consumer_dedupe_errors_total",
			Help: "Failed dedupe store calls, by operation (claim, commit, release) and kind: oom (Redis full, noeviction: " +
				"new facts wait), failover, timeout, conn, other. Each is retried; none drops a notification.",
		}, []string{"op", "kind"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wxpay_consumer_processing_seconds",
			Help:    "Time to process and settle one inbound notification.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wxpay_consumer_pending",
			Help: "Inbound notifications not yet delivered to any consumer (lag).",
		}),
		ackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wxpay_consumer_ack_pending",
			Help: "Inbound notifications delivered and not yet acknowledged.",
		}),
	}
	reg.MustRegister(m.processed, m.dlq, m.leaseLost, m.dedupeErrors, m.seconds, m.pending, m.ackPending)
	// Every series exists from the start, so that an alert on its increase sees the first error.
	for _, op := range []string{opClaim, opCommit, opRelease} {
		for _, k := range dedupe.Kinds {
			m.dedupeErrors.WithLabelValues(op, k)
		}
	}
	return m
}

func (m *Metrics) observe(typ, outcome string, d time.Duration) {
	if typ == "" {
		typ = "unknown"
	}
	m.processed.WithLabelValues(typ, outcome).Inc()
	m.seconds.Observe(d.Seconds())
}

// meteredDeduper counts the errors of the Deduper it wraps by operation and kind, leaving the errors and
// what the processor does with them unchanged: a decorator, so that the processor stays about processing.
type meteredDeduper struct {
	Deduper
	errs *prometheus.CounterVec
}

func (m meteredDeduper) Claim(ctx context.Context, key string) (dedupe.Claim, error) {
	c, err := m.Deduper.Claim(ctx, key)
	m.count(opClaim, err)
	return c, err
}

func (m meteredDeduper) Commit(ctx context.Context, c dedupe.Claim) (dedupe.CommitResult, error) {
	r, err := m.Deduper.Commit(ctx, c)
	m.count(opCommit, err)
	return r, err
}

func (m meteredDeduper) Release(ctx context.Context, c dedupe.Claim) error {
	err := m.Deduper.Release(ctx, c)
	m.count(opRelease, err)
	return err
}

func (m meteredDeduper) count(op string, err error) {
	if err != nil {
		m.errs.WithLabelValues(op, dedupe.ErrorKind(err)).Inc()
	}
}

// meteredBatchDeduper is meteredDeduper for a BatchDeduper: each fact's error of a batch counts as one
// failed call, as it would have been one.
type meteredBatchDeduper struct {
	meteredDeduper
	batch BatchDeduper
}

func (m meteredBatchDeduper) ClaimMany(ctx context.Context, keys []string) ([]dedupe.Claim, []error) {
	cs, errs := m.batch.ClaimMany(ctx, keys)
	m.countAll(opClaim, errs)
	return cs, errs
}

func (m meteredBatchDeduper) CommitMany(ctx context.Context, cs []dedupe.Claim) ([]dedupe.CommitResult, []error) {
	res, errs := m.batch.CommitMany(ctx, cs)
	m.countAll(opCommit, errs)
	return res, errs
}

func (m meteredBatchDeduper) ReleaseMany(ctx context.Context, cs []dedupe.Claim) []error {
	errs := m.batch.ReleaseMany(ctx, cs)
	m.countAll(opRelease, errs)
	return errs
}

func (m meteredBatchDeduper) countAll(op string, errs []error) {
	for _, err := range errs {
		m.count(op, err)
	}
}

// metered wraps d to count its errors, keeping its batch methods if it has them.
func metered(d Deduper, errs *prometheus.CounterVec) Deduper {
	m := meteredDeduper{Deduper: d, errs: errs}
	if b, ok := d.(BatchDeduper); ok {
		return meteredBatchDeduper{meteredDeduper: m, batch: b}
	}
	return m
}
