package dedupe_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/testenv/redistest"
)

// restoreMemoryConfig puts back what redistest starts with, for a server from REDIS_URL that other tests share.
func restoreMemoryConfig(t *testing.T, c *redis.Client) {
	t.Cleanup(func() {
		ctx := context.Background()
		_ = c.ConfigSet(ctx, "maxmemory-policy", dedupe.NoEviction).Err()
		_ = c.ConfigSet(ctx, "maxmemory", "0").Err()
	})
}

func TestMaxmemoryPolicies(t *testing.T) {
	e := setup(t, dedupe.Options{})
	ctx := t.Context()
	restoreMemoryConfig(t, e.raw)
	for i, policy := range []string{"noeviction", "allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random", "volatile-lfu"} {
		maxmemory := int64(i) << 20 // none for the first
		if err := e.raw.ConfigSet(ctx, "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.raw.ConfigSet(ctx, "maxmemory", strconv.FormatInt(maxmemory, 10)).Err(); err != nil {
			t.Fatal(err)
		}
		got, err := dedupe.MaxmemoryPolicies(ctx, e.raw)
		if err != nil {
			t.Fatalf("%s: %v", policy, err)
		}
		if len(got) != 1 || got[0].Policy != policy || got[0].Addr != e.srv.Addr() || got[0].Evicts() != (policy != "noeviction") ||
			got[0].MaxMemory != maxmemory {
			t.Errorf("MaxmemoryPolicies under %s, maxmemory %d = %+v", policy, maxmemory, got)
		}
	}
}

// Managed services disable or rename CONFIG, or an ACL leaves it out: the answer is ErrConfigRefused, which
// the consumer warns about and runs. Wrong credentials are not that: every later command would fail too.
func TestMaxmemoryPoliciesRefused(t *testing.T) {
	e := setup(t, dedupe.Options{})
	ctx := t.Context()
	if err := e.raw.Do(ctx, "ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.raw.Do(context.Background(), "ACL", "DELUSER", "app").Err() })
	limited := redis.NewClient(&redis.Options{Addr: e.srv.Addr(), Username: "app", Password: "secret"})
	t.Cleanup(func() { _ = limited.Close() })
	_, err := dedupe.MaxmemoryPolicies(ctx, limited)
	if !errors.Is(err, dedupe.ErrConfigRefused) || errors.Is(err, dedupe.ErrUnavailable) {
		t.Fatalf("CONFIG GET without the permission: %v, want ErrConfigRefused", err)
	}

	wrong := redis.NewClient(&redis.Options{Addr: e.srv.Addr(), Username: "app", Password: "wrong", MaxRetries: -1})
	t.Cleanup(func() { _ = wrong.Close() })
	if _, err := dedupe.MaxmemoryPolicies(ctx, wrong); errors.Is(err, dedupe.ErrConfigRefused) || err == nil {
		t.Fatalf("wrong password: %v, want an error that is not ErrConfigRefused", err)
	}

	e.srv.Stop()
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := dedupe.MaxmemoryPolicies(cctx, e.raw); !errors.Is(err, dedupe.ErrUnavailable) {
		t.Fatalf("Redis down: %v, want ErrUnavailable", err)
	}
}

// A Redis Cluster is asked on each master. One node serving every slot is a real cluster to the client.
func TestMaxmemoryPoliciesCluster(t *testing.T) {
	srv := redistest.StartArgs(t, "--cluster-enabled", "yes", "--maxmemory-policy", "allkeys-lfu")
	ctx := t.Context()
	node := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = node.Close() })
	if err := node.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cluster to be ok", func() bool {
		info, err := node.ClusterInfo(ctx).Result()
		return err == nil && strings.Contains(info, "cluster_state:ok")
	})
	var c redis.UniversalClient = redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}})
	t.Cleanup(func() { _ = c.Close() })
	got, err := dedupe.MaxmemoryPolicies(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Policy != "allkeys-lfu" || !got[0].Evicts() || got[0].Addr == "" {
		t.Fatalf("MaxmemoryPolicies of the cluster = %+v", got)
	}
	// And the deduper works on it.
	d := dedupe.NewRedis(c, dedupe.Options{})
	cl := claim(t, d, paymentKey, dedupe.Claimed)
	commit(t, d, cl, dedupe.Committed)
	claim(t, d, paymentKey, dedupe.Done)
}
