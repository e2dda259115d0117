// Package wait is the tests' one way to wait for a condition that no event announces: poll it, and fail
// the test with what was awaited when it does not come in time.
package wait

import (
	"testing"
	"time"
)

// Options tune For; the zero value polls every 20 ms for 10 s.
type Options struct {
	Timeout  time.Duration
	Interval time.Duration
	// OnTimeout, when set, adds context to the failure (recent log lines, say).
	OnTimeout func() string
}

// For polls cond until it holds, failing t with what after the timeout.
func For(t testing.TB, what string, cond func() bool, o Options) {
	t.Helper()
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Interval <= 0 {
		o.Interval = 20 * time.Millisecond
	}
	deadline := time.Now().Add(o.Timeout)
	tick := time.NewTicker(o.Interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			extra := ""
			if o.OnTimeout != nil {
				extra = "\n" + o.OnTimeout()
			}
			t.Fatalf("timed out after %s waiting for %s%s", o.Timeout, what, extra)
		}
		<-tick.C
	}
}
