package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The batch methods do what Claim, Commit and Release do, for many facts in
// one round trip: the same scripts, sent in one pipeline. Each fact keeps its
// own result and its own error, exactly as its single call would have
// returned them, so that a caller settles each fact (and each message) on its
// own: a key refused by a full Redis fails alone, its neighbours go on.
//
// A pipeline is not a transaction: the scripts are atomic one by one, as they
// are when called singly, and nothing more is promised. In a Cluster go-redis
// splits the pipeline by node.

// ClaimMany is Claim for each of keys. claims[i] and errs[i] are what
// Claim(ctx, keys[i]) would have returned. The same key twice gets one lease
// and one Busy, as two workers claiming it at once would.
//
// While Options.LegacyUntil has not passed, the previous key format is read
// first in a pipeline of its own (in a Cluster the two formats live in
// different slots), and only the facts it does not know are claimed: two
// round trips in that window, one after it.
func (r *Redis) ClaimMany(ctx context.Context, keys []string) (claims []Claim, errs []error) {
	claims = make([]Claim, len(keys))
	errs = make([]error, len(keys))
	todo := make([]int, 0, len(keys)) // indexes of the keys still to claim
	for i, k := range keys {
		if k == "" {
			errs[i] = errors.New("dedupe: claim: empty key")
			continue
		}
		todo = append(todo, i)
	}
	if len(todo) > 0 && time.Now().Before(r.legacyUntil) {
		todo = r.claimLegacyMany(ctx, keys, todo, claims, errs)
	}
	if len(todo) == 0 {
		return claims, errs
	}
	calls := make([]scriptCall, len(todo))
	tokens := make([]string, len(todo))
	for j, i := range todo {
		tokens[j] = newToken()
		calls[j] = scriptCall{key: r.Key(keys[i]), args: []any{valueLeasePrefix + tokens[j], r.lease}}
	}
	cmds := runScripts(ctx, r.c, claimScript, calls)
	for j, i := range todo {
		claims[i], errs[i] = claimResult(keys[i], tokens[j], cmds[j].Val(), cmds[j].Err())
	}
	return claims, errs
}

// claimLegacyMany reads the previous key format of keys[todo] in one
// pipeline, settles the facts it knows (or could not read) in claims and errs,
// and returns the indexes still to claim.
func (r *Redis) claimLegacyMany(ctx context.Context, keys []string, todo []int, claims []Claim, errs []error) []int {
	pipe := r.c.Pipeline()
	gets := make([]*redis.StringCmd, len(todo))
	for j, i := range todo {
		gets[j] = pipe.Get(ctx, r.legacyPrefix+keys[i])
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	rest := todo[:0]
	for j, i := range todo {
		c, found, err := legacyResult(keys[i], gets[j].Val(), gets[j].Err())
		if found || err != nil {
			claims[i], errs[i] = c, err
			continue
		}
		rest = append(rest, i)
	}
	return rest
}

// CommitMany is Commit for each of cs. results[i] and errs[i] are what
// Commit(ctx, cs[i]) would have returned.
func (r *Redis) CommitMany(ctx context.Context, cs []Claim) (results []CommitResult, errs []error) {
	results = make([]CommitResult, len(cs))
	errs = make([]error, len(cs))
	calls := make([]scriptCall, 0, len(cs))
	idx := make([]int, 0, len(cs))
	for i, c := range cs {
		if err := c.owned("commit"); err != nil {
			errs[i] = err
			continue
		}
		calls = append(calls, scriptCall{key: r.Key(c.Key), args: []any{valueLeasePrefix + c.Token, valueDone, r.ttl}})
		idx = append(idx, i)
	}
	if len(calls) == 0 {
		return results, errs
	}
	cmds := runScripts(ctx, r.c, commitScript, calls)
	for j, i := range idx {
		n, err := cmds[j].Int64()
		results[i], errs[i] = commitResult(cs[i].Key, n, err)
	}
	return results, errs
}

// ReleaseMany is Release for each of cs; errs[i] is what Release(ctx, cs[i])
// would have returned.
func (r *Redis) ReleaseMany(ctx context.Context, cs []Claim) (errs []error) {
	errs = make([]error, len(cs))
	calls := make([]scriptCall, 0, len(cs))
	idx := make([]int, 0, len(cs))
	for i, c := range cs {
		if c.State != Claimed {
			continue
		}
		if err := c.owned("release"); err != nil {
			errs[i] = err
			continue
		}
		calls = append(calls, scriptCall{key: r.Key(c.Key), args: []any{valueLeasePrefix + c.Token}})
		idx = append(idx, i)
	}
	if len(calls) == 0 {
		return errs
	}
	cmds := runScripts(ctx, r.c, releaseScript, calls)
	for j, i := range idx {
		if err := cmds[j].Err(); err != nil {
			errs[i] = fmt.Errorf("dedupe: release %s: %w: %w", cs[i].Key, ErrUnavailable, err)
		}
	}
	return errs
}

// scriptCall is one script invocation on one key.
type scriptCall struct {
	key  string
	args []any
}

// runScripts sends one EVALSHA of s per call in one pipeline. A Redis that
// does not know the script (restarted, failed over, SCRIPT FLUSH) answers
// NOSCRIPT; those calls are sent again as EVAL in a second pipeline, which
// loads the script, as Script.Run does for a single call.
func runScripts(ctx context.Context, c redis.UniversalClient, s *redis.Script, calls []scriptCall) []*redis.Cmd {
	cmds := make([]*redis.Cmd, len(calls))
	pipe := c.Pipeline()
	for i, call := range calls {
		cmds[i] = s.EvalSha(ctx, pipe, []string{call.key}, call.args...)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	var again []int
	for i, cmd := range cmds {
		if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return cmds
	}
	pipe = c.Pipeline()
	for _, i := range again {
		cmds[i] = s.Eval(ctx, pipe, []string{calls[i].key}, calls[i].args...)
	}
	_, _ = pipe.Exec(ctx)
	return cmds
}

// claimResult interprets the claim script's answer for key, claimed with
// token; err is the call's error.
func claimResult(key, token string, v any, err error) (Claim, error) {
	if err != nil {
		return Claim{}, fmt.Errorf("dedupe: claim %s: %w: %w", key, ErrUnavailable, err)
	}
	switch v := v.(type) {
	case int64:
		return Claim{Key: key, Token: token, State: Claimed}, nil
	case string:
		switch {
		// The client retries a call whose reply was lost, and the retry
		// finds the lease the first attempt took.
		case v == valueLeasePrefix+token:
			return Claim{Key: key, Token: token, State: Claimed}, nil
		case v == valueDone:
			return Claim{Key: key, State: Done}, nil
		case strings.HasPrefix(v, valueLeasePrefix):
			return Claim{Key: key, State: Busy}, nil
		}
	}
	// Not %v of the value: whatever wrote it might have put data there.
	return Claim{}, fmt.Errorf("dedupe: claim %s: %w", key, ErrUnexpectedValue)
}

// legacyResult interprets a GET of key under the previous key format. found
// is false when the previous format knows nothing of the fact.
func legacyResult(key, v string, err error) (c Claim, found bool, _ error) {
	switch {
	case errors.Is(err, redis.Nil):
		return Claim{}, false, nil
	case err != nil:
		return Claim{}, false, fmt.Errorf("dedupe: claim %s: %w: %w", key, ErrUnavailable, err)
	case v == legacyValueDone:
		return Claim{Key: key, State: Done}, true, nil
	case strings.HasPrefix(v, valueLeasePrefix):
		// A consumer of the previous version is publishing it right now,
		// during a rolling upgrade.
		return Claim{Key: key, State: Busy}, true, nil
	}
	return Claim{}, false, fmt.Errorf("dedupe: claim %s: %w", key, ErrUnexpectedValue)
}

// commitResult interprets the commit script's answer n for key; err is the
// call's error.
func commitResult(key string, n int64, err error) (CommitResult, error) {
	if err != nil {
		return 0, fmt.Errorf("dedupe: commit %s: %w: %w", key, ErrUnavailable, err)
	}
	res, ok := commitResults[n]
	if !ok {
		return 0, fmt.Errorf("dedupe: commit %s: script returned %d", key, n)
	}
	return res, nil
}
