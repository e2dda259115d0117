package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// NoEviction is the one maxmemory-policy under which Redis never drops a key
// to make room: a full Redis refuses writes instead, and the consumer retries.
// Under every other policy a full Redis deletes keys with a TTL (volatile-*)
// or any key (allkeys-*), and every dedupe key has a TTL: a fact it forgets is
// published again when WeChat Pay retries it.
const NoEviction = "noeviction"

// ErrConfigRefused means Redis answered CONFIG GET maxmemory-policy with an
// error that retrying will not change: the command is disabled or renamed (as
// managed services do), or the user lacks the permission.
var ErrConfigRefused = errors.New("dedupe: CONFIG GET maxmemory-policy refused")

// NodePolicy is the memory configuration of one Redis node.
type NodePolicy struct {
	// Addr is the node's address as the client knows it.
	Addr string
	// Policy is its maxmemory-policy.
	Policy string
	// MaxMemory is its maxmemory in bytes; 0 means none: under noeviction such
	// a Redis never refuses a write and grows until its container or host
	// runs out of memory.
	MaxMemory int64
}

// Evicts reports whether the node may delete dedupe keys when it is full.
func (n NodePolicy) Evicts() bool { return n.Policy != NoEviction }

// MaxmemoryPolicies reads maxmemory-policy and maxmemory from every node that
// holds dedupe keys: the single node, the Sentinel master, or each Cluster master (a
// replica deletes only what its master tells it to). It returns an error
// wrapping ErrConfigRefused when a node refuses to say, and one wrapping
// ErrUnavailable when a node cannot answer now (down, loading, failing over).
func MaxmemoryPolicies(ctx context.Context, c redis.UniversalClient) ([]NodePolicy, error) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		var (
			mu  sync.Mutex
			out []NodePolicy
		)
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			p, err := maxmemoryPolicy(ctx, n, n.Options().Addr)
			if err != nil {
				return err
			}
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
			return nil
		})
		return out, err
	}
	addr := ""
	if n, ok := c.(*redis.Client); ok {
		addr = n.Options().Addr
		if addr == "FailoverClient" { // what go-redis puts there for a Sentinel client, whose master moves
			addr = "the Sentinel master"
		}
	}
	p, err := maxmemoryPolicy(ctx, c, addr)
	if err != nil {
		return nil, err
	}
	return []NodePolicy{p}, nil
}

func maxmemoryPolicy(ctx context.Context, c redis.Cmdable, addr string) (NodePolicy, error) {
	// One pattern, not two parameters: Redis before 7 takes a single one.
	m, err := c.ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		if refused(err) {
			return NodePolicy{}, fmt.Errorf("%w by %s: %w", ErrConfigRefused, addr, err)
		}
		return NodePolicy{}, fmt.Errorf("dedupe: CONFIG GET maxmemory-policy on %s: %w: %w", addr, ErrUnavailable, err)
	}
	p, ok := m["maxmemory-policy"]
	if !ok || p == "" {
		// Some proxies answer an unknown or hidden parameter with an empty list.
		return NodePolicy{}, fmt.Errorf("%w by %s: empty answer", ErrConfigRefused, addr)
	}
	limit, err := strconv.ParseInt(m["maxmemory"], 10, 64)
	if err != nil {
		return NodePolicy{}, fmt.Errorf("%w by %s: maxmemory %q", ErrConfigRefused, addr, m["maxmemory"])
	}
	return NodePolicy{Addr: addr, Policy: p, MaxMemory: limit}, nil
}

// refused reports whether err is Redis's answer that it will not run CONFIG
// GET for us, as opposed to one that it cannot serve anything right now or
// that the credentials are wrong (which every later command would hit too).
func refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) || errors.Is(err, redis.Nil) {
		return false
	}
	return !unavailableReply(err) && !redis.IsAuthError(err)
}

// unavailableReply reports whether err is one of Redis's answers that it
// cannot serve the command now but may soon: a failover or a restart.
func unavailableReply(err error) bool {
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) || redis.IsTryAgainError(err) || redis.IsMaxClientsError(err)
}
