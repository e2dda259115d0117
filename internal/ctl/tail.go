package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

func init() { commands = append(commands, tailCommand) }

func usageError(format string, args ...any) error {
	return &exitError{ExitUsage, fmt.Errorf(format, args...)}
}

// outf and outln write a command's output. A failed write to the operator's terminal or pipe is not
// something a command can act on (kubectl and nats ignore it too), so it is dropped here, once.
func outf(w io.Writer, format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }

func outln(w io.Writer, a ...any) { _, _ = fmt.Fprintln(w, a...) }

func tailCommand(g *globals) *cobra.Command {
	var fromStart bool
	var count int
	var mchid, sub string
	cmd := &cobra.Command{
		Use:   "tail [TYPE...]",
		Short: "Follow domain events as they are published",
		Long: `Follow the CloudEvents on WECHATPAY_EVENTS live, one line per event (business time in UTC, type,
merchant and sub-merchant, subject, id), or with -o json each CloudEvent exactly as published, one per line.

TYPE is a domain type (payment.succeeded), a family (refund.* or refund), a WeChat event type
(REFUND.SUCCESS) or a CloudEvents type (com.wechatpay.refund.succeeded); without TYPE every event is
shown. Only new events are shown unless --from-start. Ctrl-C stops; --count N stops after N events.`,
		Example: `  # everything, as it happens
  wxpayctl tail

  # refunds of one merchant, the stored ones first
  wxpayctl tail 'refund.*' --mchid 1900000100 --from-start

  # everything of one sub-merchant of a service provider (--sub-mchid _ : direct-merchant events only)
  wxpayctl tail --mchid 1900000100 --sub-mchid 1900000109

  # the next successful payment as JSON, for a script
  wxpayctl tail payment.succeeded --count 1 -o json | jq .data.amount`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if count < 0 {
				return usageError("--count %d: must not be negative", count)
			}
			subjects, err := eventSubjects(args, mchid, sub)
			if err != nil {
				return err
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			policy := jetstream.DeliverNewPolicy
			if fromStart {
				policy = jetstream.DeliverAllPolicy
			}
			p := &eventPrinter{out: g.env.Stdout, json: g.output == "json"}
			return followEvents(cmd.Context(), js, subjects, policy, nil, func(m jetstream.Msg) bool {
				p.print(m.Subject(), m.Data())
				return count == 0 || p.n < count
			})
		},
	}
	cmd.Flags().BoolVar(&fromStart, "from-start", false, "show the stored events first, then follow")
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many events (0: follow until interrupted)")
	cmd.Flags().StringVar(&mchid, "mchid", "", "only this merchant's (or service provider's) events")
	cmd.Flags().StringVar(&sub, "sub-mchid", "", "only this sub-merchant's events (_ for direct merchants' only)")
	return cmd
}

// eventSubjects turns tail's TYPE arguments into WECHATPAY_EVENTS filter subjects. Each must match at least
// one known domain type, so that a typo is an error instead of a silent wait.
func eventSubjects(args []string, mchid, sub string) ([]string, error) {
	for _, f := range []struct{ flag, value string }{{"--mchid", mchid}, {"--sub-mchid", sub}} {
		if f.value != "" && !subjectToken(f.value) || f.value == "*" {
			return nil, usageError("%s %q: not a merchant id", f.flag, f.value)
		}
	}
	if len(args) == 0 {
		return []string{topology.EventFilter("", mchid, sub)}, nil
	}
	var known []string
	for _, mp := range events.Mappings() {
		known = append(known, mp.Type)
	}
	var out []string
	for _, a := range args {
		typ := domainTypePattern(a)
		family, kind, ok := strings.Cut(typ, ".")
		if !ok || !subjectToken(family) || !subjectToken(kind) {
			return nil, usageError("event type %q: use a type such as payment.succeeded, a family such as refund.*, or a WeChat event type", a)
		}
		matched := false
		for _, k := range known {
			if ok, _ := path.Match(typ, k); ok {
				matched = true
				break
			}
		}
		if !matched {
			return nil, usageError("unknown event type %q; known: %s (or a family such as refund.*)", a, strings.Join(known, ", "))
		}
		out = append(out, topology.EventFilter(family+"."+kind, mchid, sub))
	}
	// The server refuses overlapping filter subjects: keep only those no other one covers.
	var kept []string
	for i, s := range out {
		covered := false
		for j, o := range out {
			if i != j && covers(o, s) && (!covers(s, o) || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

// subjectToken reports whether t is a whole-token wildcard or a literal subject token.
func subjectToken(t string) bool {
	return t == "*" || t != "" && !strings.ContainsAny(t, "*>. \t")
}

// covers reports whether every subject filter b matches is also matched by a (both with '*' tokens only).
func covers(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	if len(at) != len(bt) {
		return false
	}
	for i := range at {
		if at[i] != "*" && at[i] != bt[i] {
			return false
		}
	}
	return true
}

// domainTypePattern normalises one TYPE argument to a "<family>.<kind>" pattern (kind may be '*').
func domainTypePattern(a string) string {
	a = strings.TrimPrefix(a, wxevents.CloudEventTypePrefix)
	for _, mp := range events.Mappings() {
		if strings.EqualFold(a, mp.EventType) {
			return mp.Type
		}
	}
	switch {
	case a == "*" || a == "all" || a == ">":
		return "*.*"
	case !strings.Contains(a, "."):
		return a + ".*"
	}
	return a
}

// followEvents runs an ordered consumer on WECHATPAY_EVENTS and hands each message to fn until fn returns
// false or ctx ends (a clean stop). ready, when set, is called once the consumer exists.
func followEvents(ctx context.Context, js jetstream.JetStream, subjects []string, policy jetstream.DeliverPolicy, ready func(), fn func(jetstream.Msg) bool) error {
	cons, err := js.OrderedConsumer(ctx, topology.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects, DeliverPolicy: policy, InactiveThreshold: inactiveThreshold,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		if topology.IsNotFound(err) {
			return runtime(fmt.Errorf("stream %s: %w (run: wxpayctl streams apply)", topology.EventsStream, err))
		}
		return runtime(fmt.Errorf("follow %s: %w", topology.EventsStream, err))
	}
	defer removeConsumer(ctx, js, topology.EventsStream, cons)
	it, err := cons.Messages()
	if err != nil {
		return runtime(fmt.Errorf("follow %s: %w", topology.EventsStream, err))
	}
	defer it.Stop()
	if ready != nil {
		ready()
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return runtime(fmt.Errorf("follow %s: %w", topology.EventsStream, err))
		}
		if !fn(m) {
			return nil
		}
	}
}

// inactiveThreshold lets the server remove a command's ordered consumer soon after the command died
// without removing it itself.
const inactiveThreshold = 30 * time.Second

// removeConsumer deletes a command's ordered consumer from the server as the command ends, instead of
// leaving it to the inactivity threshold.
func removeConsumer(ctx context.Context, js jetstream.JetStream, stream string, cons jetstream.Consumer) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name) // best effort: the threshold is the fallback
}

// eventPrinter writes events one per line: the CloudEvent as published (json) or a summary.
type eventPrinter struct {
	out  io.Writer
	json bool
	n    int
}

func (p *eventPrinter) print(subject string, data []byte) {
	p.n++
	if p.json {
		outf(p.out, "%s\n", strings.TrimRight(string(data), "\n"))
		return
	}
	e, err := wxevents.Parse(data)
	if err != nil {
		outf(p.out, "%-30s  (not a CloudEvent: %d bytes on %s)\n", "-", len(data), subject)
		return
	}
	merchant := e.MchID()
	if e.SubMchID != "" {
		merchant += "/" + e.SubMchID
	}
	// Tables print UTC, as dlq ls does; -o json keeps the event as published.
	outf(p.out, "%-30s  %-21s  %-21s  %-30s  %s\n", e.Time.UTC().Format(time.RFC3339Nano), e.DomainType(),
		merchant, e.Subject, e.ID)
}
