package console

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"
)

const exposition = `# HELP wxpay_receiver_requests_total Notification requests answered.
# TYPE wxpay_receiver_requests_total counter
wxpay_receiver_requests_total{code="204",reason="stored"} 41
wxpay_receiver_requests_total{code="204",reason="duplicate"} 2
wxpay_receiver_requests_total{code="401",reason="bad_signature"} 3
wxpay_receiver_requests_total{code="401",reason="probe"} 1
# HELP wxpay_consumer_dlq_total Notifications dead-lettered, by reason.
# TYPE wxpay_consumer_dlq_total counter
wxpay_consumer_dlq_total{reason="decrypt_failed"} 4
# HELP go_goroutines Number of goroutines.
# TYPE go_goroutines gauge
go_goroutines 12
`

func TestSumBy(t *testing.T) {
	families, err := parseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		metric string
		by     []string
		want   map[string]float64
	}{
		{"wxpay_receiver_requests_total", []string{"code", "reason"}, map[string]float64{"204 stored": 41, "204 duplicate": 2, "401 bad_signature": 3, "401 probe": 1}},
		{"wxpay_receiver_requests_total", []string{"code"}, map[string]float64{"204": 43, "401": 4}},
		{"wxpay_receiver_requests_total", nil, map[string]float64{"": 47}},
		{"wxpay_consumer_dlq_total", []string{"reason"}, map[string]float64{"decrypt_failed": 4}},
		{"wxpay_consumer_processed_total", []string{"outcome"}, map[string]float64{}}, // not exposed (yet)
	} {
		if got := sumBy(families[tc.metric], tc.by); !maps.Equal(got, tc.want) {
			t.Errorf("%s by %v: %v, want %v", tc.metric, tc.by, got, tc.want)
		}
	}
	if _, err := parseMetrics(strings.NewReader("wxpay_x{code=\"204\" 1\n")); err == nil {
		t.Error("a broken exposition parses")
	}
}

func TestRates(t *testing.T) {
	s := newScraper(nil)
	t0 := time.Unix(1_700_000_000, 0)
	at := func(d time.Duration, v float64) sample {
		return sample{at: t0.Add(d), values: map[string]float64{"answers": v}}
	}
	for _, tc := range []struct {
		name     string
		cur      sample
		wantBase bool
		wantRate float64 // per second, when a base is found
	}{
		{"the first scrape has no baseline", at(0, 10), false, 0},
		{"half a second later is too soon", at(500*time.Millisecond, 11), false, 0},
		{"ten seconds later: against the first", at(10*time.Second, 30), true, 2},
		{"two minutes later: the first is out of the window", at(2*time.Minute, 90), false, 0},
		{"and five seconds after that: against the last", at(2*time.Minute+5*time.Second, 100), true, 2},
	} {
		base := s.remember("receiver", tc.cur)
		if (base != nil) != tc.wantBase {
			t.Fatalf("%s: baseline %v, want one: %v", tc.name, base, tc.wantBase)
		}
		if base != nil {
			r := rate(base.values, "answers", tc.cur.values["answers"], tc.cur.at.Sub(base.at).Seconds())
			if r == nil || *r != tc.wantRate {
				t.Fatalf("%s: rate %v, want %v", tc.name, r, tc.wantRate)
			}
		}
	}
	if r := rate(map[string]float64{"x": 10}, "x", 3, 5); r != nil {
		t.Errorf("a counter that went down (a restart) has rate %v, want none", *r)
	}
	if r := rate(map[string]float64{}, "x", 10, 5); r == nil || *r != 2 {
		t.Errorf("a new series counts from zero: %v", r)
	}
}

func TestNormalizeAdminURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"http://receiver:9090/", "http://receiver:9090"},
		{"https://consumer.internal:9091", "https://consumer.internal:9091"},
		{"ftp://x", "error"},
		{"http://", "error"},
		{"http://user:pw@host:9090", "error"},
	} {
		got, err := NormalizeAdminURL(tc.in)
		if tc.want == "error" {
			if !errors.Is(err, ErrBadAdminURL) {
				t.Errorf("%q: %q, %v; want ErrBadAdminURL", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseEventFilter(t *testing.T) {
	for _, tc := range []struct {
		typ, mchid, sub string
		want            string // the subject filter, or "error"
	}{
		{"", "", "", "wechatpay.events.*.*.*.*"},
		{"payment.succeeded", "1900000100", "", "wechatpay.events.payment.succeeded.1900000100.*"},
		{"refund", "", "_", "wechatpay.events.refund.*.*._"},
		{"refund.*", "", "1900000109", "wechatpay.events.refund.*.*.1900000109"},
		{"REFUND.SUCCESS", "", "", "wechatpay.events.refund.succeeded.*.*"},
		{"com.wechatpay.parking.state_changed", "", "", "wechatpay.events.parking.state_changed.*.*"},
		{"*.succeeded", "", "", "wechatpay.events.*.succeeded.*.*"},
		{"payment.nonsense", "", "", "error"},
		{"payment.succeeded.x", "", "", "error"},
		{">", "", "", "error"},
		{"", "19000.00100", "", "error"},
		{"", "", "*", "error"},
	} {
		f, err := parseEventFilter(tc.typ, tc.mchid, tc.sub, "")
		if tc.want == "error" {
			if !errors.Is(err, errBadFilter) {
				t.Errorf("%q/%q/%q: %q, %v; want an error", tc.typ, tc.mchid, tc.sub, f.subject, err)
			}
			continue
		}
		if err != nil || f.subject != tc.want {
			t.Errorf("%q/%q/%q: %q, %v; want %q", tc.typ, tc.mchid, tc.sub, f.subject, err, tc.want)
		}
	}
}

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:8088": true, "localhost:8088": true, "LOCALHOST": true, "[::1]:8088": true, "127.1.2.3": true,
		"console.localhost:8088": true, "evil.example": false, "evil.example:8088": false, "10.0.0.1:8088": false,
		"localhost.evil.example": false, "": false,
	} {
		if got := loopbackHost(host); got != want {
			t.Errorf("loopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
