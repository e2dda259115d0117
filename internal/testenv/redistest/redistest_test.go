package redistest_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

func client(t *testing.T, s *redistest.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", s.URL(), err)
	}
	// A stopped server must show at once, not after retries.
	opt.MaxRetries, opt.DialerRetries = -1, 1
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func refuses(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

func TestStartStopRestart(t *testing.T) {
	t.Setenv(redistest.EnvURL, "") // this test needs a server it controls
	ctx := t.Context()
	s := redistest.Start(t)

	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:port", s.Addr())
	}
	if want := "redis://" + s.Addr(); s.URL() != want {
		t.Fatalf("URL() = %q, want %q", s.URL(), want)
	}
	c := client(t, s)
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}

	addr := s.Addr()
	s.Stop()
	if !refuses(addr) {
		t.Fatalf("after Stop, %s still accepts connections", addr)
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING after Stop succeeded")
	}
	s.Stop() // stopping twice is harmless

	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k after Restart = %d, %v; want 0 (persistence is off)", n, err)
	}
	s.Restart() // restarting a running server works too
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after second Restart: %v", err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	t.Setenv(redistest.EnvURL, "")
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	ctx := t.Context()
	if err := client(t, a).Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := client(t, b).Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k on the other server = %d, %v; want 0", n, err)
	}
}

func TestCleanupStopsServer(t *testing.T) {
	t.Setenv(redistest.EnvURL, "")
	var addr string
	t.Run("owner", func(t *testing.T) {
		addr = redistest.Start(t).Addr()
	})
	if !refuses(addr) {
		t.Fatalf("server at %s outlived its test", addr)
	}
}

// fatalTB records the first Fatal instead of ending the test, so a test can
// check what Start, Stop and Restart say when they fail.
type fatalTB struct {
	testing.TB
	msg string
}

type fatalled struct{}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	panic(fatalled{})
}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(fatalled{})
}

// fatalOf runs fn with tb (nil for a fresh fatalTB around t) and returns the
// message it failed with, or "" if it did not fail.
func fatalOf(t *testing.T, tb *fatalTB, fn func(tb testing.TB)) (msg string) {
	t.Helper()
	if tb == nil {
		tb = &fatalTB{TB: t}
	}
	tb.msg = ""
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(fatalled); !ok {
				panic(r)
			}
			msg = tb.msg
		}
	}()
	fn(tb)
	return ""
}

func TestExternalURL(t *testing.T) {
	t.Setenv(redistest.EnvURL, "")
	ctx := t.Context()
	local := redistest.Start(t)
	if err := client(t, local).Set(ctx, "stale", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}

	t.Setenv(redistest.EnvURL, local.URL())
	var ext *redistest.Server
	tb := &fatalTB{TB: t} // Stop and Restart report through the tb given to Start
	if msg := fatalOf(t, tb, func(tb testing.TB) { ext = redistest.Start(tb) }); msg != "" {
		t.Fatalf("Start with %s: %s", redistest.EnvURL, msg)
	}
	if ext.Addr() != local.Addr() || ext.URL() != local.URL() {
		t.Fatalf("Start with %s=%s gave %s, %s", redistest.EnvURL, local.URL(), ext.Addr(), ext.URL())
	}
	if n, err := client(t, ext).Exists(ctx, "stale").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS stale = %d, %v; want 0: Start must flush the database", n, err)
	}

	for name, op := range map[string]func(){"Stop": ext.Stop, "Restart": ext.Restart} {
		msg := fatalOf(t, tb, func(testing.TB) { op() })
		if !strings.Contains(msg, name) || !strings.Contains(msg, redistest.EnvURL) {
			t.Errorf("%s on a %s server: fatal message %q should name the operation and %s", name, redistest.EnvURL, msg, redistest.EnvURL)
		}
	}
	if err := client(t, local).Ping(ctx).Err(); err != nil {
		t.Fatalf("the external server must survive Stop and Restart: %v", err)
	}
}

func TestBadURLHidesPassword(t *testing.T) {
	t.Setenv(redistest.EnvURL, "redis://user:s3cret@localhost:6379/%zz")
	msg := fatalOf(t, nil, func(tb testing.TB) { redistest.Start(tb) })
	if msg == "" || !strings.Contains(msg, redistest.EnvURL) {
		t.Fatalf("fatal message %q should name %s", msg, redistest.EnvURL)
	}
	if strings.Contains(msg, "s3cret") {
		t.Fatalf("fatal message %q leaks the password", msg)
	}
}

func TestNoServerAvailableFails(t *testing.T) {
	t.Setenv(redistest.EnvURL, "")
	t.Setenv("PATH", t.TempDir())
	msg := fatalOf(t, nil, func(tb testing.TB) { redistest.Start(tb) })
	for _, want := range []string{"install redis-server", redistest.EnvURL} {
		if !strings.Contains(msg, want) {
			t.Errorf("fatal message %q should contain %q", msg, want)
		}
	}
}

// A Sentinel deployment with passwords fails over when its master dies, and a client that knows only
// the sentinels and the master name follows it.
func TestSentinelFailover(t *testing.T) {
	t.Setenv(redistest.EnvURL, "")
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Password: "data-pw", SentinelPassword: "sentinel-pw"})
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.Addrs(),
		Password: "data-pw", SentinelPassword: "sentinel-pw"})
	t.Cleanup(func() { _ = c.Close() })
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through the sentinels: %v", err)
	}
	start := time.Now()
	old := s.KillMaster()
	now := s.WaitFailover(old, 30*time.Second)
	t.Logf("master %s killed, %s promoted in %s", old, now, time.Since(start).Round(time.Millisecond))
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := c.Set(ctx, "k2", "v", 0).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SET after the failover: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
