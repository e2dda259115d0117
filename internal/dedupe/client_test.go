package dedupe_test

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

func TestNewUniversalClientErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    dedupe.ClientOptions
		want []string // each must appear in the error
	}{
		{"nothing set", dedupe.ClientOptions{}, []string{"REDIS_URL", "REDIS_ADDRS"}},
		{"URL and addrs", dedupe.ClientOptions{URL: "redis://a:6379", Addrs: []string{"b:6379", "c:6379"}}, []string{"REDIS_URL", "REDIS_ADDRS"}},
		{"URL and master", dedupe.ClientOptions{URL: "redis://a:6379", MasterName: "m"}, []string{"REDIS_URL", "REDIS_MASTER_NAME"}},
		{"master without addrs", dedupe.ClientOptions{MasterName: "m"}, []string{"REDIS_MASTER_NAME", "REDIS_ADDRS"}},
		{"one addr without master", dedupe.ClientOptions{Addrs: []string{"a:6379"}}, []string{"REDIS_ADDRS", "REDIS_MASTER_NAME", "REDIS_URL=redis://a:6379"}},
		{"addr without port", dedupe.ClientOptions{Addrs: []string{"a:6379", "b"}}, []string{"REDIS_ADDRS", `entry 2 "b"`}},
		{"empty addr", dedupe.ClientOptions{Addrs: []string{"a:6379", ""}, MasterName: "m"}, []string{"REDIS_ADDRS", "entry 2"}},
		{"padded addr", dedupe.ClientOptions{Addrs: []string{" a:6379", "b:6379"}}, []string{"REDIS_ADDRS", "entry 1"}},
		{"every problem at once", dedupe.ClientOptions{Addrs: []string{"b"}}, []string{`entry 1 "b"`, "REDIS_MASTER_NAME is empty"}},
		{"URL scheme", dedupe.ClientOptions{URL: "http://a:6379"}, []string{"REDIS_URL", "scheme"}},
		{"URL database", dedupe.ClientOptions{URL: "redis://a:6379/x"}, []string{"REDIS_URL", "database"}},
		{"URL option", dedupe.ClientOptions{URL: "redis://a:6379?bogus=1"}, []string{"REDIS_URL", "bogus"}},
		{"URL unparsable", dedupe.ClientOptions{URL: "redis://u:s3cret@a:6379/%zz"}, []string{"REDIS_URL"}},
		{"password twice", dedupe.ClientOptions{URL: "redis://:s3cret@a:6379", Password: "s3cret"}, []string{"REDIS_URL", "REDIS_PASSWORD", "once"}},
		{"sentinel password twice", dedupe.ClientOptions{URL: "redis://:s3cret@s1:26379?master_name=m", SentinelPassword: "s3cret"}, []string{"REDIS_SENTINEL_PASSWORD", "once"}},
		{"sentinel password without sentinel", dedupe.ClientOptions{URL: "redis://a:6379", SentinelPassword: "x"}, []string{"REDIS_SENTINEL_PASSWORD", "master_name"}},
		{"sentinel password for a cluster", dedupe.ClientOptions{Addrs: []string{"n1:6379", "n2:6379"}, SentinelPassword: "x"}, []string{"REDIS_SENTINEL_PASSWORD", "REDIS_MASTER_NAME"}},
		{"sentinel URL option", dedupe.ClientOptions{URL: "redis://s1:26379?master_name=m&bogus=1"}, []string{"REDIS_URL", "Sentinel", "bogus"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dedupe.NewUniversalClient(tc.o)
			if err == nil {
				_ = c.Close()
				t.Fatalf("NewUniversalClient(%+v) succeeded", tc.o)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestNewUniversalClientKinds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		o       dedupe.ClientOptions
		cluster bool
	}{
		{"single node", dedupe.ClientOptions{URL: "redis://u:p@a:6379/2?dial_timeout=3s"}, false},
		{"single node over TLS", dedupe.ClientOptions{URL: "rediss://a:6380"}, false},
		{"sentinel", dedupe.ClientOptions{Addrs: []string{"s1:26379", "s2:26379", "s3:26379"}, MasterName: "mymaster"}, false},
		{"sentinel with one address", dedupe.ClientOptions{Addrs: []string{"s1:26379"}, MasterName: "mymaster"}, false},
		{"cluster", dedupe.ClientOptions{Addrs: []string{"n1:6379", "n2:6379", "[::1]:6379"}}, true},
		{"sentinel with passwords", dedupe.ClientOptions{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "m", Password: "d", SentinelPassword: "s"}, false},
		{"sentinel URL", dedupe.ClientOptions{URL: "redis://:s@s1:26379?master_name=m&addr=s2:26379&password=d"}, false},
		{"sentinel URL, passwords apart", dedupe.ClientOptions{URL: "redis://s1:26379?master_name=m", Password: "d", SentinelPassword: "s"}, false},
		{"cluster URL", dedupe.ClientOptions{URL: "redis://:p@n1:6379?addr=n2:6379&addr=n3:6379"}, true},
		{"single node, password apart", dedupe.ClientOptions{URL: "redis://a:6379/1", Password: "p"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dedupe.NewUniversalClient(tc.o)
			if err != nil {
				t.Fatalf("NewUniversalClient(%+v): %v", tc.o, err)
			}
			defer func() { _ = c.Close() }()
			// A Sentinel (failover) client is a *redis.Client too.
			switch c.(type) {
			case *redis.ClusterClient:
				if !tc.cluster {
					t.Fatalf("got a Cluster client, want a single-node or Sentinel one")
				}
			case *redis.Client:
				if tc.cluster {
					t.Fatalf("got %T, want a Cluster client", c)
				}
			default:
				t.Fatalf("got %T", c)
			}
		})
	}
}

func TestNewUniversalClientConnects(t *testing.T) {
	srv := redistest.Start(t)
	c, err := dedupe.NewUniversalClient(dedupe.ClientOptions{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if err := c.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING %s: %v", srv.Addr(), err)
	}
}
