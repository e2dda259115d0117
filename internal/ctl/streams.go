package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

func init() { commands = append(commands, streamsCommand) }

type streamRow struct {
	Stream     string `json:"stream"`
	Subjects   string `json:"subjects"`
	Replicas   int    `json:"replicas"`
	Messages   uint64 `json:"messages"`
	Bytes      uint64 `json:"bytes"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	Consumers  int    `json:"consumers"`
	Pending    uint64 `json:"consumer_pending,omitempty"`
	AckPending int    `json:"consumer_ack_pending,omitempty"`
	Redeliv    int    `json:"consumer_redelivered,omitempty"`
}

func streamsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "streams",
		Short: "Create, update and inspect the JetStream streams and the consumer",
	}
	var replicas string
	var dryRun bool
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create or update the streams and the durable consumer, saying what changes (idempotent)",
		Long: `Brings WECHATPAY_INBOUND, WECHATPAY_EVENTS, WECHATPAY_DLQ, WECHATPAY_ARCHIVE, the durable consumer
and the archive consumer to the configuration: the same variables the receiver and the consumer read
(STREAM_REPLICAS, INBOUND_MAX_BYTES, ARCHIVE_MAX_BYTES, CONSUMER_MAX_ACK_PENDING, CONSUMER_ACK_WAIT,
CONSUMER_MAX_DELIVER), or the flags of the same names. Each change is printed before it is made;
--dry-run prints them and changes nothing.

It also moves a deployment from the layout before WECHATPAY_ARCHIVE: it creates the archive consumer and
WECHATPAY_ARCHIVE first, so that the history of WECHATPAY_INBOUND is copied there, and then switches
WECHATPAY_INBOUND to Interest retention, which keeps every notification not yet processed or copied.`,
		Example: `  # before the consumer starts (the Kubernetes init container does this)
  STREAM_REPLICAS=3 wxpayctl streams apply
  wxpayctl streams apply --dry-run
  wxpayctl streams apply --stream-replicas 3 --inbound-max-bytes 1073741824 --consumer-max-ack-pending 2000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The same variables, defaults and checks as the receiver and consumer (internal/config), so
			// that apply never sets what the programs would refuse, nor lifts a cap by accident.
			var args []string
			for _, env := range config.StreamsVars {
				if fl := cmd.Flags().Lookup(config.FlagName(env)); fl.Changed {
					args = append(args, "--"+fl.Name+"="+fl.Value.String())
				}
			}
			if cmd.Flags().Lookup("replicas").Changed {
				args = append(args, "--stream-replicas="+replicas)
			}
			sc, err := config.LoadStreams(args, g.env.Getenv, io.Discard)
			if err != nil {
				return usageError("%v", err)
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			report, err := topology.Apply(cmd.Context(), js, sc.Topology(), dryRun)
			g.printApply(report, dryRun)
			if err != nil {
				return runtime(err)
			}
			if dryRun {
				return nil
			}
			return g.printStreams(cmd, js)
		},
	}
	for _, env := range config.StreamsVars {
		apply.Flags().String(config.FlagName(env), "", streamsFlagUsage[env]+" ["+env+"]")
	}
	apply.Flags().StringVar(&replicas, "replicas", "", "replicas of each stream")
	_ = apply.Flags().MarkDeprecated("replicas", "use --stream-replicas")
	apply.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change and change nothing")
	info := &cobra.Command{
		Use:     "info",
		Short:   "Show the streams' state, the consumer's lag and the archive's",
		Example: "  wxpayctl streams info\n  wxpayctl streams info -o json | jq '.[] | {stream, messages}'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			return g.printStreams(cmd, js)
		},
	}
	cmd.AddCommand(apply, info)
	return cmd
}

// streamsFlagUsage describes apply's flags; defaults are internal/config's.
var streamsFlagUsage = map[string]string{
	"STREAM_REPLICAS":          "replicas of each stream, 1 to 5 (default 1)",
	"INBOUND_MAX_BYTES":        "byte limit of WECHATPAY_INBOUND, the notifications not yet processed; 0 for none (default 0)",
	"ARCHIVE_MAX_BYTES":        "byte limit of WECHATPAY_ARCHIVE, the 7-day history; 0 for none (default 0)",
	"CONSUMER_MAX_ACK_PENDING": "messages in flight across all consumer processes (default 1000)",
	"CONSUMER_ACK_WAIT":        "redelivery after a message stays unsettled this long (default 30s)",
	"CONSUMER_MAX_DELIVER":     "deliveries before a message is dead-lettered (default 20)",
}

// printApply says what apply changed (or would change, in a dry run) and what it warns about. In JSON
// the same as one object before the streams' table.
func (g *globals) printApply(r topology.Report, dryRun bool) {
	changes := make([]string, 0, len(r.Changes))
	for _, c := range r.Changes {
		changes = append(changes, c.String())
	}
	if g.output == "json" {
		_ = json.NewEncoder(g.env.Stdout).Encode(struct {
			DryRun   bool     `json:"dry_run"`
			Changes  []string `json:"changes"`
			Warnings []string `json:"warnings,omitempty"`
		}{dryRun, changes, r.Warnings})
		return
	}
	prefix := ""
	if dryRun {
		prefix = "would "
	}
	for _, c := range changes {
		fmt.Fprintf(g.env.Stdout, "%s%s\n", prefix, c)
	}
	switch {
	case len(changes) == 0:
		fmt.Fprintln(g.env.Stdout, "nothing to change")
	case dryRun:
		fmt.Fprintln(g.env.Stdout, "dry run: nothing was changed")
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(g.env.Stderr, "warning: %s\n", w)
	}
}

func (g *globals) printStreams(cmd *cobra.Command, js jetstream.JetStream) error {
	ctx := cmd.Context()
	var rows []streamRow
	for _, cfg := range topology.StreamConfigs(topology.Options{}) {
		s, err := js.Stream(ctx, cfg.Name)
		if err != nil {
			return runtime(fmt.Errorf("stream %s: %w (run: wxpayctl streams apply)", cfg.Name, err))
		}
		info, err := s.Info(ctx)
		if err != nil {
			return runtime(err)
		}
		r := streamRow{
			Stream: cfg.Name, Subjects: streamSubjects(cfg), Replicas: info.Config.Replicas, Messages: info.State.Msgs,
			Bytes: info.State.Bytes, FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Consumers: info.State.Consumers,
		}
		switch cfg.Name {
		case topology.InboundStream:
			if c, err := js.Consumer(ctx, topology.InboundStream, topology.ConsumerName); err == nil {
				if ci, err := c.Info(ctx); err == nil {
					r.Pending, r.AckPending, r.Redeliv = ci.NumPending, ci.NumAckPending, ci.NumRedelivered
				}
			}
		case topology.ArchiveStream:
			// The archive's lag: notifications stored in WECHATPAY_INBOUND and not yet copied.
			if c, err := js.PushConsumer(ctx, topology.InboundStream, topology.ArchiveConsumerName); err == nil {
				if ci, err := c.Info(ctx); err == nil {
					r.Pending, r.AckPending = ci.NumPending, ci.NumAckPending
				}
			}
		}
		rows = append(rows, r)
	}
	if g.output == "json" {
		return json.NewEncoder(g.env.Stdout).Encode(rows)
	}
	tw := tabwriter.NewWriter(g.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tSUBJECTS\tREPLICAS\tMESSAGES\tBYTES\tFIRST\tLAST\tCONSUMER PENDING\tACK PENDING\tREDELIVERED")
	for _, r := range rows {
		lag := "-"
		if r.Stream == topology.InboundStream || r.Stream == topology.ArchiveStream {
			lag = strconv.FormatUint(r.Pending, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\n", r.Stream, r.Subjects, r.Replicas, r.Messages, r.Bytes, r.FirstSeq, r.LastSeq, lag, r.AckPending, r.Redeliv)
	}
	return tw.Flush()
}

// streamSubjects is what a stream takes in, for the table: its subjects, or what it copies.
func streamSubjects(cfg jetstream.StreamConfig) string {
	if len(cfg.Subjects) > 0 {
		return strings.Join(cfg.Subjects, ",")
	}
	var from []string
	for _, src := range cfg.Sources {
		from = append(from, src.Name)
	}
	return "(copy of " + strings.Join(from, ",") + ")"
}
