package receiver

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the receiver's Prometheus metrics.
type Metrics struct {
	requests       *prometheus.CounterVec
	verifyFailures *prometheus.CounterVec
	publishSeconds prometheus.Histogram
	requestSeconds prometheus.Histogram
}

// NewMetrics registers the receiver's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	// Buckets reach past WeChat Pay's 5 s deadline so that a breach shows.
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2, 3, 5, 10}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_receiver_requests_total",
			Help: "Notification requests answered, by HTTP status code and reason (stored, duplicate, probe, stale_timestamp, …).",
		}, []string{"code", "reason"}),
		verifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_receiver_verify_failures_total",
			Help: "Signature verification failures by check; reason=\"probe\" counts WeChat Pay's deliberate WECHATPAY/SIGNTEST/ probes apart.",
		}, []string{"reason"}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wxpay_receiver_publish_seconds",
			Help:    "Time from publishing a verified notification to JetStream's acknowledgement (or the give-up).",
			Buckets: buckets,
		}),
		requestSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wxpay_receiver_request_seconds",
			Help:    "Time to answer a notification request, end to end in the handler.",
			Buckets: buckets,
		}),
	}
	reg.MustRegister(m.requests, m.verifyFailures, m.publishSeconds, m.requestSeconds)
	return m
}

func (m *Metrics) observeRequest(code int, reason string, d time.Duration) {
	m.requests.WithLabelValues(strconv.Itoa(code), reason).Inc()
	m.requestSeconds.Observe(d.Seconds())
}
