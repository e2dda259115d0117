package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/dedupe"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// capacityResult is what the capacity part measured: Redis memory per business fact for each key format,
// and stream storage per notification for each of the simulator's samples.
type capacityResult struct {
	RedisVersion, Allocator string
	Keys                    []keyCost
	// LegacyKeyLen is the range of the previous format's key lengths over the samples' facts.
	LegacyKeyLen [2]int
	Samples      []sampleCost
	Streams      map[string]streamCost // after every sample and the dead letters
	DLQ          streamCost            // the dead letters alone
}

// keyCost is one key format's cost in Redis over N facts.
type keyCost struct {
	Format  string
	Example string
	N       int
	Used    int64   // INFO used_memory after − before: everything the N facts cost, hash tables included
	PerFact float64 // Used / N
	Usage   float64 // mean MEMORY USAGE of a sample of the keys: key, value and entry, no hash table slots
}

// sampleCost is what one sample's notifications added to each stream, per notification.
type sampleCost struct {
	Name   string
	N      int
	Body   int // bytes of one notification's HTTP body as the receiver stores it
	Events int // events per notification
	Per    map[string]float64
}

type streamCost struct {
	Msgs, Bytes uint64
	Disk        int64 // bytes of the stream's directory in the store (-1 when not found)
}

func (c streamCost) perMsg() float64 {
	if c.Msgs == 0 {
		return 0
	}
	return float64(c.Bytes) / float64(c.Msgs)
}

// capacity measures, with a real redis-server and an embedded nats-server, what each fact costs in Redis
// and what each notification costs in the streams, and prints README's capacity table from the figures.
func (s *suite) capacity() error {
	res := &capacityResult{Streams: map[string]streamCost{}}
	s.res.Capacity = res
	if err := s.capacityRedis(res); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if err := s.capacityStreams(res); err != nil {
		return fmt.Errorf("streams: %w", err)
	}
	s.capacityTable(res)
	return nil
}

// paymentFact is the dedupe key internal/events gives the i-th payment: merchant, type, a 28-digit
// transaction_id like WeChat's.
func paymentFact(i int) string { return fmt.Sprintf("%s:payment.succeeded:4200%024d", mchid, i) }

func (s *suite) capacityRedis(res *capacityResult) error {
	r, err := startRedis()
	if err != nil {
		return err
	}
	defer r.Stop()
	c := redis.NewClient(&redis.Options{Addr: r.addr})
	defer func() { _ = c.Close() }()
	ctx := s.ctx
	// As the manifests configure it. Under noeviction (and any policy but the LRU/LFU ones) Redis stores a
	// small integer value as a shared object.
	for k, v := range map[string]string{"maxmemory-policy": dedupe.NoEviction, "maxmemory": "8gb"} {
		if err := c.ConfigSet(ctx, k, v).Err(); err != nil {
			return err
		}
	}
	info, err := c.InfoMap(ctx, "server", "memory").Result()
	if err != nil {
		return err
	}
	res.RedisVersion, res.Allocator = info["Server"]["redis_version"], info["Memory"]["mem_allocator"]
	s.printf("   Redis %s (%s), maxmemory-policy noeviction, %d facts per format, TTL %s\n",
		res.RedisVersion, res.Allocator, s.o.capacityKeys, hours(dedupe.DefaultTTL))

	res.LegacyKeyLen = legacyKeyLengths()
	ttl := dedupe.DefaultTTL
	formats := []struct {
		name  string
		key   func(fact string) string
		value string
	}{
		{"previous: wxpay:dedupe:<fact> = done", func(f string) string { return dedupe.LegacyPrefix + f }, "done"},
		{"compact key = done", func(f string) string { return dedupe.Key(dedupe.DefaultPrefix, f) }, "done"},
		{"compact key = 1 (adopted)", func(f string) string { return dedupe.Key(dedupe.DefaultPrefix, f) }, "1"},
		// The alternative not adopted: the hash alone under a 4-byte prefix (Key leaves the merchant out
		// of a key without ':'), 26 bytes, the next smaller size class, but no merchant to scan by.
		{"wxd:<hash> = 1 (no merchant)", func(f string) string { return dedupe.Key("wxd:", strings.ReplaceAll(f, ":", "/")) }, "1"},
	}
	for _, f := range formats {
		kc, err := measureKeys(s, c, f.name, f.key, func(p redis.Pipeliner, k string) { p.Set(ctx, k, f.value, ttl) })
		if err != nil {
			return err
		}
		res.Keys = append(res.Keys, kc)
	}
	// The adopted format once more, written by the deduper itself: claim, then commit.
	d := dedupe.NewRedis(c, dedupe.Options{})
	kc, err := measureKeys(s, c, "adopted, via Claim + Commit", d.Key, nil)
	if err != nil {
		return err
	}
	res.Keys = append(res.Keys, kc)
	s.printf("   previous format's keys over the samples' facts: %d-%d bytes; compact: %d bytes for all\n",
		res.LegacyKeyLen[0], res.LegacyKeyLen[1], len(dedupe.Key(dedupe.DefaultPrefix, paymentFact(0))))
	return nil
}

// measureKeys writes s.o.capacityKeys facts in one format to an empty Redis and reads what they cost. With
// set nil it claims and commits each fact through the deduper instead, as the consumer does.
func measureKeys(s *suite, c *redis.Client, name string, key func(string) string, set func(redis.Pipeliner, string)) (keyCost, error) {
	ctx := s.ctx
	n := s.o.capacityKeys
	if set == nil {
		// Open the deduper's 16 connections first: each holds buffers in Redis that are not the facts' cost.
		if err := claimCommitAll(s, c, 64, func(i int) string { return "warm-up:" + strconv.Itoa(i) }); err != nil {
			return keyCost{}, err
		}
	}
	if err := c.FlushAll(ctx).Err(); err != nil {
		return keyCost{}, err
	}
	before, err := usedMemory(ctx, c)
	if err != nil {
		return keyCost{}, err
	}
	if set != nil {
		const batch = 1000
		for from := 0; from < n; from += batch {
			p := c.Pipeline()
			for i := from; i < min(n, from+batch); i++ {
				set(p, key(paymentFact(i)))
			}
			if _, err := p.Exec(ctx); err != nil {
				return keyCost{}, err
			}
		}
	} else if err := claimCommitAll(s, c, n, paymentFact); err != nil {
		return keyCost{}, err
	}
	after, err := usedMemory(ctx, c)
	if err != nil {
		return keyCost{}, err
	}
	p := c.Pipeline()
	samples := min(n, 1000)
	cmds := make([]*redis.IntCmd, samples)
	for i := range cmds {
		cmds[i] = p.MemoryUsage(ctx, key(paymentFact(i*n/samples)))
	}
	if _, err := p.Exec(ctx); err != nil {
		return keyCost{}, err
	}
	var usage int64
	for _, cmd := range cmds {
		usage += cmd.Val()
	}
	kc := keyCost{Format: name, Example: key(paymentFact(0)), N: n, Used: after - before,
		PerFact: float64(after-before) / float64(n), Usage: float64(usage) / float64(samples)}
	s.printf("   %-38s %3d-byte key  %6.1f B/fact (INFO used_memory Δ %d B / %d)  MEMORY USAGE %5.1f B   e.g. %s\n",
		kc.Format, len(kc.Example), kc.PerFact, kc.Used, n, kc.Usage, kc.Example)
	return kc, nil
}

// claimCommitAll claims and commits facts fact(0) … fact(n-1) with 16 concurrent workers, as consumer
// workers do.
func claimCommitAll(s *suite, c *redis.Client, n int, fact func(int) string) error {
	d := dedupe.NewRedis(c, dedupe.Options{})
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				cl, err := d.Claim(s.ctx, fact(i))
				if err == nil && cl.State != dedupe.Claimed {
					err = fmt.Errorf("fact %d: %v, want claimed", i, cl.State)
				}
				if err == nil {
					var r dedupe.CommitResult
					if r, err = d.Commit(s.ctx, cl); err == nil && r != dedupe.Committed {
						err = fmt.Errorf("fact %d: commit %v", i, r)
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func usedMemory(ctx context.Context, c *redis.Client) (int64, error) {
	info, err := c.InfoMap(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
}

// legacyKeyLengths is the shortest and longest previous-format key over the facts of the simulator's
// samples, as internal/events builds their dedupe keys.
func legacyKeyLengths() [2]int {
	out := [2]int{1 << 30, 0}
	for name, plain := range samples.All() {
		evs, err := events.Build(events.Notification{ID: "n", EventType: samples.EventType(name), CreateTime: time.Now().Format(time.RFC3339), MchID: mchid}, plain)
		if err != nil {
			continue
		}
		for _, e := range evs {
			l := len(dedupe.LegacyPrefix + e.DedupeKey)
			out[0], out[1] = min(out[0], l), max(out[1], l)
		}
	}
	return out
}

// unsupportedEventType is a real WeChat Pay event type this project does not map: it is dead-lettered.
const unsupportedEventType = "MCHTRANSFER.BILL.FINISHED"

// capacityStreams runs the pipeline (receiver, consumer, Redis) and sends s.o.capacityPerSample
// notifications of every sample, each a fact of its own, then as many that are dead-lettered, and reads
// what each batch added to the archive, events and DLQ streams.
func (s *suite) capacityStreams(res *capacityResult) error {
	pl, err := startPipeline(s.p, s.pipelineConfig(), true)
	if err != nil {
		return err
	}
	defer pl.stop()
	per := s.o.capacityPerSample
	all := samples.All()
	names := slices.Sorted(maps.Keys(all))
	s.printf("   %d notifications of each of the simulator's %d samples (JSON compacted, each a fact of its own), then %d of an unsupported type (dead-lettered)\n",
		per, len(names), per)
	s.printf("   %-36s %6s %7s | %13s %13s %13s  (bytes per notification, stream info Bytes/Msgs)\n", "sample", "body", "events", "ARCHIVE", "EVENTS", "DLQ")
	next := 0
	send := func(name, eventType string, plain []byte) (sampleCost, error) {
		notes, err := sampleNotes(s.p, eventType, plain, per, next)
		next += per
		if err != nil {
			return sampleCost{}, err
		}
		before, err := streamStates(pl)
		if err != nil {
			return sampleCost{}, err
		}
		r := closedLoop(pl.URL(), notes, len(notes), 0, min(s.o.conc, 16), cpuMeter{})
		if r.Non204+r.Errors > 0 {
			return sampleCost{}, fmt.Errorf("%s: %d answers not 204, %d errors (first: %s)", name, r.Non204, r.Errors, r.FirstErr)
		}
		// WECHATPAY_INBOUND keeps a notification only until it is processed and copied; its history, and
		// so what a notification costs for 7 days, is WECHATPAY_ARCHIVE's.
		want := before[topology.ArchiveStream].Msgs + uint64(per)
		if err := waitUntil(time.Minute, func() bool {
			st, err := streamStates(pl)
			return err == nil && st[topology.ArchiveStream].Msgs >= want && pl.settled()
		}); err != nil {
			return sampleCost{}, fmt.Errorf("%s: consumer not settled: %w", name, err)
		}
		after, err := streamStates(pl)
		if err != nil {
			return sampleCost{}, err
		}
		sc := sampleCost{Name: name, N: per, Body: len(notes[0].body()), Per: map[string]float64{}}
		for _, st := range streamNames {
			sc.Per[st] = float64(after[st].Bytes-before[st].Bytes) / float64(per)
		}
		sc.Events = int((after[topology.EventsStream].Msgs - before[topology.EventsStream].Msgs) / uint64(per))
		s.printf("   %-36s %6d %7d | %13.0f %13.0f %13.0f\n", name, sc.Body, sc.Events,
			sc.Per[topology.ArchiveStream], sc.Per[topology.EventsStream], sc.Per[topology.DLQStream])
		return sc, nil
	}
	for _, name := range names {
		sc, err := send(name, samples.EventType(name), all[name])
		if err != nil {
			return err
		}
		res.Samples = append(res.Samples, sc)
	}
	dlqBefore, err := streamStates(pl)
	if err != nil {
		return err
	}
	sc, err := send("(unsupported type: dead-lettered)", unsupportedEventType, all["TRANSACTION.SUCCESS"])
	if err != nil {
		return err
	}
	res.Samples = append(res.Samples, sc)
	final, err := streamStates(pl)
	if err != nil {
		return err
	}
	d := final[topology.DLQStream]
	res.DLQ = streamCost{Msgs: d.Msgs - dlqBefore[topology.DLQStream].Msgs, Bytes: d.Bytes - dlqBefore[topology.DLQStream].Bytes}
	s.printf("   totals after all batches (Bytes/Msgs; on disk: the stream's directory in the file store):\n")
	for _, name := range streamNames {
		st := final[name]
		st.Disk = dirSize(filepath.Join(pl.nats.dir, "jetstream", "$G", "streams", name))
		res.Streams[name] = st
		s.printf("     %-18s %7d msgs %11d B  %7.0f B/msg  on disk %11d B\n", name, st.Msgs, st.Bytes, st.perMsg(), st.Disk)
	}
	if got, want := final[topology.DLQStream].Msgs, uint64(per); got != want {
		return fmt.Errorf("%d dead letters, want %d (only the unsupported type)", got, want)
	}
	return nil
}

var streamNames = []string{topology.ArchiveStream, topology.EventsStream, topology.DLQStream}

func streamStates(pl *pipeline) (map[string]streamCost, error) {
	out := map[string]streamCost{}
	for _, name := range streamNames {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := pl.js.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		cancel()
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		out[name] = streamCost{Msgs: info.State.Msgs, Bytes: info.State.Bytes}
	}
	return out, nil
}

func dirSize(dir string) int64 {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return -1
	}
	return n
}

// idFields are the resource fields that name a business fact; sampleNotes varies their values.
var idFields = map[string]bool{
	"transaction_id": true, "id": true, "out_trade_no": true, "combine_out_trade_no": true, "refund_id": true,
	"out_refund_no": true, "record_id": true, "parking_id": true,
}

// sampleNotes builds n notifications of plain, each its own fact: every id field's value keeps its length
// and gets a number of its own in its last eight characters. The JSON is compacted, as WeChat Pay's
// resources are.
func sampleNotes(p *wechatsim.Platform, eventType string, plain []byte, n, first int) ([]note, error) {
	var compact bytes.Buffer
	if err := json.Compact(&compact, plain); err != nil {
		return nil, err
	}
	var tree any
	if err := json.Unmarshal(plain, &tree); err != nil {
		return nil, err
	}
	var ids []string
	collectIDs(tree, func(v string) {
		if len(v) >= 8 && !slices.Contains(ids, v) {
			ids = append(ids, v)
		}
	})
	if len(ids) == 0 {
		return nil, errors.New("no id field to vary")
	}
	out := make([]note, n)
	for i := range out {
		b := bytes.Clone(compact.Bytes())
		for k, id := range ids {
			varied := id[:len(id)-8] + fmt.Sprintf("%08d", ((first+i)*len(ids)+k)%100000000)
			b = bytes.ReplaceAll(b, []byte(`"`+id+`"`), []byte(`"`+varied+`"`))
		}
		nt, err := p.Build(eventType, b, wechatsim.Options{Key: wechatsim.SignWithPublicKeyID})
		if err != nil {
			return nil, err
		}
		raw, at := rawRequest(nt.Header, nt.Body)
		out[i] = note{id: nt.ID, fact: first + i, raw: raw, bodyAt: at}
	}
	return out, nil
}

func collectIDs(v any, add func(string)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && idFields[k] {
				add(s)
			}
			collectIDs(x, add)
		}
	case []any:
		for _, x := range v {
			collectIDs(x, add)
		}
	}
}

// capacityTable prints README's table: Redis memory and stream storage at 1, 10, 100 and 1,000
// notifications per second, each notification a new fact, at the default retention.
func (s *suite) capacityTable(res *capacityResult) {
	// The facts as the deduper writes them: the pipelined SETs of the other rows leave a large query
	// buffer in Redis that is counted with them (a few bytes per fact at 100,000).
	fact := res.Keys[len(res.Keys)-1].PerFact
	var pay sampleCost
	for _, sc := range res.Samples {
		if sc.Name == "TRANSACTION.SUCCESS" {
			pay = sc
		}
	}
	archive, evs := pay.Per[topology.ArchiveStream], pay.Per[topology.EventsStream]
	dlq := res.DLQ.perMsg()
	ttl := config.DefaultDedupeTTL
	s.printf("\n   capacity at the default retention (each notification a new payment fact; JetStream figures per replica):\n")
	s.printf("     Redis = rate × DEDUPE_TTL (%s) × %.0f B;  WECHATPAY_ARCHIVE = rate × %s × %.0f B;  WECHATPAY_EVENTS = rate × %s × %.0f B;  a dead letter %.0f B, kept until purged\n",
		hours(ttl), fact, hours(topology.ArchiveMaxAge), archive, hours(topology.EventsMaxAge), evs, dlq)
	s.printf("     %12s %14s %14s %18s %18s\n", "notif./s", "facts in Redis", "Redis memory", "WECHATPAY_ARCHIVE", "WECHATPAY_EVENTS")
	for _, rate := range []float64{1, 10, 100, 1000} {
		n := rate * ttl.Seconds()
		s.printf("     %12.0f %14.0f %14s %18s %18s\n", rate, n, humanBytes(n*fact),
			humanBytes(rate*topology.ArchiveMaxAge.Seconds()*archive), humanBytes(rate*topology.EventsMaxAge.Seconds()*evs))
	}
}

func hours(d time.Duration) string { return strconv.FormatInt(int64(d/time.Hour), 10) + "h" }

// humanBytes writes b in binary units, as Kubernetes memory limits and Redis's maxmemory count them.
func humanBytes(b float64) string {
	for _, u := range []string{"B", "KiB", "MiB", "GiB", "TiB"} {
		if b < 1024 || u == "TiB" {
			return fmt.Sprintf("%.3g %s", b, u)
		}
		b /= 1024
	}
	return ""
}
