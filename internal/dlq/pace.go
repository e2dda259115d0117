package dlq

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseRate reads "N/s", "N/m" or "N" (per second) into the interval between two operations; "" is 0 (no
// limit).
func ParseRate(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(v, "/")
	per := time.Second
	switch unit {
	case "", "s", "sec":
	case "m", "min":
		per = time.Minute
	default:
		return 0, fmt.Errorf("%w: rate %q: use N/s or N/m", ErrBadFilter, v)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: rate %q: use a positive rate such as 20/s", ErrBadFilter, v)
	}
	return time.Duration(float64(per) / n), nil
}

// Pacer spaces operations at least Interval apart: a token bucket holding one token, so that a stalled
// operation is not followed by a burst that would exceed the rate.
type Pacer struct {
	Interval time.Duration
	next     time.Time // earliest start of the next operation; zero before the first
}

// Wait blocks until the next operation may start, or ctx ends.
func (p *Pacer) Wait(ctx context.Context) error {
	if p.Interval <= 0 {
		return ctx.Err()
	}
	if d := time.Until(p.next); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	p.next = time.Now().Add(p.Interval)
	return ctx.Err()
}
