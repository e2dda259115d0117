package dedupe_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
)

const prefix = "test:dedupe:"

type env struct {
	srv *redistest.Server
	raw *redis.Client // inspects and tampers with keys behind the deduper's back
	d   *dedupe.Redis
}

// setup starts Redis and a deduper built the way programs build it, through
// NewUniversalClient.
func setup(t testing.TB, o dedupe.Options) *env {
	t.Helper()
	srv := redistest.Start(t)
	c, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatalf("NewUniversalClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	raw := redis.NewClient(opt)
	t.Cleanup(func() { _ = raw.Close() })
	if o.Prefix == "" {
		o.Prefix = prefix
	}
	return &env{srv: srv, raw: raw, d: dedupe.NewRedis(c, o)}
}

func (e *env) value(t *testing.T, key string) string {
	t.Helper()
	v, err := e.raw.Get(t.Context(), dedupe.Key(prefix, key)).Result()
	if errors.Is(err, redis.Nil) {
		return "<absent>"
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

func (e *env) pttl(t *testing.T, key string) time.Duration {
	t.Helper()
	d, err := e.raw.PTTL(t.Context(), dedupe.Key(prefix, key)).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	return d
}

// expire makes key's lease run out now, as if its worker had crashed Lease
// ago, and waits until Redis no longer sees the key.
func (e *env) expire(t *testing.T, key string) {
	t.Helper()
	ctx := t.Context()
	if err := e.raw.PExpire(ctx, dedupe.Key(prefix, key), time.Millisecond).Err(); err != nil {
		t.Fatalf("PEXPIRE %s: %v", key, err)
	}
	waitFor(t, "key "+key+" to expire", func() bool {
		n, err := e.raw.Exists(ctx, dedupe.Key(prefix, key)).Result()
		return err == nil && n == 0
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, what, cond, wait.Options{Interval: time.Millisecond})
}

func claim(t *testing.T, d *dedupe.Redis, key string, want dedupe.State) dedupe.Claim {
	t.Helper()
	c, err := d.Claim(t.Context(), key)
	if err != nil {
		t.Fatalf("Claim(%s): %v", key, err)
	}
	if c.State != want || c.Key != key {
		t.Fatalf("Claim(%s) = %+v, want state %v", key, c, want)
	}
	if (c.Token != "") != (want == dedupe.Claimed) {
		t.Fatalf("Claim(%s) = %+v: a token belongs to Claimed only", key, c)
	}
	return c
}

func commit(t *testing.T, d *dedupe.Redis, c dedupe.Claim, want dedupe.CommitResult) {
	t.Helper()
	got, err := d.Commit(t.Context(), c)
	if err != nil {
		t.Fatalf("Commit(%+v): %v", c, err)
	}
	if got != want {
		t.Fatalf("Commit(%+v) = %v, want %v", c, got, want)
	}
	if got.LeaseLost() != (want != dedupe.Committed) {
		t.Fatalf("%v.LeaseLost() = %v", got, got.LeaseLost())
	}
}

func release(t *testing.T, d *dedupe.Redis, c dedupe.Claim) {
	t.Helper()
	if err := d.Release(t.Context(), c); err != nil {
		t.Fatalf("Release(%+v): %v", c, err)
	}
}

func within(t *testing.T, what string, got, want, slack time.Duration) {
	t.Helper()
	if got > want || got < want-slack {
		t.Fatalf("%s = %v, want within %v below %v", what, got, slack, want)
	}
}

func TestClaimCommitDone(t *testing.T) {
	const lease, ttl = 20 * time.Second, 2 * time.Hour
	e := setup(t, dedupe.Options{Lease: lease, TTL: ttl})

	first := claim(t, e.d, "k", dedupe.Claimed)
	if got, want := e.value(t, "k"), "processing:"+first.Token; got != want {
		t.Fatalf("leased value = %q, want %q", got, want)
	}
	within(t, "lease PTTL", e.pttl(t, "k"), lease, 5*time.Second)

	claim(t, e.d, "k", dedupe.Busy)
	commit(t, e.d, first, dedupe.Committed)
	claim(t, e.d, "k", dedupe.Done)
	if got := e.value(t, "k"); got != "1" {
		t.Fatalf("committed value = %q, want 1", got)
	}
	within(t, "done PTTL", e.pttl(t, "k"), ttl, 5*time.Second)

	commit(t, e.d, first, dedupe.AlreadyDone) // a repeated Commit changes nothing
	release(t, e.d, first)                    // nor does a late Release
	claim(t, e.d, "k", dedupe.Done)
}

func TestDefaults(t *testing.T) {
	srv := redistest.Start(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	d := dedupe.NewRedis(c, dedupe.Options{})
	ctx := t.Context()

	cl, err := d.Claim(ctx, "k")
	if err != nil || cl.State != dedupe.Claimed {
		t.Fatalf("Claim = %+v, %v", cl, err)
	}
	key := dedupe.Key(dedupe.DefaultPrefix, "k")
	lease, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	within(t, "default lease", lease, dedupe.DefaultLease, 5*time.Second)
	if _, err := d.Commit(ctx, cl); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	within(t, "default TTL", ttl, 72*time.Hour, time.Minute)
}

func TestTokensAreUnique(t *testing.T) {
	e := setup(t, dedupe.Options{})
	seen := map[string]bool{}
	for i := range 100 {
		c := claim(t, e.d, strconv.Itoa(i), dedupe.Claimed)
		if len(c.Token) < 20 || seen[c.Token] {
			t.Fatalf("token %q is short or repeated", c.Token)
		}
		seen[c.Token] = true
	}
}

func TestRelease(t *testing.T) {
	e := setup(t, dedupe.Options{})

	t.Run("by owner frees the key", func(t *testing.T) {
		c := claim(t, e.d, "owner", dedupe.Claimed)
		release(t, e.d, c)
		if got := e.value(t, "owner"); got != "<absent>" {
			t.Fatalf("value after Release = %q", got)
		}
		claim(t, e.d, "owner", dedupe.Claimed)
	})

	t.Run("by stale token does nothing", func(t *testing.T) {
		stale := claim(t, e.d, "stale", dedupe.Claimed)
		e.expire(t, "stale")
		fresh := claim(t, e.d, "stale", dedupe.Claimed)
		release(t, e.d, stale)
		if got, want := e.value(t, "stale"), "processing:"+fresh.Token; got != want {
			t.Fatalf("value after stale Release = %q, want %q", got, want)
		}
		claim(t, e.d, "stale", dedupe.Busy)
	})

	t.Run("of claims not owned does nothing", func(t *testing.T) {
		owner := claim(t, e.d, "other", dedupe.Claimed)
		busy := claim(t, e.d, "other", dedupe.Busy)
		release(t, e.d, busy)
		release(t, e.d, dedupe.Claim{})
		claim(t, e.d, "other", dedupe.Busy)
		commit(t, e.d, owner, dedupe.Committed)
		release(t, e.d, claim(t, e.d, "other", dedupe.Done))
		claim(t, e.d, "other", dedupe.Done)
	})
}

// A worker that crashes holding a lease blocks the fact only until the lease
// expires; then another worker claims it.
func TestExpiredLeaseIsReclaimed(t *testing.T) {
	t.Run("expired by PEXPIRE", func(t *testing.T) {
		e := setup(t, dedupe.Options{})
		crashed := claim(t, e.d, "k", dedupe.Claimed)
		e.expire(t, "k")
		next := claim(t, e.d, "k", dedupe.Claimed)
		if next.Token == crashed.Token {
			t.Fatal("the new claim reuses the crashed worker's token")
		}
	})

	t.Run("expired by Options.Lease", func(t *testing.T) {
		const lease = 100 * time.Millisecond
		e := setup(t, dedupe.Options{Lease: lease})
		claim(t, e.d, "k", dedupe.Claimed)
		within(t, "lease PTTL", e.pttl(t, "k"), lease, lease)
		waitFor(t, "the lease to expire", func() bool {
			c, err := e.d.Claim(t.Context(), "k")
			return err == nil && c.State == dedupe.Claimed
		})
	})
}

// Commit records done even after the lease was lost: the event is published.
func TestCommitAfterLeaseLoss(t *testing.T) {
	const ttl = time.Hour
	e := setup(t, dedupe.Options{TTL: ttl})

	t.Run("expired, not reclaimed", func(t *testing.T) {
		slow := claim(t, e.d, "expired", dedupe.Claimed)
		e.expire(t, "expired")
		commit(t, e.d, slow, dedupe.LeaseExpired)
		claim(t, e.d, "expired", dedupe.Done)
		within(t, "done PTTL", e.pttl(t, "expired"), ttl, 5*time.Second)
	})

	t.Run("expired and reclaimed", func(t *testing.T) {
		slow := claim(t, e.d, "taken", dedupe.Claimed)
		e.expire(t, "taken")
		next := claim(t, e.d, "taken", dedupe.Claimed)
		commit(t, e.d, slow, dedupe.LeaseTaken)
		claim(t, e.d, "taken", dedupe.Done)
		commit(t, e.d, next, dedupe.AlreadyDone)
		release(t, e.d, next) // the second worker failing afterwards forgets nothing
		claim(t, e.d, "taken", dedupe.Done)
		within(t, "done PTTL", e.pttl(t, "taken"), ttl, 5*time.Second)
	})
}

func TestConcurrentClaimsHaveOneWinner(t *testing.T) {
	e := setup(t, dedupe.Options{})
	const workers = 50
	var (
		start       = make(chan struct{})
		wg          sync.WaitGroup
		claimed, bz atomic.Int32
		errs        = make(chan error, workers)
	)
	for range workers {
		wg.Go(func() {
			<-start
			c, err := e.d.Claim(t.Context(), "race")
			switch {
			case err != nil:
				errs <- err
			case c.State == dedupe.Claimed:
				claimed.Add(1)
			case c.State == dedupe.Busy:
				bz.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if claimed.Load() != 1 || bz.Load() != workers-1 {
		t.Fatalf("%d Claimed and %d Busy, want 1 and %d", claimed.Load(), bz.Load(), workers-1)
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	e := setup(t, dedupe.Options{})
	held := claim(t, e.d, "held", dedupe.Claimed)

	e.srv.Stop()
	for op, call := range map[string]func(context.Context) error{
		"Claim":   func(ctx context.Context) error { _, err := e.d.Claim(ctx, "k"); return err },
		"Commit":  func(ctx context.Context) error { _, err := e.d.Commit(ctx, held); return err },
		"Release": func(ctx context.Context) error { return e.d.Release(ctx, held) },
	} {
		// The client's own retries take seconds to give up; the caller's
		// deadline cuts them short.
		const deadline = 300 * time.Millisecond
		ctx, cancel := context.WithTimeout(t.Context(), deadline)
		begin := time.Now()
		err := call(ctx)
		took := time.Since(begin)
		cancel()
		if !errors.Is(err, dedupe.ErrUnavailable) {
			t.Errorf("%s with Redis down: %v, want ErrUnavailable", op, err)
		}
		if took > deadline+time.Second {
			t.Errorf("%s with Redis down took %v, beyond its %v deadline", op, took, deadline)
		}
	}

	// A Redis restarted without persistence has forgotten everything; the
	// deduper must work again at once (its scripts are reloaded, its dead
	// connections replaced).
	e.srv.Restart()
	commit(t, e.d, held, dedupe.LeaseExpired)
	c := claim(t, e.d, "k", dedupe.Claimed)
	commit(t, e.d, c, dedupe.Committed)
	claim(t, e.d, "k", dedupe.Done)

	// Restarted under connections the pool still holds: the client replaces
	// them by itself.
	e.srv.Restart()
	claim(t, e.d, "k", dedupe.Claimed)
}

// lossyConn loses the reply to one command once armed: the command runs in
// Redis, but the client sees the connection drop and retries.
type lossyConn struct {
	net.Conn
	armed *atomic.Bool
}

func (c lossyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == nil && c.armed.CompareAndSwap(true, false) {
		_ = c.Close()
		return 0, io.EOF
	}
	return n, err
}

func TestClaimRetriedAfterLostReplyIsClaimed(t *testing.T) {
	srv := redistest.Start(t)
	var armed atomic.Bool
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		return lossyConn{Conn: conn, armed: &armed}, err
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	d := dedupe.NewRedis(c, dedupe.Options{Prefix: prefix})
	// Connect and load the script, so the lost reply is the script's own.
	claim(t, d, "warm-up", dedupe.Claimed)

	armed.Store(true)
	cl := claim(t, d, "k", dedupe.Claimed)
	if armed.Load() {
		t.Fatal("no reply was lost; the test proves nothing")
	}
	v, err := c.Get(t.Context(), dedupe.Key(prefix, "k")).Result()
	if err != nil || v != "processing:"+cl.Token {
		t.Fatalf("value = %q, %v; want our lease", v, err)
	}
	commit(t, d, cl, dedupe.Committed)
}

func TestCancelledContextIsUnavailable(t *testing.T) {
	e := setup(t, dedupe.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := e.d.Claim(ctx, "k")
	if !errors.Is(err, dedupe.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Claim with a cancelled context: %v, want ErrUnavailable and context.Canceled", err)
	}
}

func TestForeignValue(t *testing.T) {
	e := setup(t, dedupe.Options{})
	if err := e.raw.Set(t.Context(), dedupe.Key(prefix, "k"), "secret-payload", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := e.d.Claim(t.Context(), "k")
	if !errors.Is(err, dedupe.ErrUnexpectedValue) || errors.Is(err, dedupe.ErrUnavailable) {
		t.Fatalf("Claim over a foreign value: %v, want ErrUnexpectedValue only", err)
	}
	if strings.Contains(err.Error(), "secret-payload") {
		t.Fatalf("error %q repeats the stored value", err)
	}
}

func TestInvalidCalls(t *testing.T) {
	e := setup(t, dedupe.Options{})
	ctx := t.Context()
	if _, err := e.d.Claim(ctx, ""); err == nil {
		t.Error("Claim with an empty key succeeded")
	}
	for _, c := range []dedupe.Claim{
		{},
		{Key: "k", State: dedupe.Busy},
		{Key: "k", State: dedupe.Done},
		{Key: "k", State: dedupe.Claimed}, // no token
	} {
		if _, err := e.d.Commit(ctx, c); err == nil || errors.Is(err, dedupe.ErrUnavailable) {
			t.Errorf("Commit(%+v) = %v, want a usage error", c, err)
		}
	}
	if got := e.value(t, "k"); got != "<absent>" {
		t.Fatalf("invalid calls wrote %q", got)
	}
}

func TestNames(t *testing.T) {
	for _, tc := range []struct {
		got  interface{ String() string }
		want string
	}{
		{dedupe.Claimed, "claimed"},
		{dedupe.Done, "done"},
		{dedupe.Busy, "busy"},
		{dedupe.State(0), "State(0)"},
		{dedupe.Committed, "committed"},
		{dedupe.LeaseExpired, "lease_expired"},
		{dedupe.LeaseTaken, "lease_taken"},
		{dedupe.AlreadyDone, "already_done"},
		{dedupe.CommitResult(9), "CommitResult(9)"},
	} {
		if tc.got.String() != tc.want {
			t.Errorf("String() = %q, want %q", tc.got.String(), tc.want)
		}
	}
}

// BenchmarkClaimCommit measures the happy path, two script round trips, for
// a fresh fact each time.
func BenchmarkClaimCommit(b *testing.B) {
	e := setup(b, dedupe.Options{})
	var keys atomic.Int64 // shared, as -count reruns against the same server
	next := func() string { return strconv.FormatInt(keys.Add(1), 10) }
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			claimCommit(b, e.d, next())
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				claimCommit(b, e.d, next())
			}
		})
	})
}

// claimCommit reports failures with Errorf: RunParallel's goroutines must
// not call Fatal.
func claimCommit(b *testing.B, d *dedupe.Redis, key string) {
	ctx := b.Context()
	c, err := d.Claim(ctx, key)
	if err != nil || c.State != dedupe.Claimed {
		b.Errorf("Claim(%s) = %+v, %v", key, c, err)
		return
	}
	if r, err := d.Commit(ctx, c); err != nil || r != dedupe.Committed {
		b.Errorf("Commit(%s) = %v, %v", key, r, err)
	}
}
