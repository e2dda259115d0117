package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/decrypt"
	"github.com/wxpay-events/wxpay-events/internal/envelope"
	"github.com/wxpay-events/wxpay-events/internal/events"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

func init() { commands = append(commands, dlqCommand) }

// callTimeout bounds each NATS request of the dlq commands.
const callTimeout = 5 * time.Second

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
	}
	cmd.AddCommand(dlqLsCommand(g), dlqShowCommand(g), dlqReplayCommand(g), dlqPurgeCommand(g))
	return cmd
}

// dlqFilters select DLQ entries.
type dlqFilters struct {
	reasons, mchids, eventTypes []string
	since, until, seq           string
	limit                       int

	sinceT, untilT time.Time
	from, to       uint64 // stream sequences, inclusive; 0: open
}

func (f *dlqFilters) register(fs *pflag.FlagSet, defaultLimit int) {
	fs.StringSliceVar(&f.reasons, "reason", nil, "only these dead-letter reasons (e.g. decrypt_failed,unsupported_event_type)")
	fs.StringSliceVar(&f.mchids, "mchid", nil, "only these merchants")
	fs.StringSliceVar(&f.eventTypes, "event-type", nil, "only these event types: WeChat (REFUND.SUCCESS) or domain (refund.succeeded, refund.*)")
	fs.StringVar(&f.since, "since", "", "only entries stored at or after this time (RFC 3339, or a duration ago: 2h)")
	fs.StringVar(&f.until, "until", "", "only entries stored before this time (RFC 3339, or a duration ago)")
	fs.StringVar(&f.seq, "seq", "", "only these DLQ sequences: N, A-B or A-")
	fs.IntVar(&f.limit, "limit", defaultLimit, "at most this many entries (0: no limit)")
}

func (f *dlqFilters) parse(now time.Time) error {
	for _, list := range [][]string{f.reasons, f.mchids} {
		for _, v := range list {
			if !subjectToken(v) || v == "*" {
				return usageError("%q is not a subject token (a reason or merchant id)", v)
			}
		}
	}
	var err error
	if f.sinceT, err = parseWhen(f.since, now); err != nil {
		return usageError("--since: %v", err)
	}
	if f.untilT, err = parseWhen(f.until, now); err != nil {
		return usageError("--until: %v", err)
	}
	if f.limit < 0 {
		return usageError("--limit %d: must not be negative", f.limit)
	}
	if f.seq != "" {
		a, b, isRange := strings.Cut(f.seq, "-")
		if f.from, err = strconv.ParseUint(a, 10, 64); err != nil || f.from == 0 {
			return usageError("--seq %q: use N, A-B or A-", f.seq)
		}
		f.to = f.from
		if isRange {
			f.to = 0
			if b != "" {
				if f.to, err = strconv.ParseUint(b, 10, 64); err != nil || f.to < f.from {
					return usageError("--seq %q: use N, A-B or A- with A ≤ B", f.seq)
				}
			}
		}
	}
	for _, et := range f.eventTypes {
		if _, err := path.Match(et, ""); err != nil {
			return usageError("--event-type %q: %v", et, err)
		}
	}
	return nil
}

// parseWhen reads an RFC 3339 time or a duration before now; "" is the zero time.
func parseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration such as 90m", v)
	}
	return now.Add(-d), nil
}

// subjects are the DLQ filter subjects for the reason and merchant filters.
func (f *dlqFilters) subjects() []string {
	reasons, mchids := f.reasons, f.mchids
	if len(reasons) == 0 {
		reasons = []string{"*"}
	}
	if len(mchids) == 0 {
		mchids = []string{"*"}
	}
	var out []string
	for _, r := range reasons {
		for _, m := range mchids {
			if s := topology.DLQSubject(r, m); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	return out
}

// matchEventType reports whether a notification's WeChat event type passes the --event-type filter.
func (f *dlqFilters) matchEventType(eventType string) bool {
	if len(f.eventTypes) == 0 {
		return true
	}
	domain := ""
	for _, m := range events.Mappings() {
		if m.EventType == eventType {
			domain = m.Type
		}
	}
	for _, want := range f.eventTypes {
		if strings.EqualFold(want, eventType) {
			return true
		}
		if ok, _ := path.Match(want, domain); ok && domain != "" {
			return true
		}
	}
	return false
}

// dlqRow is one DLQ entry as ls shows it: everything but the body.
type dlqRow struct {
	Seq             uint64    `json:"seq"`
	Stored          time.Time `json:"stored"`
	Reason          string    `json:"reason"`
	MchID           string    `json:"mchid"`
	EventType       string    `json:"event_type,omitempty"`
	NotificationID  string    `json:"notification_id,omitempty"`
	Deliveries      string    `json:"deliveries,omitempty"`
	Error           string    `json:"error,omitempty"`
	OriginalSubject string    `json:"original_subject"`
	OriginalMsgID   string    `json:"original_msg_id,omitempty"`
	DeadLetteredAt  string    `json:"dead_lettered_at,omitempty"`
}

func newDLQRow(seq uint64, stored time.Time, subject string, h nats.Header, body []byte) dlqRow {
	r := dlqRow{
		Seq: seq, Stored: stored.UTC(),
		Reason: h.Get(consumer.HeaderDLQReason), Error: h.Get(consumer.HeaderDLQError),
		Deliveries: h.Get(consumer.HeaderDLQDeliveries), OriginalSubject: h.Get(consumer.HeaderDLQOriginalSubject),
		OriginalMsgID: h.Get(consumer.HeaderDLQOriginalMsgID), DeadLetteredAt: h.Get(consumer.HeaderDLQAt),
	}
	if rest, ok := strings.CutPrefix(subject, topology.DLQPrefix); ok {
		reason, mchid, _ := strings.Cut(rest, ".")
		r.MchID = mchid
		if r.Reason == "" {
			r.Reason = reason
		}
	}
	if env, err := envelope.Parse(body); err == nil {
		r.EventType, r.NotificationID = env.EventType, env.ID
	}
	return r
}

// scanDLQ reads the DLQ in order with an ordered consumer filtered by subject (and start sequence or
// time), and returns the entries that pass every filter, up to the limit; more says the limit cut it.
func scanDLQ(ctx context.Context, js jetstream.JetStream, f *dlqFilters) (rows []dlqRow, more bool, err error) {
	s, err := dlqStream(ctx, js)
	if err != nil {
		return nil, false, err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: f.subjects(), DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: inactiveThreshold}
	switch {
	case f.from > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.from
	case !f.sinceT.IsZero():
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.sinceT
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, false, runtime(fmt.Errorf("read %s: %w", topology.DLQStream, err))
	}
	defer removeConsumer(ctx, js, topology.DLQStream, cons)
	if cons.CachedInfo().NumPending == 0 {
		return nil, false, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, false, runtime(fmt.Errorf("read %s: %w", topology.DLQStream, err))
	}
	defer it.Stop()
	for {
		nctx, cancel := context.WithTimeout(ctx, callTimeout)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			return nil, false, runtime(fmt.Errorf("read %s: %w", topology.DLQStream, err))
		}
		meta, err := m.Metadata()
		if err != nil {
			return nil, false, runtime(err)
		}
		seq := meta.Sequence.Stream
		if (f.to > 0 && seq > f.to) || (!f.untilT.IsZero() && !meta.Timestamp.Before(f.untilT)) {
			return rows, false, nil
		}
		if f.sinceT.IsZero() || !meta.Timestamp.Before(f.sinceT) {
			r := newDLQRow(seq, meta.Timestamp, m.Subject(), m.Headers(), m.Data())
			if f.matchEventType(r.EventType) {
				if f.limit > 0 && len(rows) == f.limit {
					return rows, true, nil
				}
				rows = append(rows, r)
			}
		}
		if meta.NumPending == 0 {
			return rows, false, nil
		}
	}
}

func dlqStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	s, err := js.Stream(cctx, topology.DLQStream)
	if err != nil {
		if topology.IsNotFound(err) {
			return nil, runtime(fmt.Errorf("stream %s: %w (run: wxpayctl streams apply)", topology.DLQStream, err))
		}
		return nil, runtime(fmt.Errorf("stream %s: %w", topology.DLQStream, err))
	}
	return s, nil
}

func dlqLsCommand(g *globals) *cobra.Command {
	var f dlqFilters
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List dead-lettered notifications with their reason",
		Example: `  wxpayctl dlq ls
  wxpayctl dlq ls --reason decrypt_failed --mchid 1900000100 --since 24h
  wxpayctl dlq ls --event-type 'refund.*' -o json | jq '.[].seq'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.parse(time.Now()); err != nil {
				return err
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			rows, more, err := scanDLQ(cmd.Context(), js, &f)
			if err != nil {
				return err
			}
			if g.output == "json" {
				if rows == nil {
					rows = []dlqRow{}
				}
				return json.NewEncoder(g.env.Stdout).Encode(rows)
			}
			if len(rows) == 0 {
				outln(g.env.Stdout, "no dead-lettered notification matches")
				return nil
			}
			printDLQRows(g.env.Stdout, rows)
			if more {
				outf(g.env.Stdout, "(more entries match: raise --limit %d)\n", f.limit)
			}
			return nil
		},
	}
	f.register(cmd.Flags(), 100)
	return cmd
}

func printDLQRows(w io.Writer, rows []dlqRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	outln(tw, "SEQ\tSTORED\tREASON\tMCHID\tEVENT TYPE\tNOTIFICATION ID\tDELIVERIES\tERROR")
	for _, r := range rows {
		outf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, r.Stored.Format(time.RFC3339), r.Reason, r.MchID,
			dash(r.EventType), dash(r.NotificationID), dash(r.Deliveries), dash(truncate(r.Error, 60)))
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

// dlqEntry is what show prints: the headers, the reason and the envelope; the plaintext only on request.
type dlqEntry struct {
	dlqRow
	Subject       string             `json:"subject"`
	Headers       map[string]string  `json:"headers"`
	Envelope      *envelope.Envelope `json:"envelope,omitempty"`
	EnvelopeError string             `json:"envelope_error,omitempty"`
	BodyBytes     int                `json:"body_bytes"`
	Body          string             `json:"body,omitempty"`
	Plaintext     json.RawMessage    `json:"plaintext,omitempty"`
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
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || seq == 0 {
				return usageError("SEQ %q: a DLQ sequence number (see wxpayctl dlq ls)", args[0])
			}
			if decryptIt && keyFile == "" {
				return usageError("--decrypt needs the APIv3 key: --apiv3-key-file FILE or WECHATPAY_APIV3_KEY_FILE")
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			s, err := dlqStream(cmd.Context(), js)
			if err != nil {
				return err
			}
			gctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			raw, err := s.GetMsg(gctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return failed(fmt.Errorf("%s has no entry %d (replayed or purged?)", topology.DLQStream, seq))
			}
			if err != nil {
				return runtime(fmt.Errorf("get %s entry %d: %w", topology.DLQStream, seq, err))
			}
			e := dlqEntry{dlqRow: newDLQRow(seq, raw.Time, raw.Subject, raw.Header, raw.Data), Subject: raw.Subject, Headers: map[string]string{}, BodyBytes: len(raw.Data)}
			for k, v := range raw.Header {
				e.Headers[k] = strings.Join(v, ", ")
			}
			env, perr := envelope.Parse(raw.Data)
			if perr != nil {
				e.EnvelopeError = perr.Error()
			} else {
				e.Envelope = &env
			}
			if body {
				e.Body = string(raw.Data)
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
				r := env.Resource
				plain, err := c.Open(r.Algorithm, r.Nonce, r.AssociatedData, r.Ciphertext)
				if err != nil {
					return failed(fmt.Errorf("decrypt entry %d with %s: %w", seq, keyFile, err))
				}
				e.Plaintext = plain
				if !json.Valid(plain) {
					e.Plaintext, _ = json.Marshal(string(plain))
				}
			}
			if g.output == "json" {
				return json.NewEncoder(g.env.Stdout).Encode(e)
			}
			printDLQEntry(g.env.Stdout, e)
			return nil
		},
	}
	cmd.Flags().BoolVar(&decryptIt, "decrypt", false, "also decrypt and show the resource (needs the APIv3 key; mind where the output goes)")
	cmd.Flags().StringVar(&keyFile, "apiv3-key-file", g.env.Getenv("WECHATPAY_APIV3_KEY_FILE"), "APIv3 key file for --decrypt [WECHATPAY_APIV3_KEY_FILE]")
	cmd.Flags().BoolVar(&body, "body", false, "also print the raw body as stored (still encrypted)")
	return cmd
}

func printDLQEntry(w io.Writer, e dlqEntry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	outf(tw, "DLQ entry\t%d, stored %s on %s\n", e.Seq, e.Stored.Format(time.RFC3339), e.Subject)
	outf(tw, "reason\t%s\n", e.Reason)
	outf(tw, "error\t%s\n", dash(e.Error))
	outf(tw, "deliveries\t%s\n", dash(e.Deliveries))
	outf(tw, "dead-lettered at\t%s\n", dash(e.DeadLetteredAt))
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
	if e.Envelope == nil {
		outf(w, "  not a usable notification envelope: %s\n", e.EnvelopeError)
	} else {
		env := e.Envelope
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
	outf(w, "\nreplay it: wxpayctl dlq replay --seq %d\n", e.Seq)
}

// replayOutcome is what happened to one entry.
type replayOutcome struct {
	Seq        uint64 `json:"seq"`
	Target     string `json:"target,omitempty"`
	MsgID      string `json:"msg_id,omitempty"`
	InboundSeq uint64 `json:"inbound_seq,omitempty"`
	Duplicate  bool   `json:"duplicate,omitempty"` // the inbound stream already had this replay (a re-run after a crash)
	Error      string `json:"error,omitempty"`
}

// replaySummary is printed at the end of a replay.
type replaySummary struct {
	Matched  int             `json:"matched"`
	Replayed int             `json:"replayed"`
	Failed   int             `json:"failed"`
	Gone     int             `json:"gone"` // removed by someone else between listing and replaying
	DryRun   bool            `json:"dry_run"`
	Elapsed  float64         `json:"elapsed_seconds"`
	Entries  []replayOutcome `json:"entries"`
}

func dlqReplayCommand(g *globals) *cobra.Command {
	var f dlqFilters
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
like any notification, and its dedupe makes a second replay of the same fact publish nothing new.`,
		Example: `  # what would be replayed
  wxpayctl dlq replay --reason unsupported_event_type --dry-run

  # after fixing a merchant's APIv3 key: replay its decrypt failures, 20 a second
  wxpayctl dlq replay --reason decrypt_failed --mchid 1900000100 --rate 20/s

  # a range of entries, summary as JSON
  wxpayctl dlq replay --seq 100-250 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.parse(time.Now()); err != nil {
				return err
			}
			interval, err := parseRate(rate)
			if err != nil {
				return usageError("--rate: %v", err)
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			return g.replay(cmd.Context(), js, &f, dryRun, interval)
		},
	}
	f.register(cmd.Flags(), 0)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be replayed; change nothing")
	cmd.Flags().StringVar(&rate, "rate", "", "at most this many replays per second or minute: 50/s, 600/m (default: unlimited)")
	return cmd
}

// parseRate reads "N/s", "N/m" or "N" (per second) into the interval between two operations; "" is 0.
func parseRate(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(v, "/")
	per := time.Second
	switch unit {
	case "", "s", "sec":
	case "m", "min":
		per = time.Minute
	default:
		return 0, fmt.Errorf("%q: use N/s or N/m", v)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q: use a positive rate such as 20/s", v)
	}
	return time.Duration(float64(per) / n), nil
}

// pacer spaces operations at least interval apart: a token bucket holding one token, so that a stalled
// publish is not followed by a burst that would exceed the rate.
type pacer struct {
	interval time.Duration
	next     time.Time // earliest start of the next operation; zero before the first
}

func (p *pacer) wait(ctx context.Context) error {
	if p.interval <= 0 {
		return ctx.Err()
	}
	if d := time.Until(p.next); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	p.next = time.Now().Add(p.interval)
	return ctx.Err()
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

func (g *globals) replay(ctx context.Context, js jetstream.JetStream, f *dlqFilters, dryRun bool, interval time.Duration) error {
	start := time.Now()
	rows, _, err := scanDLQ(ctx, js, f)
	if err != nil {
		return err
	}
	sum := replaySummary{Matched: len(rows), DryRun: dryRun, Entries: []replayOutcome{}}
	s, err := dlqStream(ctx, js)
	if err != nil {
		return err
	}
	bar := &progress{w: g.env.Stderr, on: g.env.IsTerminal && !dryRun, total: len(rows)}
	pace := &pacer{interval: interval}
	for i, r := range rows {
		out := replayOutcome{Seq: r.Seq}
		if dryRun {
			out.Target, out.MsgID = r.OriginalSubject, replayMsgID(r.OriginalMsgID, r.OriginalSubject, r.NotificationID, r.Seq)
			if _, _, ok := topology.ParseInboundSubject(r.OriginalSubject); !ok {
				out.Error = fmt.Sprintf("Dlq-Original-Subject %q is not an inbound subject", r.OriginalSubject)
			}
			sum.Entries = append(sum.Entries, out)
			continue
		}
		if err := pace.wait(ctx); err != nil {
			break // interrupted: what is left stays in the DLQ
		}
		gone := false
		out, gone = replayOne(ctx, js, s, r.Seq)
		switch {
		case gone:
			sum.Gone++
		case out.Error != "":
			sum.Failed++
		default:
			sum.Replayed++
		}
		sum.Entries = append(sum.Entries, out)
		bar.update(i+1, sum.Replayed, sum.Failed)
	}
	bar.finish()
	sum.Elapsed = time.Since(start).Seconds()
	g.printReplay(sum)
	switch {
	case ctx.Err() != nil && !dryRun:
		return failed(fmt.Errorf("replay interrupted after %d of %d entries", sum.Replayed+sum.Failed+sum.Gone, sum.Matched))
	case sum.Failed > 0:
		return failed(fmt.Errorf("replay incomplete: %d of %d entries failed and stay in %s", sum.Failed, sum.Matched, topology.DLQStream))
	}
	return nil
}

// replayMsgID is the Nats-Msg-Id of a replay: a new id per DLQ entry, so that the inbound stream's
// duplicate window does not swallow the replay of a recent failure, but a re-run of the same entry's
// replay (after a crash between the PubAck and the delete) is recognised as a duplicate.
func replayMsgID(original, subject, notificationID string, seq uint64) string {
	if original == "" {
		mchid, _, _ := topology.ParseInboundSubject(subject)
		original = topology.InboundMsgID(mchid, notificationID)
	}
	return original + ":replay:" + strconv.FormatUint(seq, 10)
}

// replayOne republishes DLQ entry seq to its inbound subject, waits for the PubAck, then deletes the entry.
// gone reports that the entry no longer exists.
func replayOne(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, seq uint64) (out replayOutcome, gone bool) {
	out.Seq = seq
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	raw, err := s.GetMsg(cctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		out.Error = "gone"
		return out, true
	}
	if err != nil {
		out.Error = fmt.Sprintf("read: %v", err)
		return out, false
	}
	out.Target = raw.Header.Get(consumer.HeaderDLQOriginalSubject)
	if _, _, ok := topology.ParseInboundSubject(out.Target); !ok {
		out.Error = fmt.Sprintf("Dlq-Original-Subject %q is not an inbound subject", out.Target)
		return out, false
	}
	nid := ""
	if env, err := envelope.Parse(raw.Data); err == nil {
		nid = env.ID
	}
	out.MsgID = replayMsgID(raw.Header.Get(consumer.HeaderDLQOriginalMsgID), out.Target, nid, seq)
	m := &nats.Msg{Subject: out.Target, Data: raw.Data, Header: nats.Header{}}
	for k, v := range raw.Header {
		if strings.HasPrefix(k, "Wechatpay-") || k == topology.HeaderRequestID {
			m.Header[k] = v
		}
	}
	ack, err := js.PublishMsg(cctx, m, jetstream.WithMsgID(out.MsgID), jetstream.WithExpectStream(topology.InboundStream))
	if err != nil {
		out.Error = fmt.Sprintf("publish to %s: %v (the entry stays in the DLQ)", topology.InboundStream, err)
		return out, false
	}
	out.InboundSeq, out.Duplicate = ack.Sequence, ack.Duplicate
	if err := s.DeleteMsg(cctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		out.Error = fmt.Sprintf("replayed as inbound %d but not removed from the DLQ: %v (replaying it again is harmless)", ack.Sequence, err)
	}
	return out, false
}

func (g *globals) printReplay(sum replaySummary) {
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
		if e.Error != "" && e.Error != "gone" {
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
	var f dlqFilters
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
			if err := f.parse(time.Now()); err != nil {
				return err
			}
			nc, js, err := g.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			ctx := cmd.Context()
			rows, _, err := scanDLQ(ctx, js, &f)
			if err != nil {
				return err
			}
			sum := purgeSummary{Matched: len(rows), DryRun: dryRun, Seqs: []uint64{}}
			if len(rows) == 0 || dryRun {
				for _, r := range rows {
					sum.Seqs = append(sum.Seqs, r.Seq)
				}
				g.printPurge(sum, rows)
				return nil
			}
			if !yes {
				if !g.env.IsTerminal {
					return usageError("refusing to purge %d entries without confirmation: not a terminal; pass --yes", len(rows))
				}
				outf(g.env.Stderr, "Purge %d entries from %s for good? Type yes to confirm: ", len(rows), topology.DLQStream)
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if a := strings.ToLower(strings.TrimSpace(answer)); a != "yes" && a != "y" {
					return failed(errors.New("purge cancelled; nothing was deleted"))
				}
			}
			s, err := dlqStream(ctx, js)
			if err != nil {
				return err
			}
			for _, r := range rows {
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				err := s.DeleteMsg(cctx, r.Seq)
				cancel()
				if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
					sum.Errors = append(sum.Errors, fmt.Sprintf("entry %d: %v", r.Seq, err))
					continue
				}
				sum.Purged++
				sum.Seqs = append(sum.Seqs, r.Seq)
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

func (g *globals) printPurge(sum purgeSummary, listed []dlqRow) {
	out := g.env.Stdout
	if g.output == "json" {
		_ = json.NewEncoder(out).Encode(sum)
		return
	}
	switch {
	case sum.Matched == 0:
		outln(out, "no dead-lettered notification matches; nothing to purge")
	case sum.DryRun:
		printDLQRows(out, listed)
		outf(out, "dry run: %d entries would be purged; nothing was changed\n", sum.Matched)
	default:
		for _, e := range sum.Errors {
			outln(out, e)
		}
		outf(out, "purged %d of %d entries from %s\n", sum.Purged, sum.Matched, topology.DLQStream)
	}
}
