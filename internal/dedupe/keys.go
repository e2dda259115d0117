package dedupe

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key returns the Redis key of the fact key: prefix, the merchant (key up to
// its first ':', when it has one) and ':', then the first 128 bits of the
// SHA-256 of the whole key in unpadded base64url (22 characters).
//
// The consumer's keys are "<mchid>:<type>:<business ids…>", 60 to 110 bytes
// with the legacy prefix; this one is 42 bytes for a 10-digit merchant id,
// whatever the fact, and with the shared "1" value a fact costs about a third
// less Redis memory (BENCHMARKS.md, capacity). The merchant stays readable so
// that an operator can count or scan one merchant's facts
// (SCAN MATCH wxpay:dd:1900000100:*); it is not a Cluster hash tag, which
// would put every fact of a merchant on one node.
//
// Two facts of a merchant share a key only if their hashes agree in 128 bits:
// with n facts remembered, a new fact collides with one of them with
// probability n/2^128. At 1,000 notifications/s for 72 hours (n = 2.6e8) that
// is 8e-31 per fact and 2e-20 over a year of them. A collision would make the
// new fact look done: it would be acknowledged without an event.
func Key(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	var b strings.Builder
	b.Grow(len(prefix) + 12 + base64.RawURLEncoding.EncodedLen(16))
	b.WriteString(prefix)
	if merchant, _, ok := strings.Cut(key, ":"); ok {
		b.WriteString(merchant)
		b.WriteByte(':')
	}
	b.WriteString(base64.RawURLEncoding.EncodeToString(sum[:16]))
	return b.String()
}

// markerName is the key, under the compact prefix, that records when this
// Redis first served the compact format. It cannot collide with a fact's key:
// those end in 22 base64url characters, this one has 13 without a ':'.
const markerName = "compact-since"

// markerScript returns the marker's value, setting it to ARGV[1] first if it
// is absent.
var markerScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then
	return v
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// LegacyUntil says until when a deduper must still honour facts done under the
// previous key format (LegacyPrefix + key = "done"), so that an upgrade in
// place forgets nothing: until max(o.TTL, LegacyTTL) after the compact format
// was first used on this Redis. The first call records that moment in Redis
// (o.Prefix + "compact-since", unix milliseconds, no TTL); later calls, from
// any process, read it back. A Redis that holds no key at all when first
// asked (a new installation) has nothing to honour: the marker records 0 and
// the result is the zero time.
//
// Call it once at start and pass the result as Options.LegacyUntil. A Redis
// too full to record the marker (OOM) cannot be asked again later, so the
// window then starts now: the safe side, at the price of one GET per claim.
func LegacyUntil(ctx context.Context, c redis.UniversalClient, o Options, now time.Time) (time.Time, error) {
	o = o.withDefaults()
	window := max(o.TTL, LegacyTTL)
	n, err := c.DBSize(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("dedupe: count keys: %w: %w", ErrUnavailable, err)
	}
	since := strconv.FormatInt(now.UnixMilli(), 10)
	if n == 0 {
		since = "0"
	}
	v, err := markerScript.Run(ctx, c, []string{o.Prefix + markerName}, since).Text()
	if redis.IsOOMError(err) {
		return now.Add(window), nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("dedupe: read %s: %w: %w", o.Prefix+markerName, ErrUnavailable, err)
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return time.Time{}, fmt.Errorf("dedupe: %s: %w", o.Prefix+markerName, ErrUnexpectedValue)
	}
	if ms == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms).Add(window), nil
}
