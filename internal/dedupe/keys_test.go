package dedupe_test

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

// A key as internal/events builds it for a payment: merchant, type, transaction_id.
const paymentKey = "1900000100:payment.succeeded:4200000000000000000000000001"

func TestKey(t *testing.T) {
	k := dedupe.Key(dedupe.DefaultPrefix, paymentKey)
	if !regexp.MustCompile(`^wxpay:dd:1900000100:[A-Za-z0-9_-]{22}$`).MatchString(k) {
		t.Fatalf("Key = %q, want wxpay:dd:<merchant>:<22 base64url characters>", k)
	}
	// 42 bytes: the largest size class the allocator rounds a 44-byte key to is 48 bytes (BENCHMARKS.md).
	if len(k) != 42 {
		t.Fatalf("len(Key) = %d, want 42", len(k))
	}
	if dedupe.Key(dedupe.DefaultPrefix, paymentKey) != k {
		t.Fatal("Key is not deterministic")
	}
	long := paymentKey + ":with:many:more:parts:that:a:refund:or:parking:key:might:have"
	if got := dedupe.Key(dedupe.DefaultPrefix, long); len(got) != len(k) || got == k {
		t.Fatalf("Key(%q) = %q: want another key of the same size", long, got)
	}
	seen := map[string]bool{}
	for i := range 10000 {
		seen[dedupe.Key(dedupe.DefaultPrefix, "1900000100:payment.succeeded:"+strconv.Itoa(i))] = true
	}
	if len(seen) != 10000 {
		t.Fatalf("10000 facts gave %d keys", len(seen))
	}
	if got := dedupe.Key("p:", "no-merchant"); !regexp.MustCompile(`^p:[A-Za-z0-9_-]{22}$`).MatchString(got) {
		t.Fatalf("Key of a key without ':' = %q, want prefix + hash", got)
	}
}

// legacyDone writes a fact the way the previous version did: LegacyPrefix + key = "done", with its TTL.
func legacyDone(t *testing.T, raw *redis.Client, key string) {
	t.Helper()
	if err := raw.Set(t.Context(), dedupe.LegacyPrefix+key, "done", 168*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

// An upgrade in place: facts committed under the previous key format stay done for the legacy window, and
// a previous-version worker's live lease keeps the fact busy; once the window is over they are not read.
func TestLegacyFactsAreHonoured(t *testing.T) {
	e := setup(t, dedupe.Options{})
	legacyDone(t, e.raw, paymentKey)
	if err := e.raw.Set(t.Context(), dedupe.LegacyPrefix+"leased", "processing:OLDTOKEN", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	c, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: e.srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	upgraded := dedupe.NewRedis(c, dedupe.Options{Prefix: prefix, LegacyUntil: time.Now().Add(time.Hour)})
	claim(t, upgraded, paymentKey, dedupe.Done)
	claim(t, upgraded, "leased", dedupe.Busy)
	fresh := claim(t, upgraded, "new-fact", dedupe.Claimed)
	commit(t, upgraded, fresh, dedupe.Committed)
	claim(t, upgraded, "new-fact", dedupe.Done)
	if n, err := e.raw.Exists(t.Context(), dedupe.LegacyPrefix+"new-fact").Result(); err != nil || n != 0 {
		t.Fatalf("a new fact was written under the previous format (%d, %v)", n, err)
	}

	over := dedupe.NewRedis(c, dedupe.Options{Prefix: prefix, LegacyUntil: time.Now().Add(-time.Second)})
	claim(t, over, paymentKey, dedupe.Claimed)
	never := dedupe.NewRedis(c, dedupe.Options{Prefix: prefix})
	claim(t, never, "leased", dedupe.Claimed)

	if err := e.raw.Set(t.Context(), dedupe.LegacyPrefix+"foreign", "payload", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := upgraded.Claim(t.Context(), "foreign"); !errors.Is(err, dedupe.ErrUnexpectedValue) {
		t.Fatalf("Claim over a foreign value under the previous format: %v, want ErrUnexpectedValue", err)
	}
}

// LegacyUntil: a new installation has nothing to honour; a Redis that holds facts when the compact format
// first starts honours them for max(TTL, LegacyTTL) from that moment, whichever process asks and however
// often; a full Redis honours them from now.
func TestLegacyUntil(t *testing.T) {
	ctx := t.Context()
	t0 := time.UnixMilli(1_800_000_000_000)

	t.Run("empty Redis", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		until, err := dedupe.LegacyUntil(ctx, e.raw, dedupe.Options{Prefix: prefix}, t0)
		if err != nil || !until.IsZero() {
			t.Fatalf("LegacyUntil on an empty Redis = %v, %v; want zero", until, err)
		}
		legacyDone(t, e.raw, paymentKey) // written later by nobody we know of: the marker already says 0
		until, err = dedupe.LegacyUntil(ctx, e.raw, dedupe.Options{Prefix: prefix}, t0.Add(time.Hour))
		if err != nil || !until.IsZero() {
			t.Fatalf("LegacyUntil once the marker says new = %v, %v; want zero", until, err)
		}
	})

	t.Run("upgraded Redis", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		legacyDone(t, e.raw, paymentKey)
		for _, tc := range []struct {
			ttl  time.Duration
			now  time.Time
			want time.Time
		}{
			{72 * time.Hour, t0, t0.Add(dedupe.LegacyTTL)},
			{72 * time.Hour, t0.Add(time.Hour), t0.Add(dedupe.LegacyTTL)}, // a later start reads the first one's moment
			{400 * time.Hour, t0.Add(2 * time.Hour), t0.Add(400 * time.Hour)},
		} {
			until, err := dedupe.LegacyUntil(ctx, e.raw, dedupe.Options{Prefix: prefix, TTL: tc.ttl}, tc.now)
			if err != nil || !until.Equal(tc.want) {
				t.Errorf("LegacyUntil(TTL %s, now %s) = %v, %v; want %v", tc.ttl, tc.now, until, err, tc.want)
			}
		}
	})

	t.Run("full Redis", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		legacyDone(t, e.raw, paymentKey)
		fill(t, e.raw)
		until, err := dedupe.LegacyUntil(ctx, e.raw, dedupe.Options{Prefix: prefix}, t0)
		if err != nil || !until.Equal(t0.Add(dedupe.LegacyTTL)) {
			t.Fatalf("LegacyUntil on a full Redis = %v, %v; want now + LegacyTTL", until, err)
		}
	})

	t.Run("unreachable Redis", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		e.srv.Stop()
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if _, err := dedupe.LegacyUntil(cctx, e.raw, dedupe.Options{}, t0); !errors.Is(err, dedupe.ErrUnavailable) {
			t.Fatalf("LegacyUntil with Redis down: %v, want ErrUnavailable", err)
		}
	})
}

// The consumer's whole path on an upgraded Redis: the start-up call decides the window, and a fact done by
// the previous version is not published again.
func TestUpgradeInPlaceForgetsNothing(t *testing.T) {
	srv := redistest.Start(t)
	c, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	raw := c.(*redis.Client)
	legacyDone(t, raw, paymentKey) // under the default prefixes, as production has them

	until, err := dedupe.LegacyUntil(t.Context(), c, dedupe.Options{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(until); d < dedupe.LegacyTTL-time.Minute || d > dedupe.LegacyTTL {
		t.Fatalf("legacy window ends in %s, want %s", d, dedupe.LegacyTTL)
	}
	d := dedupe.NewRedis(c, dedupe.Options{LegacyUntil: until})
	claim(t, d, paymentKey, dedupe.Done)
	claim(t, d, "1900000100:payment.succeeded:4200000000000000000000000002", dedupe.Claimed)
}
