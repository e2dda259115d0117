// Package devstore is the dev mode's embedded dedupe store: the same two-phase claim/commit/release as
// internal/dedupe, kept in a JetStream key-value bucket with per-key TTLs instead of Redis, so that
// `wxpayctl dev` needs nothing but itself and still remembers processed facts across restarts.
package devstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/dedupe"
)

// DefaultBucket is the key-value bucket the dev mode uses.
const DefaultBucket = "wxpay_dedupe"

// markerTTL is how long JetStream keeps the marker it leaves when a key's TTL expires.
const markerTTL = time.Minute

// maxAttempts bounds the compare-and-set loops; each lost race means another worker wrote the key, so a
// handful of rounds always settles unless something keeps rewriting it.
const maxAttempts = 8

// Values stored under a key, as in internal/dedupe: a phase and a lease owner, never payload data. A lease
// also records its deadline so that a lease JetStream has not yet expired (TTLs are enforced in whole
// seconds, and a little late) is not mistaken for a live one.
const (
	valueDone        = "done"
	valueLeasePrefix = "processing:"
)

// Options configures a Store. Zero fields take their defaults.
type Options struct {
	// Bucket is the key-value bucket; default DefaultBucket.
	Bucket string
	// Lease is how long a claim stays exclusive without Commit or Release; default dedupe.DefaultLease.
	// JetStream counts TTLs in whole seconds: it is rounded up to at least one second. An abandoned lease
	// stays in the bucket for two leases (see leaseTTL) but may be taken over after one.
	Lease time.Duration
	// TTL is how long a fact stays done; default dedupe.DefaultTTL. Rounded up like Lease.
	TTL time.Duration
	// Storage is where the bucket lives; default file storage (it survives restarts).
	Storage jetstream.StorageType
	// Replicas of the bucket; default 1.
	Replicas int
}

// Store is a two-phase deduper on a JetStream key-value bucket. It satisfies consumer.Deduper and is safe
// for concurrent use by any number of workers and processes sharing the bucket.
type Store struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	subject string // "$KV.<bucket>." — writes with a per-message TTL go straight to the bucket's stream
	lease   time.Duration
	ttl     time.Duration
	now     func() time.Time
}

// New creates or updates the bucket (with per-key TTLs enabled) and returns a Store on it.
func New(ctx context.Context, js jetstream.JetStream, o Options) (*Store, error) {
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.Lease <= 0 {
		o.Lease = dedupe.DefaultLease
	}
	if o.TTL <= 0 {
		o.TTL = dedupe.DefaultTTL
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         o.Bucket,
		Description:    "wxpay-events dev mode: business facts already published (dedupe)",
		History:        1,
		Storage:        o.Storage,
		Replicas:       max(o.Replicas, 1),
		LimitMarkerTTL: markerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("devstore: bucket %s: %w", o.Bucket, err)
	}
	return &Store{
		js:      js,
		kv:      kv,
		subject: "$KV." + o.Bucket + ".",
		lease:   wholeSeconds(o.Lease),
		ttl:     wholeSeconds(o.TTL),
		now:     time.Now,
	}, nil
}

// Claim takes a lease on key unless the fact is done or leased by another worker. Only a Claimed result
// carries a Token.
func (s *Store) Claim(ctx context.Context, key string) (dedupe.Claim, error) {
	if key == "" {
		return dedupe.Claim{}, errors.New("devstore: claim: empty key")
	}
	k := kvKey(key)
	owner := rand.Text()
	for range maxAttempts {
		deadline := s.now().Add(s.lease)
		value := leaseValue(owner, deadline)
		rev, err := s.kv.Create(ctx, k, []byte(value), jetstream.KeyTTL(s.leaseTTL()))
		if err == nil {
			return claimed(key, owner, rev, deadline), nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return dedupe.Claim{}, unavailable("claim", key, err)
		}
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // expired or released since Create looked: try again
		}
		if err != nil {
			return dedupe.Claim{}, unavailable("claim", key, err)
		}
		cur := string(e.Value())
		switch {
		case cur == valueDone:
			return dedupe.Claim{Key: key, State: dedupe.Done}, nil
		case strings.HasPrefix(cur, valueLeasePrefix):
			if until, ok := parseLease(cur); ok && s.now().Before(until) {
				return dedupe.Claim{Key: key, State: dedupe.Busy}, nil
			}
			// The lease is over but JetStream has not removed it yet: take it over, unless someone else
			// wrote the key in between.
			rev, err := s.write(ctx, k, value, e.Revision(), s.leaseTTL())
			if err == nil {
				return claimed(key, owner, rev, deadline), nil
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				return dedupe.Claim{}, unavailable("claim", key, err)
			}
		default:
			// Not %v of the value: whatever wrote it might have put data there.
			return dedupe.Claim{}, fmt.Errorf("devstore: claim %s: %w", key, dedupe.ErrUnexpectedValue)
		}
	}
	// Others keep rewriting the key: behave as if it were leased, and let the caller retry later.
	return dedupe.Claim{Key: key, State: dedupe.Busy}, nil
}

// Commit records the fact done for TTL. Call it once the domain event's publish is acknowledged. Like
// dedupe.Redis it records done even if the lease was lost, and says so in the result.
func (s *Store) Commit(ctx context.Context, c dedupe.Claim) (dedupe.CommitResult, error) {
	rev, deadline, err := parseToken("commit", c)
	if err != nil {
		return 0, err
	}
	k := kvKey(c.Key)
	// The normal case: the key still holds the revision this claim wrote.
	_, err = s.write(ctx, k, valueDone, rev, s.ttl)
	if err == nil {
		if s.now().After(deadline) {
			return dedupe.LeaseExpired, nil
		}
		return dedupe.Committed, nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, unavailable("commit", c.Key, err)
	}
	for range maxAttempts {
		e, err := s.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Our lease expired and nobody claimed the fact since.
			if _, err := s.kv.Create(ctx, k, []byte(valueDone), jetstream.KeyTTL(s.ttl)); err == nil {
				return dedupe.LeaseExpired, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, unavailable("commit", c.Key, err)
			}
			continue
		case err != nil:
			return 0, unavailable("commit", c.Key, err)
		}
		cur := string(e.Value())
		if cur == valueDone {
			return dedupe.AlreadyDone, nil
		}
		if !strings.HasPrefix(cur, valueLeasePrefix) {
			return 0, fmt.Errorf("devstore: commit %s: %w", c.Key, dedupe.ErrUnexpectedValue)
		}
		// Another worker's lease (ours would have matched the revision): overwrite it on purpose, our event
		// is published, so done is the truth. Its own Commit will report AlreadyDone.
		if _, err := s.write(ctx, k, valueDone, e.Revision(), s.ttl); err == nil {
			return dedupe.LeaseTaken, nil
		} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, unavailable("commit", c.Key, err)
		}
	}
	return 0, unavailable("commit", c.Key, errors.New("the key kept changing under concurrent writers"))
}

// Release gives the lease up so that another delivery can claim the fact at once. It removes the key only
// while it still holds this claim's revision; otherwise, and for a claim that is not Claimed, it does
// nothing.
func (s *Store) Release(ctx context.Context, c dedupe.Claim) error {
	if c.State != dedupe.Claimed {
		return nil
	}
	rev, _, err := parseToken("release", c)
	if err != nil {
		return err
	}
	// A purge with a TTL leaves a marker that JetStream removes by itself, so released keys leave nothing.
	err = s.kv.Purge(ctx, kvKey(c.Key), jetstream.LastRevision(rev), jetstream.PurgeTTL(markerTTL))
	if err == nil || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil
	}
	return unavailable("release", c.Key, err)
}

// leaseTTL is how long JetStream keeps a lease: twice the lease. The lease's own deadline (in its value)
// decides when another worker may take it over; the TTL only clears leases abandoned by crashed workers.
// The margin matters: when a message's TTL expires, the server decides that it is the subject's last
// message and then, asynchronously, writes a delete marker that rolls the subject up. A Commit landing
// between the two would be erased with it. With the margin, a Commit that late is one a whole lease
// after its deadline, which the consumer's call timeouts rule out.
func (s *Store) leaseTTL() time.Duration { return 2 * s.lease }

// write stores value under key if the key's latest revision is expect (0: the key has no message), with
// a per-message TTL; kv.Update cannot set one.
func (s *Store) write(ctx context.Context, key, value string, expect uint64, ttl time.Duration) (uint64, error) {
	m := &nats.Msg{Subject: s.subject + key, Data: []byte(value), Header: nats.Header{}}
	ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(expect), jetstream.WithMsgTTL(ttl))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			return 0, fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
		}
		return 0, err
	}
	return ack.Sequence, nil
}

func claimed(key, owner string, rev uint64, deadline time.Time) dedupe.Claim {
	return dedupe.Claim{Key: key, State: dedupe.Claimed,
		Token: owner + "." + strconv.FormatUint(rev, 10) + "." + strconv.FormatInt(deadline.UnixMilli(), 10)}
}

// parseToken reads the revision a claim's lease was written at, and the lease's deadline, from its token
// ("<owner>.<revision>.<deadline in unix ms>").
func parseToken(op string, c dedupe.Claim) (rev uint64, deadline time.Time, err error) {
	bad := fmt.Errorf("devstore: %s %q: claim is %v, not an owned lease", op, c.Key, c.State)
	if c.State != dedupe.Claimed || c.Key == "" {
		return 0, time.Time{}, bad
	}
	parts := strings.Split(c.Token, ".")
	if len(parts) != 3 || parts[0] == "" {
		return 0, time.Time{}, bad
	}
	rev, err1 := strconv.ParseUint(parts[1], 10, 64)
	ms, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || rev == 0 {
		return 0, time.Time{}, bad
	}
	return rev, time.UnixMilli(ms), nil
}

func leaseValue(owner string, deadline time.Time) string {
	return valueLeasePrefix + owner + ":" + strconv.FormatInt(deadline.UnixMilli(), 10)
}

// parseLease reads a lease value's deadline.
func parseLease(v string) (deadline time.Time, ok bool) {
	rest, _ := strings.CutPrefix(v, valueLeasePrefix)
	_, ms, found := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !found || err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

func unavailable(op, key string, err error) error {
	return fmt.Errorf("devstore: %s %s: %w: %w", op, key, dedupe.ErrUnavailable, err)
}

// wholeSeconds rounds d up to whole seconds, at least one: JetStream's message TTLs are whole seconds.
func wholeSeconds(d time.Duration) time.Duration {
	return max(time.Second, (d+time.Second-1)/time.Second*time.Second)
}

// kvKey maps a dedupe key ("<mchid>:<type>:<part>…", parts %-escaped) onto the characters a bucket key
// allows ([-/_=.A-Za-z0-9], no empty dot-separated token), one to one: ':' becomes '/', letters, digits,
// '-', '_' and inner single dots stay, and every other byte becomes =XX.
func kvKey(key string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(key) + 8)
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		case c == ':':
			b.WriteByte('/')
		case c == '.' && i > 0 && i < len(key)-1 && key[i-1] != '.' && key[i-1] != ':' && key[i+1] != '.' && key[i+1] != ':':
			b.WriteByte(c)
		default:
			b.WriteByte('=')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0x0f])
		}
	}
	return b.String()
}
