package events_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/events"
)

// TestInconsistent: a correctly signed resource that does not say what its event type claims, or names
// another merchant, is never an event: ErrInconsistent, naming the field and never its value.
func TestInconsistent(t *testing.T) {
	pay := sample(t, "TRANSACTION.SUCCESS")
	tests := []struct {
		name, eventType string
		plaintext       []byte
		field           string
	}{
		{"payment not paid", "TRANSACTION.SUCCESS", setField(t, pay, "trade_state", `"NOTPAID"`), "trade_state"},
		{"payment without trade_state", "TRANSACTION.SUCCESS", setField(t, pay, "trade_state", ""), "trade_state"},
		{"negative amount", "TRANSACTION.SUCCESS", setField(t, pay, "amount", `{"total":-100}`), "amount.total"},
		{"zero amount", "TRANSACTION.SUCCESS", setField(t, pay, "amount", `{"total":0}`), "amount.total"},
		{"null amount", "TRANSACTION.SUCCESS", setField(t, pay, "amount", `null`), "amount.total"},
		{"no amount", "TRANSACTION.SUCCESS", setField(t, pay, "amount", ""), "amount.total"},
		{"another merchant's payment", "TRANSACTION.SUCCESS", setField(t, pay, "mchid", `"1900000999"`), "mchid"},
		{"payment naming no merchant", "TRANSACTION.SUCCESS", setField(t, pay, "mchid", ""), "mchid"},
		{"another provider's partner payment", "TRANSACTION.SUCCESS", setField(t, sample(t, "TRANSACTION.SUCCESS.partner"), "sp_mchid", `"1900000999"`), "sp_mchid"},
		{"combined payment of another merchant", "TRANSACTION.SUCCESS", setField(t, sample(t, "TRANSACTION.SUCCESS.combine"), "combine_mchid", `"1900000999"`), "combine_mchid"},
		{"parking deduction not paid", "TRANSACTION.SUCCESS", setField(t, sample(t, "TRANSACTION.SUCCESS.parking"), "trade_state", `"FAIL"`), "trade_state"},
		{"failed deduction that succeeded", "TRANSACTION.FAIL", setField(t, sample(t, "TRANSACTION.FAIL"), "trade_state", `"SUCCESS"`), "trade_state"},
		{"repaid deduction of another provider", "TRANSACTION.PAY_BACK", setField(t, sample(t, "TRANSACTION.PAY_BACK"), "sp_mchid", `"1900000999"`), "sp_mchid"},
		{"refund.succeeded that is closed", "REFUND.SUCCESS", setField(t, sample(t, "REFUND.SUCCESS"), "refund_status", `"CLOSED"`), "refund_status"},
		{"refund.closed that succeeded", "REFUND.CLOSED", setField(t, sample(t, "REFUND.CLOSED"), "refund_status", `"SUCCESS"`), "refund_status"},
		{"refund of nothing", "REFUND.SUCCESS", setField(t, sample(t, "REFUND.SUCCESS"), "amount", `{"total":999,"refund":0}`), "amount.refund"},
		{"another merchant's refund", "REFUND.ABNORMAL", setField(t, sample(t, "REFUND.ABNORMAL"), "mchid", `"1900000999"`), "mchid"},
		{"another provider's parking entrance", "VEHICLE.ENTRANCE_STATE_CHANGE", setField(t, sample(t, "VEHICLE.ENTRANCE_STATE_CHANGE"), "sp_mchid", `"1900000999"`), "sp_mchid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := events.Build(notification(tt.eventType), tt.plaintext)
			if !errors.Is(err, events.ErrInconsistent) || len(evs) != 0 {
				t.Fatalf("Build = %d events, %v; want ErrInconsistent", len(evs), err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
			if strings.Contains(err.Error(), "1900000999") || strings.Contains(err.Error(), "NOTPAID") {
				t.Errorf("error %q quotes a value", err)
			}
		})
	}

	// A sub-merchant with an account of its own receives notifications that name it as sub_mchid.
	n := notification("TRANSACTION.SUCCESS")
	n.MchID = "1900000109"
	partner := setField(t, sample(t, "TRANSACTION.SUCCESS.partner"), "sp_mchid", `"1900000999"`)
	if _, err := events.Build(n, partner); err != nil {
		t.Errorf("a sub-merchant's own notification: %v", err)
	}
}

// TestBounds: a resource nested beyond MaxDepth, or whose data would exceed MaxDataBytes, is ErrTooLarge,
// not an event that common JSON clients cannot parse.
func TestBounds(t *testing.T) {
	base := strings.TrimSuffix(strings.TrimSpace(string(sample(t, "VIOLATION.PUNISH"))), "}")
	deep := base + `,"x":` + strings.Repeat(`[`, 4000) + strings.Repeat(`]`, 4000) + `}`
	var wide strings.Builder
	wide.WriteString(base)
	for i := range 10000 {
		fmt.Fprintf(&wide, `,"f%05d":0`, i)
	}
	wide.WriteString(`}`)
	atLimit := base + `,"x":` + strings.Repeat(`[`, events.MaxDepth-1) + strings.Repeat(`]`, events.MaxDepth-1) + `}`
	for name, plaintext := range map[string]string{"4000 levels deep": deep, "10,000 unknown fields": wide.String()} {
		if _, err := events.Build(notification("VIOLATION.PUNISH"), []byte(plaintext)); !errors.Is(err, events.ErrTooLarge) {
			t.Errorf("%s: %v, want ErrTooLarge", name, err)
		}
	}
	if _, err := events.Build(notification("VIOLATION.PUNISH"), []byte(atLimit)); err != nil {
		t.Errorf("%d levels: %v", events.MaxDepth, err)
	}
}
