package consumer

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the consumer's Prometheus metrics.
type Metrics struct {
	processed  *prometheus.CounterVec
	dlq        *prometheus.CounterVec
	leaseLost  *prometheus.CounterVec
	seconds    prometheus.Histogram
	pending    prometheus.Gauge
	ackPending prometheus.Gauge
}

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
	reg.MustRegister(m.processed, m.dlq, m.leaseLost, m.seconds, m.pending, m.ackPending)
	return m
}

func (m *Metrics) observe(typ, outcome string, d time.Duration) {
	if typ == "" {
		typ = "unknown"
	}
	m.processed.WithLabelValues(typ, outcome).Inc()
	m.seconds.Observe(d.Seconds())
}
