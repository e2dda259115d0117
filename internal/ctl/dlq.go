package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/tracing"
)

func init() { commands = append(commands, dlqCommand) }

func dlqCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge dead-lettered notifications (WECHATPAY_DLQ)",
		Long: `The consumer dead-letters what it cannot process into WECHATPAY_DLQ, on the subject
wechatpay.dlq.<reason>.<mchid>, with the raw (still encrypted) notification and its headers plus
Dlq-Reason, Dlq-Error, Dlq-Original-Subject, Dlq-Deliveries and Dlq-At.

ls, replay and purge take the same filters: --reason and --mchid (comma-separated, matched on the
subject), --event-type (a WeChat event type such as REFUND.SUCCESS or a domain type such as refund.*,
read from the envelope), --since/--until (an RFC 3339 time, or a duration ago such as 2h), --seq A-B
and --limit.`,
		Example: `  wxpayctl dlq ls --reason decrypt_failed
  wxpayctl dlq show 42
  wxpayctl dlq replay --reason unsupported_event_type --dry-run
  wxpayctl dlq replay --reason decrypt_failed --rate 20/s
  wxpayctl dlq purge --reason malformed --until 168h --yes`,
		Args: cobra.NoArgs,
		// Without a subcommand, or with an unknown one, say so: help and exit 0 would hide a typo.
		RunE: func(*cobra.Command, []string) error {
			return usageError("dlq needs a subcommand: ls, show, replay or purge (see wxpayctl dlq --help)")
		},
	}
	cmd.AddCommand(dlqLsCommand(g), dlqShowCommand(g), dlqReplayCommand(g), dlqPurgeCommand(g))
	cmd.SuggestionsMinimumDistance = 2
	cmd.Args = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown dlq subcommand %q", args[0])
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usageError("%s (subcommands: ls, show, replay, purge)", msg)
	}
	return cmd
}

// dlqFlags are the entry filters as flags; parse turns them into a dlq.Filter.
type dlqFlags struct {
	reasons, mchids, eventTypes []string
	since, until, seq           string
	limit                       int
}

func (f *dlqFlags) register(fs *pflag.FlagSet, defaultLimit int) {
	fs.StringSliceVar(&f.reasons, "reason", nil, "only these dead-letter reasons (e.g. decrypt_failed,unsupported_event_type)")
	fs.StringSliceVar(&f.mchids, "mchid", nil, "only these merchants")
	fs.StringSliceVar(&f.eventTypes, "event-type", nil, "only these event types: WeChat (REFUND.SUCCESS) or domain (refund.succeeded, refund.*)")
	fs.StringVar(&f.since, "since", "", "only entries stored at or after this time (RFC 3339, or a duration ago: 2h)")
	fs.StringVar(&f.until, "until", "", "only entries stored before this time (RFC 3339, or a duration ago)")
	fs.StringVar(&f.seq, "seq", "", "only these DLQ sequences: N, A-B or A-")
	fs.IntVar(&f.limit, "limit", defaultLimit, "at most this many entries (0: no limit)")
}

func (f *dlqFlags) parse(now time.Time) (dlq.Filter, error) {
	filter := dlq.Filter{Reasons: f.reasons, MchIDs: f.mchids, EventTypes: f.eventTypes, Limit: f.limit}
	var err error
	if filter.Since, err = dlq.ParseWhen(f.since, now); err != nil {
		return filter, usageError("--since: %v", err)
	}
	if filter.Until, err = dlq.ParseWhen(f.until, now); err != nil {
		return filter, usageError("--until: %v", err)
	}
	if f.seq != "" {
		if filter.From, filter.To, err = dlq.ParseSeqRange(f.seq); err != nil {
			return filter, usageError("--seq: %v", err)
		}
	}
	if err := filter.Validate(); err != nil {
		return filter, usageError("%v", err)
	}
	return filter, nil
}

// openDLQ connects and opens the DLQ, turning the store's errors into exit codes.
func (g *globals) openDLQ(ctx context.Context, opts ...dlq.Option) (*dlq.Store, func(), error) {
	nc, js, err := g.connect()
	if err != nil {
		return nil, nil, err
	}
	s, err := dlq.Open(ctx, js, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, runtime(err)
	}
	return s, nc.Close, nil
}

func dlqLsCommand(g *globals) *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List dead-lettered notifications with their reason",
		Example: `  wxpayctl dlq ls
  wxpayctl dlq ls --reason decrypt_failed --mchid 1900000100 --since 24h
  wxpayctl dlq ls --event-type 'refund.*' -o json | jq '.[].seq'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.parse(time.Now())
			if err != nil {
				return err
			}
			s, done, err := g.openDLQ(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			entries, more, err := s.Scan(cmd.Context(), filter)
			if err != nil {
				return runtime(err)
			}
			if g.output == "json" {
				if entries == nil {
					entries = []dlq.Entry{}
				}
				return json.NewEncoder(g.env.Stdout).Encode(entries)
			}
			if len(entries) == 0 {
				outln(g.env.Stdout, "no dead-lettered notification matches")
				return nil
			}
			printDLQEntries(g.env.Stdout, entries)
			if more {
				outf(g.env.Stdout, "(more entries match: raise --limit %d)\n", filter.Limit)
			}
			return nil
		},
	}
	f.register(cmd.Flags(), 100)
	return cmd
}

func printDLQEntries(w io.Writer, entries []dlq.Entry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	outln(tw, "SEQ\tSTORED (UTC)\tREASON\tMCHID\tEVENT TYPE\tNOTIFICATION ID\tDELIVERIES\tERROR")
	for _, e := range entries {
		outf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.Stored.Format(time.RFC3339), e.Reason, e.MchID,
			dash(e.EventType), dash(e.NotificationID), e.Deliveries, dash(truncate(e.Error, 60)))
	}
	_ = tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// shownEntry is what show prints as JSON: the entry, its headers and envelope; the body and the plaintext
// only on request.
type shownEntry struct {
	dlq.Entry
	Subject       string            `json:"subject"`
	Headers       map[string]string `json:"headers"`
	Envelope      any               `json:"envelope,omitempty"`
	EnvelopeError string            `json:"envelope_error,omitempty"`
	BodyBytes     int               `json:"body_bytes"`
	Body          string            `json:"body,omitempty"`
	Plaintext     json.RawMessage   `json:"plaintext,omitempty"`
	Replayable    bool              `json:"replayable"`
	FixFirst      string            `json:"fix_first,omitempty"`
}

func dlqShowCommand(g *globals) *cobra.Command {
	var decryptIt, body bool
	var keyFile string
	cmd := &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one dead-lettered notification: headers, reason and envelope (decrypted only with --decrypt)",
		Long: `Show one DLQ entry: its headers, why it was dead-lettered, and the notification's envelope
(id, event type, the still-encrypted resource). The decrypted resource is shown only with --decrypt,
which needs the merchant's APIv3 key file (--apiv3-key-file or WECHATPAY_APIV3_KEY_FILE).`,
		Example: `  wxpayctl dlq show 42
  wxpayctl dlq show 42 -o json
  wxpayctl dlq show 42 --decrypt --apiv3-key-file /secrets/1900000100/apiv3.key`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError("show needs one DLQ sequence number, e.g. wxpayctl dlq show 42 (see wxpayctl dlq ls)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || seq == 0 {
				return usageError("SEQ %q: a DLQ sequence number (see wxpayctl dlq ls)", args[0])
			}
			if decryptIt && keyFile == "" {
				return usageError("--decrypt needs the APIv3 key: --apiv3-key-file FILE or WECHATPAY_APIV3_KEY_FILE")
			}
			s, done, err := g.openDLQ(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			e, err := s.Get(cmd.Context(), seq)
			if errors.Is(err, dlq.ErrNotFound) {
				return failed(err)
			}
			if err != nil {
				return runtime(err)
			}
			shown := shownEntry{Entry: e, Subject: e.Subject, Headers: map[string]string{}, BodyBytes: len(e.Body), EnvelopeError: e.EnvelopeError}
			shown.Replayable, shown.FixFirst = e.Replayable()
			if e.Envelope != nil {
				shown.Envelope = e.Envelope
			}
			for k, v := range e.Header {
				shown.Headers[k] = strings.Join(v, ", ")
			}
			if body {
				shown.Body = string(e.Body)
			}
			if decryptIt {
				if e.Envelope == nil {
					return failed(fmt.Errorf("cannot decrypt: %s", e.EnvelopeError))
				}
				key, err := config.ReadAPIv3Key(keyFile)
				if err != nil {
					return runtime(err)
				}
				c, err := decrypt.New(key)
				if err != nil {
					return runtime(err)
				}
				r := e.Envelope.Resource
				plain, err := c.Open(r.Algorithm, r.Nonce, r.AssociatedData, r.Ciphertext)
				if err != nil {
					return failed(fmt.Errorf("decrypt entry %d with %s: %w", seq, keyFile, err))
				}
				shown.Plaintext = plain
				if !json.Valid(plain) {
					shown.Plaintext, _ = json.Marshal(string(plain))
				}
			}
			if g.output == "json" {
				return json.NewEncoder(g.env.Stdout).Encode(shown)
			}
			printShownEntry(g.env.Stdout, shown)
			return nil
		},
	}
	cmd.Flags().BoolVar(&decryptIt, "decrypt", false, "also decrypt and show the resource (needs the APIv3 key; mind where the output goes)")
	cmd.Flags().StringVar(&keyFile, "apiv3-key-file", g.env.Getenv("WECHATPAY_APIV3_KEY_FILE"), "APIv3 key file for --decrypt [WECHATPAY_APIV3_KEY_FILE]")
	cmd.Flags().BoolVar(&body, "body", false, "also print the raw body as stored (still encrypted)")
	return cmd
}

func printShownEntry(w io.Writer, e shownEntry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	outf(tw, "DLQ entry\t%d, stored %s on %s\n", e.Seq, e.Stored.Format(time.RFC3339), e.Subject)
	outf(tw, "reason\t%s\n", e.Reason)
	outf(tw, "error\t%s\n", dash(e.Error))
	outf(tw, "deliveries\t%d\n", e.Deliveries)
	at := "-"
	if !e.DeadLetteredAt.IsZero() {
		at = e.DeadLetteredAt.Format(time.RFC3339)
	}
	outf(tw, "dead-lettered at\t%s\n", at)
	outf(tw, "original subject\t%s\n", dash(e.OriginalSubject))
	outf(tw, "original msg id\t%s\n", dash(e.OriginalMsgID))
	_ = tw.Flush()
	outln(w, "\nheaders:")
	keys := make([]string, 0, len(e.Headers))
	for k := range e.Headers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		outf(w, "  %s: %s\n", k, e.Headers[k])
	}
	outf(w, "\nenvelope (%d bytes):\n", e.BodyBytes)
	if env := e.Entry.Envelope; env == nil {
		outf(w, "  not a usable notification envelope: %s\n", e.EnvelopeError)
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		outf(tw, "  id\t%s\n  event_type\t%s\n  create_time\t%s\n  resource_type\t%s\n  summary\t%s\n", env.ID, env.EventType, env.CreateTime, env.ResourceType, env.Summary)
		r := env.Resource
		outf(tw, "  resource.algorithm\t%s\n  resource.original_type\t%s\n  resource.associated_data\t%s\n  resource.nonce\t%s\n", r.Algorithm, r.OriginalType, r.AssociatedData, r.Nonce)
		outf(tw, "  resource.ciphertext\t%s (%d characters, encrypted)\n", truncate(r.Ciphertext, 24), len(r.Ciphertext))
		_ = tw.Flush()
	}
	if e.Body != "" {
		outf(w, "\nbody:\n%s\n", e.Body)
	}
	if e.Plaintext != nil {
		var buf bytes.Buffer
		if json.Indent(&buf, e.Plaintext, "  ", "  ") != nil {
			buf.Write(e.Plaintext)
		}
		outf(w, "\nplaintext (decrypted):\n  %s\n", buf.String())
	}
	if e.Replayable {
		outf(w, "\nreplay it: wxpayctl dlq replay --seq %d\n", e.Seq)
	} else {
		outf(w, "\na replay as it is would fail again: %s; then: wxpayctl dlq replay --seq %d\n", e.FixFirst, e.Seq)
	}
}

func dlqReplayCommand(g *globals) *cobra.Command {
	var f dlqFlags
	var dryRun bool
	var rate string
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Send dead-lettered notifications back to the inbound stream, then remove them from the DLQ",
		Long: `Replay publishes each matching DLQ entry's body with its original Wechatpay-* and Request-ID
headers to its original inbound subject, with Nats-Msg-Id <original msg id>:replay:<DLQ seq>, waits for
WECHATPAY_INBOUND's acknowledgement, and only then deletes the entry from the DLQ. Entries whose
publish fails stay in the DLQ, and the command exits 1.

The signature is not checked again (the timestamp would be stale); the consumer processes the replay
like any notification, and its dedupe makes a second replay of the same fact publish nothing new.

The replay keeps the notification's traceparent, so its processing joins the notification's trace; with
OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_TRACES_EXPORTER) set, each replay is also a span linked to it.`,
		Example: `  # what would be replayed
  wxpayctl dlq replay --reason unsupported_event_type --dry-run

  # after fixing a merchant's APIv3 key: replay its decrypt failures, 20 a second
  wxpayctl dlq replay --reason decrypt_failed --mchid 1900000100 --rate 20/s

  # a range of entries, summary as JSON
  wxpayctl dlq replay --seq 100-250 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.parse(time.Now())
			if err != nil {
				return err
			}
			interval, err := dlq.ParseRate(rate)
			if err != nil {
				return usageError("--rate: %v", err)
			}
			// Export failures go to stderr; a replay's output stays the operator's.
			tlog := zerolog.New(g.env.Stderr).Level(zerolog.WarnLevel)
			tp, stopTracing, err := tracing.Setup(cmd.Context(), g.env.Getenv, "wxpayctl", tlog)
			if err != nil {
				return usageError("%v", err)
			}
			defer tracing.Stop(cmd.Context(), stopTracing, tlog)
			s, done, err := g.openDLQ(cmd.Context(), dlq.WithTracerProvider(tp))
			if err != nil {
				return err
			}
			defer done()
			return g.replay(cmd.Context(), s, filter, dryRun, interval)
		},
	}
	f.register(cmd.Flags(), 0)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be replayed; change nothing")
	cmd.Flags().StringVar(&rate, "rate", "", "at most this many replays per second or minute: 50/s, 600/m (default: unlimited)")
	return cmd
}

// progress draws a one-line progress bar on a terminal.
type progress struct {
	w     io.Writer
	on    bool
	total int
}

func (p *progress) update(done, ok, bad int) {
	if !p.on || p.total == 0 {
		return
	}
	const width = 30
	fill := done * width / p.total
	outf(p.w, "\r[%s%s] %d/%d  ok %d  failed %d", strings.Repeat("#", fill), strings.Repeat(".", width-fill), done, p.total, ok, bad)
}

func (p *progress) finish() {
	if p.on && p.total > 0 {
		outln(p.w)
	}
}

func (g *globals) replay(ctx context.Context, s *dlq.Store, f dlq.Filter, dryRun bool, interval time.Duration) error {
	entries, _, err := s.Scan(ctx, f)
	if err != nil {
		return runtime(err)
	}
	bar := &progress{w: g.env.Stderr, on: g.env.IsTerminal && !dryRun, total: len(entries)}
	sum := s.ReplayAll(ctx, entries, dryRun, interval, func(done int, sum *dlq.Summary) { bar.update(done, sum.Replayed, sum.Failed) })
	bar.finish()
	g.printReplay(sum)
	switch {
	case ctx.Err() != nil && !dryRun:
		return failed(fmt.Errorf("replay interrupted after %d of %d entries", sum.Replayed+sum.Failed+sum.Gone, sum.Matched))
	case sum.Failed > 0:
		return failed(fmt.Errorf("replay incomplete: %d of %d entries failed and stay in %s", sum.Failed, sum.Matched, topology.DLQStream))
	}
	return nil
}

func (g *globals) printReplay(sum dlq.Summary) {
	out := g.env.Stdout
	if g.output == "json" {
		_ = json.NewEncoder(out).Encode(sum)
		return
	}
	if sum.DryRun {
		if len(sum.Entries) > 0 {
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			outln(tw, "SEQ\tTO SUBJECT\tNATS-MSG-ID\tPROBLEM")
			for _, e := range sum.Entries {
				outf(tw, "%d\t%s\t%s\t%s\n", e.Seq, e.Target, e.MsgID, dash(e.Error))
			}
			_ = tw.Flush()
		}
		outf(out, "dry run: %d entries would be replayed to %s; nothing was changed\n", sum.Matched, topology.InboundStream)
		return
	}
	for _, e := range sum.Entries {
		if e.Error != "" {
			outf(out, "entry %d: %s\n", e.Seq, e.Error)
		}
	}
	outf(out, "replayed %d of %d entries to %s in %.1fs (failed %d, already gone %d)\n",
		sum.Replayed, sum.Matched, topology.InboundStream, sum.Elapsed, sum.Failed, sum.Gone)
}

// purgeSummary is printed at the end of a purge.
type purgeSummary struct {
	Matched int      `json:"matched"`
	Purged  int      `json:"purged"`
	DryRun  bool     `json:"dry_run"`
	Seqs    []uint64 `json:"seqs"`
	Errors  []string `json:"errors,omitempty"`
}

func dlqPurgeCommand(g *globals) *cobra.Command {
	var f dlqFlags
	var yes, dryRun bool
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead-lettered notifications for good (asks first)",
		Long: `Purge deletes the matching DLQ entries. It lists how many match and asks for confirmation on a
terminal; without a terminal it refuses unless --yes is given.`,
		Example: `  wxpayctl dlq purge --reason malformed --until 720h
  wxpayctl dlq purge --event-type PAYSCORE.USER_OPEN_SERVICE --yes
  wxpayctl dlq purge --seq 10-20 --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.parse(time.Now())
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			s, done, err := g.openDLQ(ctx)
			if err != nil {
				return err
			}
			defer done()
			entries, _, err := s.Scan(ctx, filter)
			if err != nil {
				return runtime(err)
			}
			sum := purgeSummary{Matched: len(entries), DryRun: dryRun, Seqs: []uint64{}}
			if len(entries) == 0 || dryRun {
				for _, e := range entries {
					sum.Seqs = append(sum.Seqs, e.Seq)
				}
				g.printPurge(sum, entries)
				return nil
			}
			if !yes {
				if !g.env.IsTerminal {
					return usageError("refusing to purge %d entries without confirmation: not a terminal; pass --yes", len(entries))
				}
				outf(g.env.Stderr, "Purge %d entries from %s for good? Type yes to confirm: ", len(entries), topology.DLQStream)
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "yes" && a != "y" {
					return failed(errors.New("purge cancelled; nothing was deleted"))
				}
			}
			for _, e := range entries {
				if err := s.Delete(ctx, e.Seq); err != nil {
					sum.Errors = append(sum.Errors, err.Error())
					continue
				}
				sum.Purged++
				sum.Seqs = append(sum.Seqs, e.Seq)
			}
			g.printPurge(sum, nil)
			if len(sum.Errors) > 0 {
				return failed(fmt.Errorf("purge incomplete: %d of %d entries could not be deleted", len(sum.Errors), sum.Matched))
			}
			return nil
		},
	}
	f.register(cmd.Flags(), 0)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be purged; change nothing")
	return cmd
}

func (g *globals) printPurge(sum purgeSummary, listed []dlq.Entry) {
	out := g.env.Stdout
	if g.output == "json" {
		_ = json.NewEncoder(out).Encode(sum)
		return
	}
	switch {
	case sum.Matched == 0:
		outln(out, "no dead-lettered notification matches; nothing to purge")
	case sum.DryRun:
		printDLQEntries(out, listed)
		outf(out, "dry run: %d entries would be purged; nothing was changed\n", sum.Matched)
	default:
		for _, e := range sum.Errors {
			outln(out, e)
		}
		outf(out, "purged %d of %d entries from %s\n", sum.Purged, sum.Matched, topology.DLQStream)
	}
}
