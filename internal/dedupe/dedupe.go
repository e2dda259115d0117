// Package dedupe records which business facts have been processed, in Redis,
// so that the consumer publishes each fact once although WeChat Pay delivers
// it many times. It works in two phases: a short lease while the fact is
// being published, then a long-lived "done" once it has been.
package dedupe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for the zero Options.
const (
	// DefaultPrefix starts every key of the compact format (see Key). It is
	// short on purpose: with a 10-digit merchant id the whole key is 42 bytes
	// and fits the allocator's 48-byte size class (BENCHMARKS.md, capacity).
	DefaultPrefix = "wxpay:dd:"
	DefaultLease  = 30 * time.Second
	// DefaultTTL is WeChat Pay's retry horizon (24 h 4 min after the first
	// attempt) plus two days in which a stalled or lagging consumer can catch
	// up before a late retry of a fact it already published could pass as
	// new. README "Capacity" gives what each hour costs in memory.
	DefaultTTL = 72 * time.Hour
)

// The key format before compact keys: LegacyPrefix + the caller's key, holding
// legacyValueDone. A Redis upgraded in place still holds such facts for up to
// their TTL, which was 168 hours by default (LegacyTTL); Claim honours them
// while Options.LegacyUntil has not passed (see LegacyUntil).
const (
	LegacyPrefix    = "wxpay:dedupe:"
	LegacyTTL       = 168 * time.Hour
	legacyValueDone = "done"
)

// Values stored under a key. They identify the phase and the lease owner and
// never carry payload data. Done is "1" because Redis stores a small integer
// value as a shared object, without an allocation of its own, unless the
// maxmemory-policy is an LRU or LFU one: 32 bytes less per fact than "done".
const (
	valueDone        = "1"
	valueLeasePrefix = "processing:"
)

// minLeaseOrTTL keeps sub-millisecond durations from becoming PX 0, which
// Redis rejects.
const minLeaseOrTTL = time.Millisecond

var (
	// ErrUnavailable means the state of a fact could not be read or written,
	// so the caller must retry later: neither drop the notification nor
	// publish it. Every error from a Redis round trip wraps it together with
	// the original error: network failures, timeouts, a cancelled context, and
	// error replies such as LOADING, READONLY or CLUSTERDOWN during failover.
	ErrUnavailable = errors.New("dedupe: redis unavailable")

	// ErrUnexpectedValue means a key holds a value this package did not
	// write. Something else uses the key space; retrying will not help
	// until it is cleaned up.
	ErrUnexpectedValue = errors.New("dedupe: unexpected value in key")
)

// State says what Claim found.
type State int

const (
	// Claimed means the caller owns the lease: publish, then Commit (or
	// Release on failure).
	Claimed State = iota + 1
	// Done means the fact was already processed: drop the notification.
	Done
	// Busy means another worker holds a live lease: retry later.
	Busy
)

var stateNames = [...]string{Claimed: "claimed", Done: "done", Busy: "busy"}

// String returns a lower-case name suitable for a log field or metric label.
func (s State) String() string {
	if s > 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Claim is the result of Redis.Claim. Pass it unchanged to Commit or Release.
type Claim struct {
	// Key is the caller's key, without Options.Prefix.
	Key string
	// Token identifies this claim's lease; empty unless State is Claimed.
	Token string
	State State
}

// CommitResult says what Commit found under the key before recording the
// fact done. Everything but Committed means the lease was lost, so another
// worker may have published the same event too (JetStream's Msg-Id window
// may still catch it); count them, they say Lease is too short.
type CommitResult int

const (
	// Committed means the caller still held its lease: the normal case.
	Committed CommitResult = iota + 1
	// LeaseExpired means the lease had expired and nobody had claimed the
	// fact since.
	LeaseExpired
	// LeaseTaken means another worker had claimed the fact after the lease
	// expired; its own Commit will report AlreadyDone.
	LeaseTaken
	// AlreadyDone means another worker had committed the fact first, or,
	// rarely, that the client retried this Commit after losing the reply
	// of an attempt that succeeded.
	AlreadyDone
)

var commitResultNames = [...]string{
	Committed:    "committed",
	LeaseExpired: "lease_expired",
	LeaseTaken:   "lease_taken",
	AlreadyDone:  "already_done",
}

// String returns a lower-case name suitable for a log field or metric label.
func (r CommitResult) String() string {
	if r > 0 && int(r) < len(commitResultNames) {
		return commitResultNames[r]
	}
	return fmt.Sprintf("CommitResult(%d)", int(r))
}

// LeaseLost reports whether the caller no longer held its lease at Commit.
func (r CommitResult) LeaseLost() bool { return r != Committed }

// Options configures Redis. Zero or negative fields take their defaults.
type Options struct {
	// Prefix starts every key (see Key); default DefaultPrefix.
	Prefix string
	// Lease is how long a claim stays exclusive without a Commit or Release;
	// default DefaultLease. It must cover the publish and its PubAck, and is
	// what a crashed worker costs: the fact is Busy until the lease expires.
	Lease time.Duration
	// TTL is how long a fact stays Done; default DefaultTTL.
	TTL time.Duration
	// LegacyPrefix is where the previous key format kept facts; default
	// LegacyPrefix.
	LegacyPrefix string
	// LegacyUntil is when Claim stops looking for a fact done under the
	// previous key format; the zero time means it never looks. Programs take
	// it from LegacyUntil.
	LegacyUntil time.Time
}

// Each script touches exactly one key, passed in KEYS[1], so in a Cluster it
// runs on the node owning that key's slot and needs no {hash-tag}.
var (
	// claimScript returns 1 when it set the lease, else the current value.
	// It reads before it writes so that a fact already done is recognised
	// even when Redis is full and refuses every write (noeviction): the
	// duplicate is dropped instead of retried. The script runs atomically,
	// so the SET needs no NX. SET NX … GET would need Redis 7.
	claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
	return v
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

	// commitScript records the fact done unless it already is, and reports
	// what it found: 1 our lease, 2 nothing (expired), 3 another lease,
	// 0 already done. It overwrites another worker's lease on purpose: our
	// event is published, so done is the truth.
	//
	// Above maxmemory Redis refuses a script's first memory-growing write but
	// lets a script that has already written finish, to keep it atomic. The
	// PEXPIRE on the existing lease is that first write, so a fact whose
	// event is already out still gets its done mark when Redis is full,
	// rather than waiting for its lease to expire and being published again.
	// Replacing the lease value by the shared "1" frees memory. With the
	// lease gone (v is nil) there is nothing to overwrite, and a full Redis
	// refuses the SET as it should.
	commitScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == ARGV[2] then
	return 0
end
if v then
	redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if v == ARGV[1] then
	return 1
elseif v then
	return 3
end
return 2
`)

	// releaseScript deletes the key only if it still holds our lease, so a
	// late Release can neither free another worker's lease nor forget a done.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
`)
)

var commitResults = map[int64]CommitResult{0: AlreadyDone, 1: Committed, 2: LeaseExpired, 3: LeaseTaken}

// Redis is a two-phase deduper on a single node, Sentinel or Cluster Redis.
// It is safe for concurrent use.
type Redis struct {
	c            redis.UniversalClient
	prefix       string
	legacyPrefix string
	legacyUntil  time.Time
	lease        int64 // milliseconds
	ttl          int64 // milliseconds
}

// NewRedis returns a deduper storing its keys through c.
func NewRedis(c redis.UniversalClient, o Options) *Redis {
	o = o.withDefaults()
	return &Redis{
		c:            c,
		prefix:       o.Prefix,
		legacyPrefix: o.LegacyPrefix,
		legacyUntil:  o.LegacyUntil,
		lease:        max(o.Lease, minLeaseOrTTL).Milliseconds(),
		ttl:          max(o.TTL, minLeaseOrTTL).Milliseconds(),
	}
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.LegacyPrefix == "" {
		o.LegacyPrefix = LegacyPrefix
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	return o
}

// Key returns the Redis key under which this deduper keeps the fact key.
func (r *Redis) Key(key string) string { return Key(r.prefix, key) }

// Claim takes a lease on key unless the fact is done or leased by another
// worker. Only a Claimed result carries a Token.
func (r *Redis) Claim(ctx context.Context, key string) (Claim, error) {
	if key == "" {
		return Claim{}, errors.New("dedupe: claim: empty key")
	}
	if time.Now().Before(r.legacyUntil) {
		if c, found, err := r.claimLegacy(ctx, key); found || err != nil {
			return c, err
		}
	}
	token := newToken()
	v, err := claimScript.Run(ctx, r.c, []string{r.Key(key)}, valueLeasePrefix+token, r.lease).Result()
	return claimResult(key, token, v, err)
}

// newToken identifies one lease: at least 128 random bits; never fails.
func newToken() string { return rand.Text() }

// claimLegacy looks for key under the previous key format. A plain GET, not
// part of the claim script: in a Cluster the two keys live in different slots.
// found is false when the previous format knows nothing of the fact.
func (r *Redis) claimLegacy(ctx context.Context, key string) (c Claim, found bool, err error) {
	v, err := r.c.Get(ctx, r.legacyPrefix+key).Result()
	return legacyResult(key, v, err)
}

// Commit records the fact done for TTL. Call it once the domain event's
// publish is acknowledged. It records done even if the lease was lost,
// because the event is published whoever holds the lease; the result says
// whether it was lost. Committing a done fact changes nothing.
func (r *Redis) Commit(ctx context.Context, c Claim) (CommitResult, error) {
	if err := c.owned("commit"); err != nil {
		return 0, err
	}
	n, err := commitScript.Run(ctx, r.c, []string{r.Key(c.Key)}, valueLeasePrefix+c.Token, valueDone, r.ttl).Int64()
	return commitResult(c.Key, n, err)
}

// Release gives the lease up so another delivery can claim the fact at once.
// Call it when processing fails before the publish. It deletes the key only
// while it still holds this claim's lease; otherwise, and for a claim that is
// not Claimed, it does nothing.
func (r *Redis) Release(ctx context.Context, c Claim) error {
	if c.State != Claimed {
		return nil
	}
	if err := c.owned("release"); err != nil {
		return err
	}
	if err := releaseScript.Run(ctx, r.c, []string{r.Key(c.Key)}, valueLeasePrefix+c.Token).Err(); err != nil {
		return fmt.Errorf("dedupe: release %s: %w: %w", c.Key, ErrUnavailable, err)
	}
	return nil
}

func (c Claim) owned(op string) error {
	if c.State != Claimed || c.Key == "" || c.Token == "" {
		return fmt.Errorf("dedupe: %s %q: claim is %v, not an owned lease", op, c.Key, c.State)
	}
	return nil
}
