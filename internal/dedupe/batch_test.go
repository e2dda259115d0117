package dedupe_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
)

// claimMany claims keys in one round trip and checks each key's state against want, in order.
func claimMany(t *testing.T, d *dedupe.Redis, keys []string, want []dedupe.State) []dedupe.Claim {
	t.Helper()
	cs, errs := d.ClaimMany(t.Context(), keys)
	if len(cs) != len(keys) || len(errs) != len(keys) {
		t.Fatalf("ClaimMany(%d keys): %d claims, %d errors", len(keys), len(cs), len(errs))
	}
	for i, k := range keys {
		if errs[i] != nil {
			t.Fatalf("ClaimMany: %s: %v", k, errs[i])
		}
		if cs[i].State != want[i] || cs[i].Key != k {
			t.Fatalf("ClaimMany: %s = %+v, want state %v", k, cs[i], want[i])
		}
		if (cs[i].Token != "") != (want[i] == dedupe.Claimed) {
			t.Fatalf("ClaimMany: %s = %+v: a token belongs to Claimed only", k, cs[i])
		}
	}
	return cs
}

// The batch methods keep the single calls' meaning key by key: a new fact is claimed, a done one is
// Done, another worker's live lease is Busy, the same key twice in one batch is one lease and one Busy;
// commits say what they found per key, and a release frees only its own lease.
func TestBatchIsClaimKeyByKey(t *testing.T) {
	e := setup(t, dedupe.Options{})
	done := claim(t, e.d, "done", dedupe.Claimed)
	commit(t, e.d, done, dedupe.Committed)
	other := claim(t, e.d, "other-worker", dedupe.Claimed)

	keys := []string{"new-1", "done", "other-worker", "new-2", "twice", "twice", "expires", "taken", "release-me"}
	cs := claimMany(t, e.d, keys, []dedupe.State{
		dedupe.Claimed, dedupe.Done, dedupe.Busy, dedupe.Claimed, dedupe.Claimed, dedupe.Busy, dedupe.Claimed, dedupe.Claimed, dedupe.Claimed,
	})
	if cs[0].Token == cs[3].Token {
		t.Fatal("two claims of one batch share a token")
	}
	for _, k := range []string{"new-1", "new-2", "twice", "release-me"} {
		if v := e.value(t, k); v == "<absent>" || v == "1" {
			t.Fatalf("%s after ClaimMany: %q, want a lease", k, v)
		}
	}
	within(t, "lease PTTL", e.pttl(t, "new-1"), dedupe.DefaultLease, 5*time.Second)

	// "expires": the lease ran out and nobody claimed it since; "taken": it ran out and another
	// worker claimed it.
	e.expire(t, "expires")
	e.expire(t, "taken")
	claim(t, e.d, "taken", dedupe.Claimed)

	commitIdx := []int{0, 3, 4, 6, 7}
	toCommit := make([]dedupe.Claim, 0, len(commitIdx)+1)
	for _, i := range commitIdx {
		toCommit = append(toCommit, cs[i])
	}
	toCommit = append(toCommit, cs[1]) // a Done claim owns nothing: refused, as Commit refuses it
	res, errs := e.d.CommitMany(t.Context(), toCommit)
	want := []dedupe.CommitResult{dedupe.Committed, dedupe.Committed, dedupe.Committed, dedupe.LeaseExpired, dedupe.LeaseTaken}
	for i, w := range want {
		if errs[i] != nil || res[i] != w {
			t.Errorf("CommitMany: %s = %v, %v; want %v", toCommit[i].Key, res[i], errs[i], w)
		}
	}
	if errs[len(want)] == nil {
		t.Errorf("CommitMany of a Done claim: no error")
	}
	for _, k := range []string{"new-1", "new-2", "twice", "expires", "taken"} {
		if v := e.value(t, k); v != "1" {
			t.Errorf("%s after CommitMany: %q, want done", k, v)
		}
	}
	within(t, "done PTTL", e.pttl(t, "new-1"), dedupe.DefaultTTL, 5*time.Second)
	// Committing again reports AlreadyDone, as a retried Commit does.
	if res, errs := e.d.CommitMany(t.Context(), toCommit[:1]); errs[0] != nil || res[0] != dedupe.AlreadyDone {
		t.Errorf("second CommitMany: %v, %v; want already_done", res[0], errs[0])
	}

	// ReleaseMany: its own lease goes; a Busy or Done claim is left alone, as Release leaves it.
	if errs := e.d.ReleaseMany(t.Context(), []dedupe.Claim{cs[8], cs[2], cs[1]}); errors.Join(errs...) != nil {
		t.Fatalf("ReleaseMany: %v", errs)
	}
	if v := e.value(t, "release-me"); v != "<absent>" {
		t.Errorf("release-me after ReleaseMany: %q", v)
	}
	if v := e.value(t, "other-worker"); v == "<absent>" {
		t.Error("ReleaseMany of a Busy claim freed another worker's lease")
	}
	commit(t, e.d, other, dedupe.Committed)
	claimMany(t, e.d, []string{"new-1", "other-worker", "release-me"}, []dedupe.State{dedupe.Done, dedupe.Done, dedupe.Claimed})

	// Empty batches make no round trip and return empty results.
	if cs, errs := e.d.ClaimMany(t.Context(), nil); len(cs) != 0 || len(errs) != 0 {
		t.Errorf("ClaimMany(nil) = %v, %v", cs, errs)
	}
	// An empty key fails alone.
	cs, errs = e.d.ClaimMany(t.Context(), []string{"", "alone"})
	if errs[0] == nil || errs[1] != nil || cs[1].State != dedupe.Claimed {
		t.Errorf("ClaimMany with an empty key: %+v, %v", cs, errs)
	}
}

// A Redis that lost its scripts (restarted, failed over, SCRIPT FLUSH) still answers a batch: the
// pipeline's NOSCRIPT calls are sent again with the script.
func TestBatchAfterScriptFlush(t *testing.T) {
	e := setup(t, dedupe.Options{})
	cs := claimMany(t, e.d, []string{"a", "b"}, []dedupe.State{dedupe.Claimed, dedupe.Claimed})
	flush := func() {
		if err := e.raw.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	claimMany(t, e.d, []string{"a", "c"}, []dedupe.State{dedupe.Busy, dedupe.Claimed})
	flush()
	if res, errs := e.d.CommitMany(t.Context(), cs); errors.Join(errs...) != nil || res[0] != dedupe.Committed || res[1] != dedupe.Committed {
		t.Fatalf("CommitMany after SCRIPT FLUSH: %v, %v", res, errs)
	}
	flush()
	c := claimMany(t, e.d, []string{"d"}, []dedupe.State{dedupe.Claimed})
	flush()
	if errs := e.d.ReleaseMany(t.Context(), c); errs[0] != nil {
		t.Fatalf("ReleaseMany after SCRIPT FLUSH: %v", errs[0])
	}
	if v := e.value(t, "d"); v != "<absent>" {
		t.Fatalf("d after ReleaseMany: %q", v)
	}
}

// A full Redis (noeviction) refuses each new fact of a batch with its own OOM error, while the batch's
// facts already done are recognised and its published facts still get their done mark.
func TestBatchWhenRedisIsFull(t *testing.T) {
	e := setup(t, dedupe.Options{})
	done := claim(t, e.d, "done", dedupe.Claimed)
	commit(t, e.d, done, dedupe.Committed)
	inFlight := claim(t, e.d, "in-flight", dedupe.Claimed)
	fill(t, e.raw)

	cs, errs := e.d.ClaimMany(t.Context(), []string{"new", "done", "in-flight"})
	if !errors.Is(errs[0], dedupe.ErrUnavailable) || dedupe.ErrorKind(errs[0]) != dedupe.KindOOM {
		t.Fatalf("ClaimMany of a new fact on a full Redis: %v (kind %q), want ErrUnavailable of kind oom", errs[0], dedupe.ErrorKind(errs[0]))
	}
	if errs[1] != nil || cs[1].State != dedupe.Done || errs[2] != nil || cs[2].State != dedupe.Busy {
		t.Fatalf("ClaimMany on a full Redis: done %+v %v, in-flight %+v %v", cs[1], errs[1], cs[2], errs[2])
	}
	if res, errs := e.d.CommitMany(t.Context(), []dedupe.Claim{inFlight}); errs[0] != nil || res[0] != dedupe.Committed {
		t.Fatalf("CommitMany on a full Redis: %v, %v", res[0], errs[0])
	}
}

// Redis down: every key of a batch is ErrUnavailable, within the caller's deadline.
func TestBatchRedisDownIsUnavailable(t *testing.T) {
	e := setup(t, dedupe.Options{})
	held := claim(t, e.d, "held", dedupe.Claimed)
	e.srv.Stop()
	const deadline = 300 * time.Millisecond
	for op, call := range map[string]func(context.Context) []error{
		"ClaimMany": func(ctx context.Context) []error { _, errs := e.d.ClaimMany(ctx, []string{"k1", "k2"}); return errs },
		"CommitMany": func(ctx context.Context) []error {
			_, errs := e.d.CommitMany(ctx, []dedupe.Claim{held, held})
			return errs
		},
		"ReleaseMany": func(ctx context.Context) []error { return e.d.ReleaseMany(ctx, []dedupe.Claim{held, held}) },
	} {
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		begin := time.Now()
		errs := call(ctx)
		took := time.Since(begin)
		cancel()
		for i, err := range errs {
			if !errors.Is(err, dedupe.ErrUnavailable) {
				t.Errorf("%s with Redis down: key %d: %v, want ErrUnavailable", op, i, err)
			}
		}
		if took > deadline+time.Second {
			t.Errorf("%s with Redis down took %v, beyond its %v deadline", op, took, deadline)
		}
	}
}

// During the legacy window a batch honours facts done (or being published) under the previous key
// format, as Claim does, and claims the rest.
func TestBatchHonoursLegacyFacts(t *testing.T) {
	e := setup(t, dedupe.Options{})
	legacyDone(t, e.raw, paymentKey)
	if err := e.raw.Set(t.Context(), dedupe.LegacyPrefix+"leased", "processing:OLDTOKEN", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.raw.Set(t.Context(), dedupe.LegacyPrefix+"foreign", "payload", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: e.srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	upgraded := dedupe.NewRedis(c, dedupe.Options{Prefix: prefix, LegacyUntil: time.Now().Add(time.Hour)})
	cs, errs := upgraded.ClaimMany(t.Context(), []string{paymentKey, "leased", "new-fact", "foreign"})
	if errs[0] != nil || cs[0].State != dedupe.Done || errs[1] != nil || cs[1].State != dedupe.Busy ||
		errs[2] != nil || cs[2].State != dedupe.Claimed {
		t.Fatalf("ClaimMany in the legacy window: %+v, %v", cs, errs)
	}
	if !errors.Is(errs[3], dedupe.ErrUnexpectedValue) {
		t.Fatalf("ClaimMany over a foreign value under the previous format: %v, want ErrUnexpectedValue", errs[3])
	}
	over := dedupe.NewRedis(c, dedupe.Options{Prefix: prefix, LegacyUntil: time.Now().Add(-time.Second)})
	claimMany(t, over, []string{paymentKey}, []dedupe.State{dedupe.Claimed})
	if n, err := e.raw.Exists(t.Context(), dedupe.LegacyPrefix+"new-fact").Result(); err != nil || n != 0 {
		t.Fatalf("a new fact was written under the previous format (%d, %v)", n, err)
	}
}

// BenchmarkClaimCommitMany: 16 facts claimed and committed in two round trips; compare
// BenchmarkClaimCommit's one fact in two.
func BenchmarkClaimCommitMany(b *testing.B) {
	e := setup(b, dedupe.Options{})
	ctx := context.Background()
	keys := make([]string, 16)
	var n atomic.Int64 // shared, as -count reruns against the same server
	b.ReportAllocs()
	for b.Loop() {
		for i := range keys {
			keys[i] = "many:" + strconv.FormatInt(n.Add(1), 10)
		}
		cs, errs := e.d.ClaimMany(ctx, keys)
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		if _, errs := e.d.CommitMany(ctx, cs); errors.Join(errs...) != nil {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*len(keys)), "µs/fact")
}
