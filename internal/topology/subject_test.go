package topology_test

import (
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/topology"
)

func TestEventSubject(t *testing.T) {
	tests := []struct {
		typ, mchid, sub, want string
	}{
		{"payment.succeeded", "1900000100", "", "wechatpay.events.payment.succeeded.1900000100._"},
		{"refund.closed", "1900000100", "1900000109", "wechatpay.events.refund.closed.1900000100.1900000109"},
	}
	for _, tt := range tests {
		got := topology.EventSubject(tt.typ, tt.mchid, tt.sub)
		if got != tt.want {
			t.Errorf("EventSubject(%q, %q, %q) = %q, want %q", tt.typ, tt.mchid, tt.sub, got, tt.want)
		}
		p, ok := topology.ParseEventSubject(got)
		if !ok || p.Type != tt.typ || p.MchID != tt.mchid || p.Sub != tt.sub {
			t.Errorf("ParseEventSubject(%q) = %+v, %v", got, p, ok)
		}
	}
}

func TestParseEventSubject(t *testing.T) {
	tests := []struct {
		subject string
		want    topology.EventSubjectParts
		ok      bool
	}{
		// The layout before sub-merchant tokens, still in a stream's 30-day history.
		{"wechatpay.events.payment.succeeded.1900000100", topology.EventSubjectParts{Type: "payment.succeeded", MchID: "1900000100"}, true},
		{"wechatpay.events.payment.succeeded.1900000100._", topology.EventSubjectParts{Type: "payment.succeeded", MchID: "1900000100"}, true},
		{"wechatpay.events.payment.succeeded.1900000100.1900000109", topology.EventSubjectParts{Type: "payment.succeeded", MchID: "1900000100", Sub: "1900000109"}, true},
		{"wechatpay.events.payment.succeeded", topology.EventSubjectParts{}, false},
		{"wechatpay.events.payment.succeeded.1.2.3", topology.EventSubjectParts{}, false},
		{"wechatpay.events.payment..1900000100._", topology.EventSubjectParts{}, false},
		{"wechatpay.inbound.1900000100.transaction.success", topology.EventSubjectParts{}, false},
	}
	for _, tt := range tests {
		got, ok := topology.ParseEventSubject(tt.subject)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseEventSubject(%q) = %+v, %v; want %+v, %v", tt.subject, got, ok, tt.want, tt.ok)
		}
	}
}

func TestEventFilter(t *testing.T) {
	tests := []struct{ typ, mchid, sub, want string }{
		{"", "", "", "wechatpay.events.*.*.*.*"},
		{"refund.*", "1900000100", "", "wechatpay.events.refund.*.1900000100.*"},
		{"payment.succeeded", "1900000100", "1900000109", "wechatpay.events.payment.succeeded.1900000100.1900000109"},
		{"", "", topology.NoSubMerchant, "wechatpay.events.*.*.*._"},
	}
	for _, tt := range tests {
		if got := topology.EventFilter(tt.typ, tt.mchid, tt.sub); got != tt.want {
			t.Errorf("EventFilter(%q, %q, %q) = %q, want %q", tt.typ, tt.mchid, tt.sub, got, tt.want)
		}
	}
}
