package certs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the downloaders' Prometheus metrics, shared by every account of a process. A nil *Metrics
// counts nothing (Stats still does).
type Metrics struct {
	downloads   *prometheus.CounterVec
	limited     *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	held        *prometheus.GaugeVec
}

// NewMetrics registers the certificate metrics with reg. An alert on the last success's age catches a
// merchant whose refreshes keep failing long before a rotation turns that into rejected notifications.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		downloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_platform_cert_downloads_total",
			Help: "Platform certificate downloads by merchant, trigger (start, periodic, on_demand) and outcome (ok, failed).",
		}, []string{"mchid", "trigger", "outcome"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wxpay_platform_cert_refresh_rate_limited_total",
			Help: "On-demand refreshes (unknown Wechatpay-Serial) refused because a download ran less than a minute before.",
		}, []string{"mchid"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_platform_cert_last_success_timestamp_seconds",
			Help: "Unix time of the last successful platform certificate download, by merchant.",
		}, []string{"mchid"}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wxpay_platform_certs",
			Help: "Platform certificates held for verification after the last download, by merchant.",
		}, []string{"mchid"}),
	}
	reg.MustRegister(m.downloads, m.limited, m.lastSuccess, m.held)
	return m
}

func (m *Metrics) download(mchid, trigger string, ok bool) {
	if m == nil {
		return
	}
	outcome := "failed"
	if ok {
		outcome = "ok"
	}
	m.downloads.WithLabelValues(mchid, trigger, outcome).Inc()
}

func (m *Metrics) rateLimited(mchid string) {
	if m == nil {
		return
	}
	m.limited.WithLabelValues(mchid).Inc()
}

func (m *Metrics) installed(mchid string, n int, at time.Time) {
	if m == nil {
		return
	}
	m.held.WithLabelValues(mchid).Set(float64(n))
	m.lastSuccess.WithLabelValues(mchid).Set(float64(at.Unix()))
}
