package consumer_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// newConsumer builds a consumer the way consumer.Run does, from p's environment with extra overrides, and
// returns it (nil on error), its log and the error.
func newConsumer(t *testing.T, p *pipelinetest.Pipeline, extra map[string]string) (*consumer.Consumer, *pipelinetest.SyncBuffer, error) {
	t.Helper()
	env := map[string]string{}
	for k, v := range p.Env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := config.LoadConsumer(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &pipelinetest.SyncBuffer{}
	c, err := consumer.New(t.Context(), cfg, zerolog.New(logs), consumer.Deps{})
	return c, logs, err
}

// serve runs c until the test ends.
func serve(t *testing.T, c *consumer.Consumer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer stopped with %v", err)
		}
	})
}

// rawRedis is a client of p's Redis for changing its configuration; at cleanup it puts back what redistest
// starts with, for a server from REDIS_URL that other tests share.
func rawRedis(t *testing.T, p *pipelinetest.Pipeline) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(p.Redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = c.ConfigSet(ctx, "maxmemory-policy", dedupe.NoEviction).Err()
		_ = c.ConfigSet(ctx, "maxmemory", "0").Err()
		_ = c.Do(ctx, "ACL", "DELUSER", "app").Err()
		_ = c.Close()
	})
	return c
}

// Under any maxmemory-policy but noeviction a full Redis forgets dedupe keys (they all have a TTL), so the
// consumer refuses to start, naming the policy and the override; with the override it runs and says loudly
// what it risks.
func TestRefusesARedisThatEvicts(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	raw := rawRedis(t, p)
	for _, policy := range []string{"allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-lfu", "volatile-random"} {
		if err := raw.ConfigSet(t.Context(), "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
		c, _, err := newConsumer(t, p, nil)
		if err == nil || c != nil {
			t.Fatalf("%s: the consumer started", policy)
		}
		for _, want := range []string{"maxmemory-policy " + policy, "noeviction", "DEDUPE_ALLOW_EVICTION=true"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", policy, err, want)
			}
		}
	}

	c, logs, err := newConsumer(t, p, map[string]string{"DEDUPE_ALLOW_EVICTION": "true"})
	if err != nil {
		t.Fatalf("with DEDUPE_ALLOW_EVICTION=true: %v", err)
	}
	serve(t, c)
	line := logLine(t, logs, "DEDUPE_ALLOW_EVICTION=true")
	if !strings.Contains(line, `"level":"warn"`) || !strings.Contains(line, "volatile-random") {
		t.Fatalf("the override's warning: %s", line)
	}
}

// A Redis configured as the manifests configure it (noeviction and a maxmemory) starts the consumer without
// a warning; one without maxmemory gets a warning, as it will grow until something kills it.
func TestStartsOnNoEviction(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	unbounded, logs, err := newConsumer(t, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, unbounded)
	if line := logLine(t, logs, "no maxmemory"); !strings.Contains(line, `"level":"warn"`) {
		t.Fatalf("no maxmemory: %s", line)
	}

	if err := rawRedis(t, p).ConfigSet(t.Context(), "maxmemory", "64mb").Err(); err != nil {
		t.Fatal(err)
	}
	c, logs, err := newConsumer(t, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, c)
	if strings.Contains(logs.String(), `"level":"warn"`) {
		t.Fatalf("warnings on a noeviction Redis with a maxmemory:\n%s", logs)
	}
	// Every dedupe error series exists from the start, at zero.
	text := scrape(t, c)
	for _, op := range []string{"claim", "commit", "release"} {
		for _, k := range dedupe.Kinds {
			series := `wxpay_consumer_dedupe_errors_total{kind="` + k + `",op="` + op + `"} 0`
			if !strings.Contains(text, series) {
				t.Errorf("/metrics lacks %s", series)
			}
		}
	}
}

// Managed Redis services refuse CONFIG: the consumer cannot know the policy, warns once and runs.
func TestWarnsOnceWhenThePolicyCannotBeRead(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	raw := rawRedis(t, p)
	if err := raw.Do(t.Context(), "ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", "-config").Err(); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(p.Redis.URL())
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword("app", "secret")
	c, logs, err := newConsumer(t, p, map[string]string{"REDIS_URL": u.String()})
	if err != nil {
		t.Fatalf("CONFIG refused: %v", err)
	}
	serve(t, c)
	if n := strings.Count(logs.String(), "cannot read Redis's maxmemory-policy"); n != 1 {
		t.Fatalf("%d warnings about the unreadable policy, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "secret") {
		t.Fatal("the log holds the Redis password")
	}
}

func TestRedisDownAtStartFailsTheStart(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	p.Redis.Stop()
	start := time.Now()
	_, _, err := newConsumer(t, p, nil)
	if err == nil || !strings.Contains(err.Error(), "maxmemory-policy") {
		t.Fatalf("Redis down at start: %v, want an error about reading maxmemory-policy", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %s to give up", d)
	}
}

// An upgrade in place from the previous key format: a fact the previous version committed is recognised by
// a consumer started on the same Redis, and a retry of it publishes nothing.
func TestFactsDoneByThePreviousVersionStayDone(t *testing.T) {
	p := pipelinetest.Start(t, nil)
	raw := rawRedis(t, p)
	plain := samples.All()["REFUND.SUCCESS"]
	n := p.Build("REFUND.SUCCESS", plain, wechatsim.Options{})
	evs, err := events.Build(events.Notification{ID: n.ID, EventType: n.EventType, CreateTime: time.Now().Format(time.RFC3339), MchID: mchid}, plain)
	if err != nil || len(evs) != 1 {
		t.Fatalf("events.Build: %v, %d events", err, len(evs))
	}
	// What the previous version left: its key format, its "done", its 168 h TTL.
	if err := raw.Set(t.Context(), dedupe.LegacyPrefix+evs[0].DedupeKey, "done", 100*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	c, logs, err := newConsumer(t, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, c)
	logLine(t, logs, "previous key format")

	if code := p.Post(n); code != http.StatusNoContent {
		t.Fatalf("post: %d", code)
	}
	p.WaitFor(20*time.Second, "the retry settled", func() bool { return p.Count(topology.ArchiveStream) == 1 && p.Settled() })
	if got := p.Count(topology.EventsStream); got != 0 {
		t.Fatalf("%d events for a fact the previous version had published", got)
	}
	if !strings.Contains(logs.String(), `"outcome":"duplicate"`) {
		t.Fatalf("not settled as a duplicate:\n%s", logs)
	}
}

// logLine returns the first log line containing s, failing the test if there is none.
func logLine(t *testing.T, logs *pipelinetest.SyncBuffer, s string) string {
	t.Helper()
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	t.Fatalf("no log line with %q:\n%s", s, logs)
	return ""
}

// scrape returns the consumer's /metrics text. The admin listener is bound by New, so the request waits
// in its backlog until Serve answers it.
func scrape(t *testing.T, c *consumer.Consumer) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + c.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d, %v", resp.StatusCode, err)
	}
	return string(b)
}
