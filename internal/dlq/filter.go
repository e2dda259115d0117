package dlq

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// ErrBadFilter means a filter value cannot select anything; the wrapped text names the filter.
var ErrBadFilter = errors.New("dlq: bad filter")

// Filter selects entries. The zero Filter selects every entry.
type Filter struct {
	Reasons    []string  // dead-letter reasons (subject tokens)
	MchIDs     []string  // merchants (subject tokens)
	EventTypes []string  // WeChat event types (REFUND.SUCCESS) or domain type patterns (refund.*)
	Since      time.Time // stored at or after; zero: no bound
	Until      time.Time // stored before; zero: no bound
	From, To   uint64    // DLQ sequences, inclusive; 0: open
	Limit      int       // at most this many; 0: no limit
}

// Validate reports a filter that cannot be used, naming it.
func (f Filter) Validate() error {
	for _, list := range []struct {
		name   string
		values []string
	}{{"reason", f.Reasons}, {"mchid", f.MchIDs}} {
		for _, v := range list.values {
			if v == "" || strings.ContainsAny(v, ".*> \t") {
				return fmt.Errorf("%w: %s %q is not a subject token", ErrBadFilter, list.name, v)
			}
		}
	}
	for _, et := range f.EventTypes {
		if _, err := path.Match(et, ""); err != nil {
			return fmt.Errorf("%w: event type %q: %w", ErrBadFilter, et, err)
		}
	}
	if f.Limit < 0 {
		return fmt.Errorf("%w: limit %d is negative", ErrBadFilter, f.Limit)
	}
	if f.To > 0 && f.To < f.From {
		return fmt.Errorf("%w: sequence range %d-%d is empty", ErrBadFilter, f.From, f.To)
	}
	return nil
}

// Subjects are the DLQ filter subjects of the reason and merchant filters.
func (f Filter) Subjects() []string {
	reasons, mchids := f.Reasons, f.MchIDs
	if len(reasons) == 0 {
		reasons = []string{"*"}
	}
	if len(mchids) == 0 {
		mchids = []string{"*"}
	}
	var out []string
	for _, r := range reasons {
		for _, m := range mchids {
			if s := topology.DLQSubject(r, m); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// MatchEventType reports whether a notification's WeChat event type passes the event-type filter: equal
// to a WeChat event type given (any letter case), or its domain type matching a pattern given.
func (f Filter) MatchEventType(eventType string) bool {
	if len(f.EventTypes) == 0 {
		return true
	}
	domain := ""
	for _, m := range events.Mappings() {
		if m.EventType == eventType {
			domain = m.Type
		}
	}
	for _, want := range f.EventTypes {
		if strings.EqualFold(want, eventType) {
			return true
		}
		if ok, _ := path.Match(want, domain); ok && domain != "" {
			return true
		}
	}
	return false
}

// ParseSeqRange reads "N", "A-B" or "A-" into an inclusive range (to 0: open).
func ParseSeqRange(v string) (from, to uint64, err error) {
	a, b, isRange := strings.Cut(v, "-")
	if from, err = strconv.ParseUint(a, 10, 64); err != nil || from == 0 {
		return 0, 0, fmt.Errorf("%w: sequence %q: use N, A-B or A-", ErrBadFilter, v)
	}
	if !isRange {
		return from, from, nil
	}
	if b == "" {
		return from, 0, nil
	}
	if to, err = strconv.ParseUint(b, 10, 64); err != nil || to < from {
		return 0, 0, fmt.Errorf("%w: sequence %q: use N, A-B or A- with A ≤ B", ErrBadFilter, v)
	}
	return from, to, nil
}

// ParseWhen reads an RFC 3339 time or a duration before now ("2h"); "" is the zero time.
func ParseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%w: %q is neither an RFC 3339 time nor a duration such as 90m", ErrBadFilter, v)
	}
	return now.Add(-d), nil
}
