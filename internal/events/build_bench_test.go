package events_test

import (
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/events"
)

// BenchmarkBuildCombined is BenchmarkBuild for a combined payment (合单): one event per sub-order, each
// encoded as a CloudEvent.
func BenchmarkBuildCombined(b *testing.B) {
	plaintext := sample(b, "TRANSACTION.SUCCESS.combine")
	n := notification("TRANSACTION.SUCCESS")
	b.SetBytes(int64(len(plaintext)))
	b.ReportAllocs()
	for b.Loop() {
		evs, err := events.Build(n, plaintext)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range evs {
			if _, err := e.CloudEvent(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
