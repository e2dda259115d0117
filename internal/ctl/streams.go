package ctl

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
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
	var replicas, maxBytes string
	apply := &cobra.Command{
		Use:   "apply",
		Short: "Create or update the three streams and the durable consumer (idempotent)",
		Example: `  # before the consumer starts (the Kubernetes init container does this)
  STREAM_REPLICAS=3 wxpayctl streams apply
  wxpayctl streams apply --stream-replicas 3 --inbound-max-bytes 1073741824`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The same variables, defaults and checks as the receiver and consumer (internal/config), so
			// that apply never sets what the programs would refuse, nor lifts a cap by accident.
			var args []string
			for _, f := range []string{"stream-replicas", "inbound-max-bytes"} {
				if fl := cmd.Flags().Lookup(f); fl.Changed {
					args = append(args, "--"+f+"="+fl.Value.String())
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
			if err := topology.Ensure(cmd.Context(), js, topology.Options{Replicas: sc.StreamReplicas, InboundMaxBytes: sc.InboundMaxBytes}); err != nil {
				return runtime(err)
			}
			if _, err := topology.EnsureConsumer(cmd.Context(), js, topology.ConsumerOptions{Replicas: sc.StreamReplicas}); err != nil {
				return runtime(err)
			}
			return g.printStreams(cmd, js)
		},
	}
	apply.Flags().StringVar(&replicas, "stream-replicas", "", "replicas of each stream, 1 to 5 [STREAM_REPLICAS, default 1]")
	apply.Flags().StringVar(&replicas, "replicas", "", "replicas of each stream")
	_ = apply.Flags().MarkDeprecated("replicas", "use --stream-replicas")
	apply.Flags().StringVar(&maxBytes, "inbound-max-bytes", "", "byte limit of WECHATPAY_INBOUND, 0 for none [INBOUND_MAX_BYTES, default 0]")
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
