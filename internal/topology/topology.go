// Package topology owns the JetStream layout of wxpay-events: the connection, the three streams, their
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
)

// ConsumerName is the durable pull consumer shared by every consumer process.
const ConsumerName = "wxpay-consumer"

// Subject prefixes.
const (
	InboundPrefix = "wechatpay.inbound."
	EventsPrefix  = wxevents.SubjectPrefix
	DLQPrefix     = "wechatpay.dlq."
)

// Stream limits. The inbound stream uses Limits retention (not WorkQueue: inspection and replay need more
// consumers) and DiscardNew: when it is full a publish fails and the receiver answers 503, so WeChat
// retries, instead of JetStream silently dropping the oldest unprocessed notification.
const (
	InboundDuplicates = 10 * time.Minute // WeChat's retries over 24 h belong to Redis; this window absorbs bursts
	InboundMaxAge     = 7 * 24 * time.Hour
	EventsDuplicates  = 10 * time.Minute
	EventsMaxAge      = 30 * 24 * time.Hour
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

// Options size the streams.
type Options struct {
	Replicas        int
	InboundMaxBytes int64 // 0: no byte limit (the age limit still applies)
}

// StreamConfigs returns the three streams' configurations.
func StreamConfigs(o Options) []jetstream.StreamConfig {
	r := max(o.Replicas, 1)
	maxBytes := o.InboundMaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	return []jetstream.StreamConfig{
		{
			Name:        InboundStream,
			Description: "WeChat Pay notifications exactly as received, still encrypted",
			Subjects:    []string{InboundPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxAge:      InboundMaxAge,
			MaxBytes:    maxBytes,
			Duplicates:  InboundDuplicates,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
		},
		{
			Name:        EventsStream,
			Description: "Typed domain events (CloudEvents JSON), one per business fact",
			Subjects:    []string{EventsPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxAge:      EventsMaxAge,
			Duplicates:  EventsDuplicates,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
		},
		{
			Name:        DLQStream,
			Description: "Notifications that could not be processed, with the reason; replayable",
			Subjects:    []string{DLQPrefix + ">"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			Duplicates:  2 * time.Minute,
			Storage:     jetstream.FileStorage,
			Replicas:    r,
		},
	}
}

// ConsumerOptions size the durable consumer.
type ConsumerOptions struct {
	Replicas      int
	MaxDeliver    int
	MaxAckPending int
	AckWait       time.Duration
}

// DefaultMaxDeliver bounds redeliveries; a message that reaches it is dead-lettered by the consumer.
const DefaultMaxDeliver = 20

// ConsumerConfig is the durable pull consumer on the inbound stream. Retryable failures are paced by the
// consumer's NakWithDelay; a crashed or stuck worker's messages come back after AckWait. There is no
// BackOff list on purpose: nats-server counts a delayed NAK against BackOff too, so a 2 s retry turned
// into BackOff[n]-AckWait+2 s (32 s with 30 s/60 s) and outage retries into minutes.
func ConsumerConfig(o ConsumerOptions) jetstream.ConsumerConfig {
	if o.MaxDeliver == 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.MaxAckPending == 0 {
		o.MaxAckPending = 1000
	}
	if o.AckWait == 0 {
		o.AckWait = 30 * time.Second
	}
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "wxpay-events consumer: decrypt, dedupe, publish domain events",
		FilterSubject: InboundPrefix + ">",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: o.MaxAckPending,
		Replicas:      max(o.Replicas, 0),
	}
}

// Ensure creates or updates the three streams.
func Ensure(ctx context.Context, js jetstream.JetStream, o Options) error {
	for _, cfg := range StreamConfigs(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return Explain(js, fmt.Errorf("create or update stream %s: %w", cfg.Name, err))
		}
	}
	return nil
}

// EnsureConsumer creates or updates the durable consumer.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, o ConsumerOptions) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, InboundStream, ConsumerConfig(o))
	if err != nil {
		return nil, Explain(js, fmt.Errorf("create or update consumer %s: %w", ConsumerName, err))
	}
	return c, nil
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
