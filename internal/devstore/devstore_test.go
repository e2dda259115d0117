package devstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/devstore"
	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
)

var _ consumer.Deduper = (*devstore.Store)(nil)

func connect(t *testing.T, s *natstest.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func newStore(t *testing.T, js jetstream.JetStream, o devstore.Options) *devstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := devstore.New(ctx, js, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func claim(t *testing.T, s *devstore.Store, key string) dedupe.Claim {
	t.Helper()
	c, err := s.Claim(ctx(t), key)
	if err != nil {
		t.Fatalf("claim %s: %v", key, err)
	}
	return c
}

// waitFor polls cond until it holds; TTLs are enforced by the server in whole seconds.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	wait.For(t, what, cond, wait.Options{Timeout: timeout, Interval: 50 * time.Millisecond})
}

// A key as the consumer makes them: colons, dots, %-escapes.
const key = "1900000100:refund.succeeded:50200207182018070300011301001:SUCCESS"

func TestClaimCommitDone(t *testing.T) {
	s := newStore(t, connect(t, natstest.Start(t)), devstore.Options{})
	c := claim(t, s, key)
	if c.State != dedupe.Claimed || c.Token == "" {
		t.Fatalf("first claim: %+v", c)
	}
	if again := claim(t, s, key); again.State != dedupe.Busy || again.Token != "" {
		t.Fatalf("claim while leased: %+v", again)
	}
	res, err := s.Commit(ctx(t), c)
	if err != nil || res != dedupe.Committed {
		t.Fatalf("commit: %v %v", res, err)
	}
	if again := claim(t, s, key); again.State != dedupe.Done {
		t.Fatalf("claim after commit: %+v", again)
	}
	// Committing again changes nothing and says so.
	if res, err := s.Commit(ctx(t), c); err != nil || res != dedupe.AlreadyDone {
		t.Fatalf("second commit: %v %v", res, err)
	}
	// Other keys are independent, including ones that differ only where the key is escaped.
	for _, k := range []string{key + "x", "1900000100:refund.succeeded:50200207182018070300011301001%3ASUCCESS", "1900000100:refund:succeeded:50200207182018070300011301001:SUCCESS"} {
		if c := claim(t, s, k); c.State != dedupe.Claimed {
			t.Fatalf("claim %s: %+v", k, c)
		}
	}
}

func TestRelease(t *testing.T) {
	s := newStore(t, connect(t, natstest.Start(t)), devstore.Options{})
	t.Run("by owner frees the key", func(t *testing.T) {
		c := claim(t, s, "k1")
		if err := s.Release(ctx(t), c); err != nil {
			t.Fatal(err)
		}
		if again := claim(t, s, "k1"); again.State != dedupe.Claimed {
			t.Fatalf("claim after release: %+v", again)
		}
	})
	t.Run("by a stale claim does nothing", func(t *testing.T) {
		first := claim(t, s, "k2")
		if err := s.Release(ctx(t), first); err != nil {
			t.Fatal(err)
		}
		second := claim(t, s, "k2")
		if err := s.Release(ctx(t), first); err != nil { // late release of the first claim
			t.Fatal(err)
		}
		if c := claim(t, s, "k2"); c.State != dedupe.Busy {
			t.Fatalf("the late release freed another worker's lease: %+v", c)
		}
		if res, err := s.Commit(ctx(t), second); err != nil || res != dedupe.Committed {
			t.Fatalf("commit: %v %v", res, err)
		}
		if err := s.Release(ctx(t), second); err != nil {
			t.Fatal(err)
		}
		if c := claim(t, s, "k2"); c.State != dedupe.Done {
			t.Fatalf("a release after commit forgot the fact: %+v", c)
		}
	})
	t.Run("of claims not owned does nothing", func(t *testing.T) {
		for _, c := range []dedupe.Claim{{Key: "k2", State: dedupe.Done}, {Key: "k2", State: dedupe.Busy}, {}} {
			if err := s.Release(ctx(t), c); err != nil {
				t.Fatalf("release %+v: %v", c, err)
			}
		}
	})
}

func TestExpiredLease(t *testing.T) {
	s := newStore(t, connect(t, natstest.Start(t)), devstore.Options{Lease: time.Second})
	t.Run("is reclaimed", func(t *testing.T) {
		first := claim(t, s, "lease")
		var second dedupe.Claim
		waitFor(t, 5*time.Second, "the lease to expire", func() bool {
			second = claim(t, s, "lease")
			return second.State == dedupe.Claimed
		})
		// The first worker finishes late: it overwrites the second's lease with done and says so.
		if res, err := s.Commit(ctx(t), first); err != nil || res != dedupe.LeaseTaken {
			t.Fatalf("late commit: %v %v", res, err)
		}
		if res, err := s.Commit(ctx(t), second); err != nil || res != dedupe.AlreadyDone {
			t.Fatalf("second commit: %v %v", res, err)
		}
	})
	t.Run("committed late without a rival", func(t *testing.T) {
		c := claim(t, s, "late")
		time.Sleep(1100 * time.Millisecond) // past the lease's deadline (not waiting on a condition: the point is lateness)
		if res, err := s.Commit(ctx(t), c); err != nil || res != dedupe.LeaseExpired {
			t.Fatalf("late commit: %v %v", res, err)
		}
		if again := claim(t, s, "late"); again.State != dedupe.Done {
			t.Fatalf("claim after late commit: %+v", again)
		}
	})
}

func TestDoneExpiresAfterTTL(t *testing.T) {
	s := newStore(t, connect(t, natstest.Start(t)), devstore.Options{TTL: time.Second})
	c := claim(t, s, "fact")
	if _, err := s.Commit(ctx(t), c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "done to expire", func() bool { return claim(t, s, "fact").State == dedupe.Claimed })
}

func TestDoneSurvivesRestart(t *testing.T) {
	srv := natstest.Start(t)
	s := newStore(t, connect(t, srv), devstore.Options{})
	c := claim(t, s, key)
	if _, err := s.Commit(ctx(t), c); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	// A new process after the restart: same bucket, same facts.
	s2 := newStore(t, connect(t, srv), devstore.Options{})
	if c := claim(t, s2, key); c.State != dedupe.Done {
		t.Fatalf("after restart: %+v", c)
	}
}

func TestTwoWorkersRacing(t *testing.T) {
	srv := natstest.Start(t)
	// Two processes, each with its own connection, four workers each, on the same 100 facts.
	stores := []*devstore.Store{newStore(t, connect(t, srv), devstore.Options{}), newStore(t, connect(t, srv), devstore.Options{})}
	const facts = 100
	var mu sync.Mutex
	published := map[string]int{}
	results := map[dedupe.CommitResult]int{}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for w := range 8 {
		s := stores[w%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range facts {
				k := fmt.Sprintf("1900000100:payment.succeeded:42%026d", (i+w*13)%facts)
				for {
					c, err := s.Claim(context.Background(), k)
					if err != nil {
						errc <- err
						return
					}
					if c.State == dedupe.Done {
						break
					}
					if c.State == dedupe.Busy {
						time.Sleep(time.Millisecond)
						continue
					}
					mu.Lock()
					published[k]++
					mu.Unlock()
					res, err := s.Commit(context.Background(), c)
					if err != nil {
						errc <- err
						return
					}
					mu.Lock()
					results[res]++
					mu.Unlock()
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(published) != facts {
		t.Fatalf("%d facts published, want %d", len(published), facts)
	}
	for k, n := range published {
		if n != 1 {
			t.Fatalf("%s published %d times", k, n)
		}
	}
	if results[dedupe.Committed] != facts {
		t.Fatalf("commit results %v", results)
	}
}

func TestServerDownIsUnavailable(t *testing.T) {
	srv := natstest.Start(t)
	s := newStore(t, connect(t, srv), devstore.Options{})
	c := claim(t, s, "k")
	srv.Stop()
	for name, call := range map[string]func(context.Context) error{
		"claim":   func(ctx context.Context) error { _, err := s.Claim(ctx, "other"); return err },
		"commit":  func(ctx context.Context) error { _, err := s.Commit(ctx, c); return err },
		"release": func(ctx context.Context) error { return s.Release(ctx, c) },
	} {
		cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := call(cctx)
		cancel()
		if !errors.Is(err, dedupe.ErrUnavailable) {
			t.Errorf("%s with NATS down: %v, want ErrUnavailable", name, err)
		}
	}
}

func TestInvalidCalls(t *testing.T) {
	s := newStore(t, connect(t, natstest.Start(t)), devstore.Options{})
	if _, err := s.Claim(ctx(t), ""); err == nil {
		t.Error("claim of an empty key succeeded")
	}
	for _, c := range []dedupe.Claim{{Key: "k", State: dedupe.Done}, {Key: "k", State: dedupe.Claimed, Token: "garbage"}, {State: dedupe.Claimed, Token: "a.1.1"}} {
		if _, err := s.Commit(ctx(t), c); err == nil || errors.Is(err, dedupe.ErrUnavailable) {
			t.Errorf("commit %+v: %v", c, err)
		}
	}
}

func TestAwkwardKeysAreValidAndDistinct(t *testing.T) {
	s := newStore(t, connect(t, natstest.Start(t)), devstore.Options{})
	keys := []string{
		".lead", "trail.", "two..dots", "a:.b", "a.:b", "a/b", "a=3Ab", "a:b", "a%3Ab", "a=b", "sp ace", "star*", "gt>",
		"1900000100:parking.state_changed:5K8264ILTKCH16CQ250:NORMAL:20150520T052935.12Z", "中文",
	}
	for _, k := range keys {
		if c := claim(t, s, k); c.State != dedupe.Claimed {
			t.Fatalf("claim %q: %+v (keys must not collide)", k, c)
		}
	}
}
