package topology

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Change is one thing Apply does to a stream or consumer, or in a dry run would do.
type Change struct {
	Kind   string // "stream" or "consumer"
	Name   string // the stream, or "<stream> > <consumer>"
	Create bool
	// Diffs name each setting that changes, "retention limits → interest".
	Diffs []string
}

func (c Change) String() string {
	if c.Create {
		return "create " + c.Kind + " " + c.Name
	}
	return "update " + c.Kind + " " + c.Name + ": " + strings.Join(c.Diffs, "; ")
}

// Report is what Apply changed (or would change) and what it found that an operator should look at.
type Report struct {
	Changes  []Change
	Warnings []string
}

// Apply brings the streams and both consumers on WECHATPAY_INBOUND to o: it creates what is missing
// and updates what differs, and with dryRun only reports it. It is what `wxpayctl streams apply` runs,
// and the only code that changes an existing stream or the archive consumer.
//
// Moving WECHATPAY_INBOUND from Limits retention (releases before WECHATPAY_ARCHIVE) to Interest is an
// update nats-server allows in place (only WorkQueue cannot be entered or left). When it happens, every
// message no consumer still needs is removed at once, and with no consumer at all every message is; so
// the durable consumer and the archive consumer are created first. Then an unprocessed notification is
// kept (the durable has not acknowledged it) and so is one not yet copied to the archive (the archive
// consumer has not), and the processed history moves to WECHATPAY_ARCHIVE before it leaves the stream.
func Apply(ctx context.Context, js jetstream.JetStream, o Options, dryRun bool) (Report, error) {
	a := applier{js: js, dry: dryRun}
	configs := StreamConfigs(o)
	inboundWant, archiveWant := configs[0], configs[3]
	for _, cfg := range configs[1:3] {
		if err := a.stream(ctx, cfg, nil); err != nil {
			return a.r, err
		}
	}
	inbound, err := a.streamInfo(ctx, InboundStream)
	if err != nil {
		return a.r, err
	}
	migrate := inbound != nil && inbound.Config.Retention != inboundWant.Retention
	if !migrate {
		if err := a.stream(ctx, inboundWant, inbound); err != nil {
			return a.r, err
		}
	}
	if err := a.consumer(ctx, ConsumerConfig(o)); err != nil {
		return a.r, err
	}
	if err := a.consumer(ctx, ArchiveConsumerConfig(o)); err != nil {
		return a.r, err
	}
	if err := a.stream(ctx, archiveWant, nil); err != nil {
		return a.r, err
	}
	if migrate {
		if !dryRun {
			// Both must exist now, or the update would drop what they have not acknowledged.
			s, err := js.Stream(ctx, InboundStream)
			if err != nil {
				return a.r, Explain(js, fmt.Errorf("stream %s: %w", InboundStream, err))
			}
			for _, cfg := range []jetstream.ConsumerConfig{ConsumerConfig(o), ArchiveConsumerConfig(o)} {
				if _, err := consumerInfo(ctx, s, cfg); err != nil {
					return a.r, Explain(js, fmt.Errorf("consumer %s must exist before %s changes retention, and does not: %w", cfg.Durable, InboundStream, err))
				}
			}
			if err := awaitArchive(ctx, js, s, ArchiveConsumerConfig(o)); err != nil {
				return a.r, err
			}
		}
		if err := a.stream(ctx, inboundWant, inbound); err != nil {
			return a.r, err
		}
	}
	return a.r, a.warnOthers(ctx)
}

// MigrationCatchUp bounds how long Apply waits for WECHATPAY_ARCHIVE to copy the history of a
// WECHATPAY_INBOUND with Limits retention before it switches the stream to Interest retention.
const MigrationCatchUp = 10 * time.Minute

// awaitArchive waits until the archive consumer has delivered all of WECHATPAY_INBOUND. The switch would
// be safe before (the archive consumer keeps what it has not copied), but until the copy is done the
// stream stays as large as its history, and a new INBOUND_MAX_BYTES below that would refuse new
// notifications meanwhile; after it, switching removes every processed notification at once.
func awaitArchive(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, cfg jetstream.ConsumerConfig) error {
	ctx, cancel := context.WithTimeout(ctx, MigrationCatchUp)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := consumerInfo(ctx, s, cfg)
		if err == nil && info.NumPending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			togo := "?"
			if info != nil {
				togo = strconv.FormatUint(info.NumPending, 10)
			}
			if err == nil {
				err = ctx.Err()
			}
			return Explain(js, fmt.Errorf("%s has not copied %s's history yet (%s messages to go), so %s keeps Limits retention "+
				"for now; nothing is lost and the copy goes on: run apply again later: %w", ArchiveStream, InboundStream, togo, InboundStream, err))
		case <-tick.C:
		}
	}
}

type applier struct {
	js  jetstream.JetStream
	dry bool
	r   Report
}

// streamInfo is the stream's current state, nil when it does not exist.
func (a *applier) streamInfo(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	s, err := a.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, Explain(a.js, fmt.Errorf("stream %s: %w", name, err))
	}
	return s.CachedInfo(), nil
}

// stream creates or updates want; cur is its current state when the caller has it.
func (a *applier) stream(ctx context.Context, want jetstream.StreamConfig, cur *jetstream.StreamInfo) error {
	if cur == nil {
		var err error
		if cur, err = a.streamInfo(ctx, want.Name); err != nil {
			return err
		}
	}
	if cur == nil {
		a.r.Changes = append(a.r.Changes, Change{Kind: "stream", Name: want.Name, Create: true})
		if a.dry {
			return nil
		}
		if _, err := a.js.CreateStream(ctx, want); err != nil {
			return Explain(a.js, fmt.Errorf("create stream %s: %w", want.Name, err))
		}
		return nil
	}
	have := cur.Config
	if have.Storage != want.Storage {
		return fmt.Errorf("stream %s is stored in %s, and JetStream cannot change a stream's storage: "+
			"back it up, delete it and run apply again", want.Name, have.Storage)
	}
	diffs := streamDiffs(have, want)
	if len(diffs) == 0 {
		return nil
	}
	a.r.Changes = append(a.r.Changes, Change{Kind: "stream", Name: want.Name, Diffs: diffs})
	if a.dry {
		return nil
	}
	if _, err := a.js.UpdateStream(ctx, want); err != nil {
		return Explain(a.js, fmt.Errorf("update stream %s (%s): %w", want.Name, strings.Join(diffs, "; "), err))
	}
	return nil
}

// consumer creates or updates the durable want on WECHATPAY_INBOUND.
func (a *applier) consumer(ctx context.Context, want jetstream.ConsumerConfig) error {
	name := InboundStream + " > " + want.Durable
	s, err := a.js.Stream(ctx, InboundStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && a.dry {
		a.r.Changes = append(a.r.Changes, Change{Kind: "consumer", Name: name, Create: true})
		return nil
	}
	if err != nil {
		return Explain(a.js, fmt.Errorf("stream %s: %w", InboundStream, err))
	}
	cur, err := consumerInfo(ctx, s, want)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		a.r.Changes = append(a.r.Changes, Change{Kind: "consumer", Name: name, Create: true})
		if a.dry {
			return nil
		}
		if want.DeliverSubject != "" {
			_, err = s.CreatePushConsumer(ctx, want)
		} else {
			_, err = s.CreateConsumer(ctx, want)
		}
		if err != nil {
			return Explain(a.js, fmt.Errorf("create consumer %s: %w", name, err))
		}
		return nil
	case errors.Is(err, jetstream.ErrNotPullConsumer), errors.Is(err, jetstream.ErrNotPushConsumer):
		return fmt.Errorf("consumer %s exists as another kind of consumer (push or pull) than this version uses: "+
			"delete it (nats consumer rm %s %s) and run apply again", name, InboundStream, want.Durable)
	case err != nil:
		return Explain(a.js, fmt.Errorf("consumer %s: %w", name, err))
	}
	if cur.Config.AckPolicy != want.AckPolicy {
		return fmt.Errorf("consumer %s acknowledges %s and JetStream cannot change that: delete it "+
			"(nats consumer rm %s %s) and run apply again", name, cur.Config.AckPolicy, InboundStream, want.Durable)
	}
	diffs := consumerDiffs(cur.Config, want)
	if len(diffs) == 0 {
		return nil
	}
	a.r.Changes = append(a.r.Changes, Change{Kind: "consumer", Name: name, Diffs: diffs})
	if a.dry {
		return nil
	}
	if want.DeliverSubject != "" {
		_, err = s.UpdatePushConsumer(ctx, want)
	} else {
		_, err = s.UpdateConsumer(ctx, want)
	}
	if err != nil {
		return Explain(a.js, fmt.Errorf("update consumer %s (%s): %w", name, strings.Join(diffs, "; "), err))
	}
	return nil
}

// warnOthers names the durables on WECHATPAY_INBOUND that are not this project's: under Interest
// retention each keeps every message it has not acknowledged, which can fill the stream.
func (a *applier) warnOthers(ctx context.Context) error {
	s, err := a.js.Stream(ctx, InboundStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) && a.dry {
		return nil
	}
	if err != nil {
		return Explain(a.js, fmt.Errorf("stream %s: %w", InboundStream, err))
	}
	infos := s.ListConsumers(ctx)
	for ci := range infos.Info() {
		if ci.Config.Durable == "" || ci.Name == ConsumerName || ci.Name == ArchiveConsumerName {
			continue
		}
		a.r.Warnings = append(a.r.Warnings, fmt.Sprintf("consumer %s > %s (%d unacknowledged, %d not yet delivered): "+
			"%s keeps every notification until each of its consumers has acknowledged it, so a consumer nobody "+
			"reads makes it fill up; delete it unless something uses it (nats consumer rm %s %s)",
			InboundStream, ci.Name, ci.NumAckPending, ci.NumPending, InboundStream, InboundStream, ci.Name))
	}
	if err := infos.Err(); err != nil {
		return Explain(a.js, fmt.Errorf("list consumers of %s: %w", InboundStream, err))
	}
	return nil
}

// streamDiffs names the settings this package manages that differ between have and want. A description
// alone is not worth an update; it goes with the next one.
func streamDiffs(have, want jetstream.StreamConfig) []string {
	var d []string
	add := func(name, from, to string) {
		if from != to {
			d = append(d, name+" "+from+" → "+to)
		}
	}
	add("retention", strings.ToLower(have.Retention.String()), strings.ToLower(want.Retention.String()))
	add("discard", discard(have.Discard), discard(want.Discard))
	add("max_age", duration(have.MaxAge), duration(want.MaxAge))
	add("max_bytes", bytesLimit(have.MaxBytes), bytesLimit(want.MaxBytes))
	add("duplicates", duration(have.Duplicates), duration(want.Duplicates))
	add("replicas", strconv.Itoa(max(have.Replicas, 1)), strconv.Itoa(want.Replicas))
	add("subjects", list(have.Subjects), list(want.Subjects))
	add("sources", sources(have.Sources), sources(want.Sources))
	return d
}

// consumerDiffs names the settings this package manages that differ between have and want.
func consumerDiffs(have, want jetstream.ConsumerConfig) []string {
	var d []string
	add := func(name, from, to string) {
		if from != to {
			d = append(d, name+" "+from+" → "+to)
		}
	}
	add("max_ack_pending", strconv.Itoa(have.MaxAckPending), strconv.Itoa(want.MaxAckPending))
	add("ack_wait", duration(have.AckWait), duration(want.AckWait))
	add("max_deliver", count(have.MaxDeliver), count(want.MaxDeliver))
	add("replicas", strconv.Itoa(max(have.Replicas, 1)), strconv.Itoa(max(want.Replicas, 1)))
	add("filter_subject", have.FilterSubject, want.FilterSubject)
	add("deliver_subject", have.DeliverSubject, want.DeliverSubject)
	add("inactive_threshold", duration(have.InactiveThreshold), duration(want.InactiveThreshold))
	return d
}

func discard(p jetstream.DiscardPolicy) string {
	return strings.ToLower(strings.TrimPrefix(p.String(), "Discard"))
}

func duration(d time.Duration) string {
	if d <= 0 {
		return "none"
	}
	return d.String()
}

// count writes a limit that JetStream stores as -1 when it is not set, and this package as 0.
func count(n int) string {
	if n <= 0 {
		return "unlimited"
	}
	return strconv.Itoa(n)
}

func bytesLimit(n int64) string {
	if n <= 0 {
		return "none"
	}
	return strconv.FormatInt(n, 10)
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return strings.Join(s, ",")
}

func sources(ss []*jetstream.StreamSource) string {
	var out []string
	for _, s := range ss {
		v := s.Name
		if s.Consumer != nil {
			v += " via consumer " + s.Consumer.Name
		}
		out = append(out, v)
	}
	return list(out)
}
