package dlq

import (
	"context"
	"errors"
	"time"
)

// Outcome is what became of one entry of a replay.
type Outcome struct {
	Replayed
	Error string `json:"error,omitempty"`
}

// Summary is a replay of many entries, as `wxpayctl dlq replay -o json` prints it and the console answers it.
type Summary struct {
	Matched     int       `json:"matched"`
	Replayed    int       `json:"replayed"`
	Failed      int       `json:"failed"`
	Gone        int       `json:"gone"` // removed by someone else between listing and replaying
	DryRun      bool      `json:"dry_run"`
	Interrupted bool      `json:"interrupted,omitempty"`
	Elapsed     float64   `json:"elapsed_seconds"`
	Entries     []Outcome `json:"entries"`
}

// ReplayAll replays entries one after the other, at most one per interval (0: no limit), and says what
// became of each. With dryRun it only plans them (Plan). An entry in hand is replayed to its end even if
// ctx ends meanwhile — a replay is a publish, then a delete — and ctx's end stops the next one
// (Interrupted): what is left stays in the DLQ. progress, when not nil, is called after each entry.
func (s *Store) ReplayAll(ctx context.Context, entries []Entry, dryRun bool, interval time.Duration, progress func(done int, sum *Summary)) Summary {
	start := time.Now()
	sum := Summary{Matched: len(entries), DryRun: dryRun, Entries: []Outcome{}}
	pace := &Pacer{Interval: interval}
	for i, e := range entries {
		if dryRun {
			plan, err := Plan(e)
			out := Outcome{Replayed: plan}
			if err != nil {
				out.Error = err.Error()
			}
			sum.Entries = append(sum.Entries, out)
			continue
		}
		if pace.Wait(ctx) != nil {
			sum.Interrupted = true
			break
		}
		res, err := s.Replay(context.WithoutCancel(ctx), e.Seq)
		out := Outcome{Replayed: res}
		switch {
		case errors.Is(err, ErrNotFound):
			sum.Gone++
		case err != nil:
			out.Error = err.Error()
			sum.Failed++
		default:
			sum.Replayed++
		}
		sum.Entries = append(sum.Entries, out)
		if progress != nil {
			progress(i+1, &sum)
		}
	}
	sum.Elapsed = time.Since(start).Seconds()
	return sum
}
