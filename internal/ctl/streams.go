package ctl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

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
	var replicas int
	var maxBytes int64
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create or update the three streams and the durable consumer (idempotent)",
		Example: `  # before the consumer starts (the Kubernetes init container does this)
  STREAM_REPLICAS=3 wxpayctl streams apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := topology.Ensure(cmd.Context(), js, topology.Options{Replicas: replicas, InboundMaxBytes: maxBytes}); err != nil {
				return runtime(err)
			}
			if _, err := topology.EnsureConsumer(cmd.Context(), js, topology.ConsumerOptions{Replicas: replicas}); err != nil {
				return runtime(err)
			}
			return g.printStreams(cmd, js)
		},
	}
	def := 1
	if v, err := strconv.Atoi(g.env.Getenv("STREAM_REPLICAS")); err == nil && v > 0 {
		def = v
	}
	apply.Flags().IntVar(&replicas, "replicas", def, "replicas of each stream [STREAM_REPLICAS]")
	// The same cap the receiver and consumer apply, so that apply never lifts it by accident.
	if v, err := strconv.ParseInt(g.env.Getenv("INBOUND_MAX_BYTES"), 10, 64); err == nil && v > 0 {
		maxBytes = v
	}
	apply.Flags().Int64Var(&maxBytes, "inbound-max-bytes", maxBytes, "byte limit of WECHATPAY_INBOUND, 0 for none [INBOUND_MAX_BYTES]")
	info := &cobra.Command{
		Use:     "info",
		Short:   "Show the streams' state and the consumer's lag",
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
			Stream: cfg.Name, Subjects: cfg.Subjects[0], Replicas: info.Config.Replicas, Messages: info.State.Msgs,
			Bytes: info.State.Bytes, FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Consumers: info.State.Consumers,
		}
		if cfg.Name == topology.InboundStream {
			if c, err := js.Consumer(ctx, topology.InboundStream, topology.ConsumerName); err == nil {
				if ci, err := c.Info(ctx); err == nil {
					r.Pending, r.AckPending, r.Redeliv = ci.NumPending, ci.NumAckPending, ci.NumRedelivered
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
		if r.Stream == topology.InboundStream {
			lag = strconv.FormatUint(r.Pending, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\n", r.Stream, r.Subjects, r.Replicas, r.Messages, r.Bytes, r.FirstSeq, r.LastSeq, lag, r.AckPending, r.Redeliv)
	}
	return tw.Flush()
}
