// Package topology owns the JetStream layout of wxpay-events: the connection, the four streams, their
// subjects and the consumer's durable, so that every program creates and checks exactly the same things.
package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

// Stream names. The events stream and its subjects are part of the public
// contract, so package wxevents owns their names and layout and this package
// takes them from there.
const (
	InboundStream = "WECHATPAY_INBOUND"
	EventsStream  = wxevents.Stream
	DLQStream     = "WECHATPAY_DLQ"
	// ArchiveStream keeps every stored notification for ArchiveMaxAge, processed or not, for inspection
	// and replay: WECHATPAY_INBOUND itself keeps only what the consumers have not finished.
	ArchiveStream = "WECHATPAY_ARCHIVE"
)

// ConsumerName is the durable pull consumer shared by every consumer process.
const ConsumerName = "wxpay-consumer"

// ArchiveConsumerName is the durable on WECHATPAY_INBOUND through which WECHATPAY_ARCHIVE sources it.
// The archive creates no consumer of its own: one that this package configures has a bounded window
// (ArchiveWindow) and disappears when no archive reads it (ArchiveInactiveThreshold), which a consumer
// made by the server for a source has neither of.
const ArchiveConsumerName = "wxpay-archive"

// ArchiveDeliverSubject is where the archive consumer pushes to and WECHATPAY_ARCHIVE listens. It is
// outside every stream's subjects.
const ArchiveDeliverSubject = "_WXPAY.archive.inbound"

// Subject prefixes.
const (
	InboundPrefix = "wechatpay.inbound."
	EventsPrefix  = wxevents.SubjectPrefix
	DLQPrefix     = "wechatpay.dlq."
)

// Stream limits.
//
// WECHATPAY_INBOUND uses Interest retention: a notification leaves it once every consumer of the stream
// has acknowledged it — the durable work consumer (processed or dead-lettered) and the archive consumer
// (copied to WECHATPAY_ARCHIVE). So INBOUND_MAX_BYTES counts only what is not finished, and DiscardNew
// makes a full stream refuse new notifications (the receiver answers 503 and WeChat retries) instead of
// JetStream evicting an unprocessed one. It has no age limit for the same reason. Not WorkQueue: a work
// queue refuses the second consumer the archive needs (LESSONS.md).
//
// WECHATPAY_ARCHIVE is the history: Limits retention, DiscardOld, 7 days (and ARCHIVE_MAX_BYTES), so
// that it never refuses a copy and therefore never holds up WECHATPAY_INBOUND.
const (
	InboundDuplicates = 10 * time.Minute // WeChat's retries over 24 h belong to Redis; this window absorbs bursts
	EventsDuplicates  = 10 * time.Minute
	EventsMaxAge      = 30 * 24 * time.Hour
	ArchiveMaxAge     = 7 * 24 * time.Hour
	ArchiveDuplicates = 2 * time.Minute
	// ArchiveWindow bounds the notifications the archive consumer has pushed but WECHATPAY_ARCHIVE has
	// not yet confirmed; each stays in WECHATPAY_INBOUND until then, even when processed. JetStream's
	// own source consumer would hold up to its default 1000, or 16 MB, which a small INBOUND_MAX_BYTES
	// could not absorb.
	ArchiveWindow = 32
	// ArchiveInactiveThreshold is how long the archive consumer outlives a missing or unreachable
	// WECHATPAY_ARCHIVE. While it exists it keeps every notification it has not copied; after this it
	// is deleted and WECHATPAY_INBOUND holds only unprocessed work again (the history has a gap until
	// Ensure or `wxpayctl streams apply` creates it again).
	ArchiveInactiveThreshold = 10 * time.Minute
)

// Header names the pipeline writes.
const (
	HeaderRequestID = "Request-ID"
)

// InboundSubject is where a notification for mchid with eventToken (lower-cased event type) is stored.
func InboundSubject(mchid, eventToken string) string {
	return InboundPrefix + mchid + "." + eventToken
}

// ParseInboundSubject splits an inbound subject into merchant id and lower-cased event type.
func ParseInboundSubject(subject string) (mchid, eventToken string, ok bool) {
	rest, found := strings.CutPrefix(subject, InboundPrefix)
	if !found {
		return "", "", false
	}
	mchid, eventToken, ok = strings.Cut(rest, ".")
	return mchid, eventToken, ok && mchid != "" && eventToken != ""
}

// NoSubMerchant is the <sub> token of an events subject for a direct
// merchant's event, which has no sub-merchant.
const NoSubMerchant = wxevents.NoSubMerchant

// EventSubject is where a domain event of type typ (e.g. "payment.succeeded")
// for merchant mchid and sub-merchant sub ("" for a direct merchant) is
// published: "wechatpay.events.<type>.<mchid>.<sub>", with "_" for no
// sub-merchant, so that a service provider can subscribe per sub-merchant
// ("wechatpay.events.*.*.<mchid>.<sub_mchid>"). See wxevents.Subject.
func EventSubject(typ, mchid, sub string) string {
	return wxevents.Subject(wxevents.Type(typ), mchid, sub)
}

// EventSubjectParts are the tokens of an events subject.
type EventSubjectParts struct {
	Type  string // domain type, e.g. "payment.succeeded"
	MchID string
	Sub   string // sub-merchant, "" for "_"
}

// ParseEventSubject splits an events subject into its domain type, merchant
// and sub-merchant. A subject of the layout before sub-merchants
// ("wechatpay.events.<type>.<mchid>", still in a stream's history) parses
// with Sub "". See wxevents.ParseSubject.
func ParseEventSubject(subject string) (EventSubjectParts, bool) {
	p, ok := wxevents.ParseSubject(subject)
	if !ok {
		return EventSubjectParts{}, false
	}
	return EventSubjectParts{Type: string(p.Type), MchID: p.MchID, Sub: p.SubMchID}, true
}

// EventFilter is the subject filter of events of type typ (may hold '*'
// tokens: "refund.*", "*.*"), merchant mchid and sub-merchant sub; an empty
// mchid or sub matches any, sub NoSubMerchant only direct-merchant events.
// See wxevents.SubjectFilter.
func EventFilter(typ, mchid, sub string) string { return wxevents.SubjectFilter(typ, mchid, sub) }

// DLQSubject is where a dead-lettered notification of mchid goes, by reason.
func DLQSubject(reason, mchid string) string { return DLQPrefix + reason + "." + mchid }

// InboundMsgID is the Nats-Msg-Id of a notification: JetStream drops a retry of it within the window.
func InboundMsgID(mchid, notificationID string) string { return mchid + ":" + notificationID }

// Options are the configuration of the streams and of the durable consumer, as every program reads
// it (internal/config.Streams): the one source of these settings.
type Options struct {
	Replicas        int
	InboundMaxBytes int64 // 0: no byte limit
	ArchiveMaxBytes int64 // 0: only the age limit
	Consumer        ConsumerOptions
}

// ConsumerOptions are the fleet-wide settings of the durable consumer. They belong to the fleet, not to a
// process: every consumer process pulls from the same durable, so MaxAckPending bounds the messages in
// flight across all of them.
type ConsumerOptions struct {
	MaxDeliver    int
	MaxAckPending int
	AckWait       time.Duration
}

// Defaults of ConsumerOptions.
const (
	// DefaultMaxDeliver bounds redeliveries; a message that reaches it is dead-lettered by the consumer.
	DefaultMaxDeliver = 20
	// DefaultMaxAckPending is the fleet's limit of messages in flight: 125 processes of 8 workers.
	DefaultMaxAckPending = 1000
	// DefaultAckWait is how long a delivered message may stay unsettled before JetStream redelivers it.
	DefaultAckWait = 30 * time.Second
)

func (o ConsumerOptions) withDefaults() ConsumerOptions {
	if o.MaxDeliver == 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.MaxAckPending == 0 {
		o.MaxAckPending = DefaultMaxAckPending
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	return o
}

func (o Options) replicas() int { return max(o.Replicas, 1) }

func limit(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// StreamConfigs returns the four streams' configurations, WECHATPAY_INBOUND first.
func StreamConfigs(o Options) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		InboundConfig(o),
		{
			Name:        EventsStream,
			Description: "Typed domain events (CloudEvents JSON), one per business fact",
			Subjects:    []string{EventsPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxAge:      EventsMaxAge,
			MaxBytes:    -1,
			Duplicates:  EventsDuplicates,
			Storage:     jetstream.FileStorage,
			Replicas:    o.replicas(),
		},
		{
			Name:        DLQStream,
			Description: "Notifications that could not be processed, with the reason; replayable",
			Subjects:    []string{DLQPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    -1,
			Duplicates:  2 * time.Minute,
			Storage:     jetstream.FileStorage,
			Replicas:    o.replicas(),
		},
		ArchiveConfig(o),
	}
}

// InboundConfig is WECHATPAY_INBOUND: the notifications not yet processed (see the stream limits above).
func InboundConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        InboundStream,
		Description: "WeChat Pay notifications exactly as received, still encrypted, until processed",
		Subjects:    []string{InboundPrefix + ">"},
		Retention:   jetstream.InterestPolicy,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    limit(o.InboundMaxBytes),
		Duplicates:  InboundDuplicates,
		Storage:     jetstream.FileStorage,
		Replicas:    o.replicas(),
	}
}

// ArchiveConfig is WECHATPAY_ARCHIVE: a copy of every notification WECHATPAY_INBOUND stored, under its
// inbound subject, for ArchiveMaxAge. It has no subjects of its own; it sources WECHATPAY_INBOUND
// through the archive consumer.
func ArchiveConfig(o Options) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        ArchiveStream,
		Description: "History of WECHATPAY_INBOUND: every stored notification, processed or not, for inspection and replay",
		Sources: []*jetstream.StreamSource{{
			Name:     InboundStream,
			Consumer: &jetstream.StreamConsumerSource{Name: ArchiveConsumerName, DeliverSubject: ArchiveDeliverSubject},
		}},
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		MaxAge:     ArchiveMaxAge,
		MaxBytes:   limit(o.ArchiveMaxBytes),
		Duplicates: ArchiveDuplicates,
		Storage:    jetstream.FileStorage,
		Replicas:   o.replicas(),
	}
}

// ConsumerConfig is the durable pull consumer on the inbound stream, built from the fleet-wide settings
// and nothing else. Retryable failures are paced by the consumer's NakWithDelay; a crashed or stuck
// worker's messages come back after AckWait. There is no BackOff list on purpose: nats-server counts a
// delayed NAK against BackOff too, so a 2 s retry turned into BackOff[n]-AckWait+2 s (32 s with 30 s/60 s)
// and outage retries into minutes. Its replicas equal the stream's, which Interest retention requires.
func ConsumerConfig(o Options) jetstream.ConsumerConfig {
	c := o.Consumer.withDefaults()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "wxpay-events consumer: decrypt, dedupe, publish domain events",
		FilterSubject: InboundPrefix + ">",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: c.MaxAckPending,
		Replicas:      o.replicas(),
	}
}

// ArchiveConsumerConfig is the push consumer WECHATPAY_ARCHIVE sources WECHATPAY_INBOUND through. Its
// acknowledgements ride on flow control (AckFlowControl, which durable sourcing requires; nats-server
// 2.14 or later), so a notification is released once the archive has stored it.
func ArchiveConsumerConfig(o Options) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:           ArchiveConsumerName,
		Description:       "copies every notification to " + ArchiveStream,
		DeliverSubject:    ArchiveDeliverSubject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckFlowControlPolicy,
		FlowControl:       true,
		IdleHeartbeat:     time.Second, // the only heartbeat nats-server accepts with AckFlowControl
		MaxAckPending:     ArchiveWindow,
		InactiveThreshold: ArchiveInactiveThreshold,
		Replicas:          o.replicas(),
	}
}

// Ensure creates what is missing — the streams, the durable consumer and the archive consumer — and
// changes nothing that exists: `wxpayctl streams apply` is the one writer of an existing configuration,
// so a program started with other settings (a receiver without STREAM_REPLICAS, say) cannot undo it.
//
// The durable consumer is created right after WECHATPAY_INBOUND: with Interest retention a stream without
// consumers stores nothing and still acknowledges the publish, so a notification must never reach it
// before the durable exists. The archive consumer comes before WECHATPAY_ARCHIVE, which needs it.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) error {
	configs := StreamConfigs(o)
	if err := createStream(ctx, js, configs[0]); err != nil {
		return err
	}
	if err := createConsumer(ctx, js, ConsumerConfig(o)); err != nil {
		return err
	}
	for _, cfg := range configs[1:3] {
		if err := createStream(ctx, js, cfg); err != nil {
			return err
		}
	}
	if err := createConsumer(ctx, js, ArchiveConsumerConfig(o)); err != nil {
		return err
	}
	return createStream(ctx, js, ArchiveConfig(o))
}

// createStream creates cfg's stream unless a stream of that name exists.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) error {
	_, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return Explain(js, fmt.Errorf("stream %s: %w", cfg.Name, err))
	}
	// Another program may create it at the same moment; with the same configuration that succeeds,
	// with another one the name is taken, and either way the stream now exists.
	if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return Explain(js, fmt.Errorf("create stream %s: %w", cfg.Name, err))
	}
	return nil
}

// createConsumer creates cfg's durable on WECHATPAY_INBOUND unless it exists.
func createConsumer(ctx context.Context, js jetstream.JetStream, cfg jetstream.ConsumerConfig) error {
	s, err := js.Stream(ctx, InboundStream)
	if err != nil {
		return Explain(js, fmt.Errorf("stream %s: %w", InboundStream, err))
	}
	if _, err := consumerInfo(ctx, s, cfg); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return Explain(js, fmt.Errorf("consumer %s: %w", cfg.Durable, err))
	}
	if cfg.DeliverSubject != "" {
		_, err = s.CreatePushConsumer(ctx, cfg)
	} else {
		_, err = s.CreateConsumer(ctx, cfg)
	}
	if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return Explain(js, fmt.Errorf("create consumer %s: %w", cfg.Durable, err))
	}
	return nil
}

// consumerInfo looks up the durable cfg describes on s, pull or push as cfg is.
func consumerInfo(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig) (*jetstream.ConsumerInfo, error) {
	if cfg.DeliverSubject != "" {
		c, err := s.PushConsumer(ctx, cfg.Durable)
		if err != nil {
			return nil, err
		}
		return c.CachedInfo(), nil
	}
	c, err := s.Consumer(ctx, cfg.Durable)
	if err != nil {
		return nil, err
	}
	return c.CachedInfo(), nil
}

// EnsureConsumer creates the durable consumer or brings its fleet-wide settings to o's. Every consumer
// process calls it at start with the same configuration `wxpayctl streams apply` applies, so the two
// agree; nothing a process computes for itself goes into it.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, o Options) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, InboundStream, ConsumerConfig(o))
	if err != nil {
		return nil, Explain(js, fmt.Errorf("create or update consumer %s: %w", ConsumerName, err))
	}
	return c, nil
}

// jsErrCodeUnavailable is nats-server's "JetStream system temporarily unavailable" (10008): the
// cluster has no meta leader, or the asset none, typically because a majority of its servers is down.
const jsErrCodeUnavailable jetstream.ErrorCode = 10008

// ErrNoQuorum reports that a majority of a replicated stream's servers is offline: nothing can be
// stored in it (or acknowledged from it) until they are back.
var ErrNoQuorum = errors.New("topology: no JetStream quorum")

// Quorum reports ErrNoQuorum when the stream described by info has lost a majority of its replicas, or
// has no leader, naming the servers that are offline. A stream on one server always has its quorum.
func Quorum(info *jetstream.StreamInfo) error {
	if info == nil || info.Cluster == nil || len(info.Cluster.Replicas) == 0 {
		return nil
	}
	if info.Cluster.Leader == "" {
		return fmt.Errorf("%w: stream %s has no leader (an election is under way, or too few of its %d servers are up)",
			ErrNoQuorum, info.Config.Name, len(info.Cluster.Replicas)+1)
	}
	var offline []string
	for _, r := range info.Cluster.Replicas {
		if r.Offline {
			offline = append(offline, r.Name)
		}
	}
	peers := len(info.Cluster.Replicas) + 1
	if 2*len(offline) >= peers {
		return fmt.Errorf("%w: stream %s: %d of its %d servers offline (%s); nothing is stored until a majority is back",
			ErrNoQuorum, info.Config.Name, len(offline), peers, strings.Join(offline, ", "))
	}
	return nil
}

// Check reports whether the streams exist, for readiness probes.
func Check(ctx context.Context, js jetstream.JetStream, names ...string) error {
	if len(names) == 0 {
		names = []string{InboundStream, EventsStream, DLQStream}
	}
	for _, n := range names {
		if _, err := js.Stream(ctx, n); err != nil {
			return Explain(js, fmt.Errorf("stream %s: %w", n, err))
		}
	}
	return nil
}

// Explain adds to a JetStream error the server it came from and, where NATS's words mislead, what they
// mean: "no responders available" from a JetStream request means the server runs without JetStream.
func Explain(js jetstream.JetStream, err error) error {
	if err == nil {
		return nil
	}
	server := "NATS"
	if nc := js.Conn(); nc != nil {
		if u := nc.ConnectedUrlRedacted(); u != "" {
			server = u
		}
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("%w (from %s: is JetStream enabled there? start nats-server with -js, or enable it for the account)", err, server)
	}
	if apiErr, ok := errors.AsType[*jetstream.APIError](err); ok && apiErr.ErrorCode == jsErrCodeUnavailable {
		return fmt.Errorf("%w (from %s: a JetStream cluster answers this while a majority of its servers is unreachable)", err, server)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("%w (from %s: no answer in time; in a cluster, a stream whose servers lost their majority answers nothing)", err, server)
	}
	return fmt.Errorf("%w (from %s)", err, server)
}

// ConnectOptions say how to reach NATS.
type ConnectOptions struct {
	URL   string
	Creds string
	Name  string // client name shown by the server
	// InProcess, when set, connects to an embedded server without a socket (dev mode).
	InProcess nats.InProcessConnProvider
}

// Connect connects to NATS and reconnects forever, logging state changes. It fails if the first connection
// fails: a program that cannot reach NATS at start should crash loudly and be restarted.
func Connect(o ConnectOptions, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(-1), // fail publishes while disconnected instead of buffering them: answer 503 at once
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("server", c.ConnectedUrlRedacted()).Msg("nats reconnected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error().Err(err).Msg("nats async error")
		}),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redact(o.URL), err)
	}
	return nc, nil
}

// redact hides passwords and tokens in NATS URLs before they reach a message.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "***" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// IsNotFound reports whether err says a stream or consumer does not exist.
func IsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound)
}
