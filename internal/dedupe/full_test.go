package dedupe_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

// fill makes Redis full as a production Redis with maxmemory-policy noeviction gets full: every write that
// needs memory is refused with OOM. It undoes that at cleanup.
func fill(t *testing.T, raw *redis.Client) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if err := raw.ConfigSet(ctx, "maxmemory-policy", dedupe.NoEviction).Err(); err != nil {
		t.Fatal(err)
	}
	if err := raw.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.ConfigSet(ctx, "maxmemory", "0").Err() })
}

// A full Redis with noeviction: a new fact cannot be claimed (an OOM error the caller retries); a fact
// already done is still recognised, so its duplicates are dropped rather than retried; a fact whose event
// is out still gets its done mark; a lease can still be given back.
func TestWhenRedisIsFull(t *testing.T) {
	const ttl = time.Hour
	e := setup(t, dedupe.Options{TTL: ttl})
	done := claim(t, e.d, "done", dedupe.Claimed)
	commit(t, e.d, done, dedupe.Committed)
	inFlight := claim(t, e.d, "in-flight", dedupe.Claimed)
	toRelease := claim(t, e.d, "released", dedupe.Claimed)
	fill(t, e.raw)

	_, err := e.d.Claim(t.Context(), "new")
	if !errors.Is(err, dedupe.ErrUnavailable) || !redis.IsOOMError(err) || dedupe.ErrorKind(err) != dedupe.KindOOM {
		t.Fatalf("Claim on a full Redis: %v (kind %q), want ErrUnavailable of kind oom", err, dedupe.ErrorKind(err))
	}
	if got := e.value(t, "new"); got != "<absent>" {
		t.Fatalf("a refused claim left %q", got)
	}
	claim(t, e.d, "done", dedupe.Done)
	claim(t, e.d, "in-flight", dedupe.Busy)

	commit(t, e.d, inFlight, dedupe.Committed)
	if got := e.value(t, "in-flight"); got != "1" {
		t.Fatalf("committed on a full Redis: value %q, want 1", got)
	}
	within(t, "done PTTL", e.pttl(t, "in-flight"), ttl, 5*time.Second)

	release(t, e.d, toRelease)
	if got := e.value(t, "released"); got != "<absent>" {
		t.Fatalf("released on a full Redis: value %q", got)
	}

	// A lease that expired while Redis was full has nothing to overwrite: recording done would need new
	// memory, which a full Redis refuses.
	late := claimFree(t, e, "expired")
	e.expire(t, "expired")
	if _, err := e.d.Commit(t.Context(), late); dedupe.ErrorKind(err) != dedupe.KindOOM {
		t.Fatalf("Commit of an expired lease on a full Redis: %v, want an oom error", err)
	}
}

// claimFree claims key with room made for it for a moment.
func claimFree(t *testing.T, e *env, key string) dedupe.Claim {
	t.Helper()
	ctx := t.Context()
	if err := e.raw.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	c := claim(t, e.d, key, dedupe.Claimed)
	if err := e.raw.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestErrorKind(t *testing.T) {
	t.Run("oom", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		fill(t, e.raw)
		_, err := e.d.Claim(t.Context(), "k")
		if got := dedupe.ErrorKind(err); got != dedupe.KindOOM {
			t.Fatalf("ErrorKind(%v) = %q", err, got)
		}
	})
	t.Run("failover", func(t *testing.T) {
		// A replica answers writes with READONLY, as the old master does right after a failover.
		master := redistest.Start(t)
		host, port, err := net.SplitHostPort(master.Addr())
		if err != nil {
			t.Fatal(err)
		}
		replica := redistest.StartArgs(t, "--replicaof", host, port)
		c := redis.NewClient(&redis.Options{Addr: replica.Addr()})
		t.Cleanup(func() { _ = c.Close() })
		_, err = dedupe.NewRedis(c, dedupe.Options{}).Claim(t.Context(), "k")
		if got := dedupe.ErrorKind(err); got != dedupe.KindFailover || !errors.Is(err, dedupe.ErrUnavailable) {
			t.Fatalf("ErrorKind(%v) = %q, want failover", err, got)
		}
	})
	t.Run("conn", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		e.srv.Stop()
		c := redis.NewClient(&redis.Options{Addr: e.srv.Addr(), MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		_, err := dedupe.NewRedis(c, dedupe.Options{}).Claim(t.Context(), "k")
		if got := dedupe.ErrorKind(err); got != dedupe.KindConn {
			t.Fatalf("ErrorKind(%v) = %q, want conn", err, got)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// A listener that accepts and never answers.
		ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			conns []net.Conn
		)
		t.Cleanup(func() {
			_ = ln.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				_ = c.Close()
			}
		})
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, conn)
				mu.Unlock()
			}
		}()
		c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), MaxRetries: -1, ContextTimeoutEnabled: true, Protocol: 2})
		t.Cleanup(func() { _ = c.Close() })
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err = dedupe.NewRedis(c, dedupe.Options{}).Claim(ctx, "k")
		if got := dedupe.ErrorKind(err); got != dedupe.KindTimeout {
			t.Fatalf("ErrorKind(%v) = %q, want timeout", err, got)
		}
	})
	t.Run("other", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		if err := e.raw.Set(t.Context(), dedupe.Key(prefix, "k"), "foreign", 0).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := e.d.Claim(t.Context(), "k")
		if got := dedupe.ErrorKind(err); got != dedupe.KindOther {
			t.Fatalf("ErrorKind(%v) = %q, want other", err, got)
		}
	})
	if got := dedupe.ErrorKind(nil); got != "" {
		t.Fatalf("ErrorKind(nil) = %q", got)
	}
}

// Bytes per fact in Redis, old key format against the compact one, on a real redis-server: the figures
// BENCHMARKS.md quotes come from `go run ./bench -suite capacity`; this keeps the direction honest in CI.
func TestCompactKeysCostLess(t *testing.T) {
	e := setup(t, dedupe.Options{})
	ctx := t.Context()
	const n = 2000
	cost := func(key func(i int) string, value string) float64 {
		t.Helper()
		if err := e.raw.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		var total int64
		for i := range n {
			k := key(i)
			if err := e.raw.Set(ctx, k, value, 72*time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			u, err := e.raw.MemoryUsage(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			total += u
		}
		return float64(total) / n
	}
	fact := func(i int) string { return fmt.Sprintf("1900000100:payment.succeeded:4200%024d", i) }
	legacy := cost(func(i int) string { return dedupe.LegacyPrefix + fact(i) }, "done")
	compact := cost(func(i int) string { return dedupe.Key(dedupe.DefaultPrefix, fact(i)) }, "1")
	t.Logf("MEMORY USAGE per fact: previous format %.0f B, compact %.0f B", legacy, compact)
	if compact > legacy-32 {
		t.Fatalf("compact keys cost %.0f B per fact, the previous format %.0f B: want at least 32 B less", compact, legacy)
	}
}
