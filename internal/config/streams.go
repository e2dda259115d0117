package config

import (
	"fmt"
	"io"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// Streams is the JetStream layout: the streams' sizes and the durable consumer's fleet-wide settings.
// Every program reads it from the same variables (they all create what is missing), `wxpayctl streams
// apply` applies it, and each consumer process applies the consumer settings at start; nothing a process
// computes for itself (its number of workers, say) goes into it.
type Streams struct {
	StreamReplicas int
	// InboundMaxBytes caps WECHATPAY_INBOUND (0: no byte limit). The stream holds only notifications not
	// yet processed, and when they fill it the receiver answers 503.
	InboundMaxBytes int64
	// ArchiveMaxBytes caps WECHATPAY_ARCHIVE (0: only its 7-day age limit); the oldest copies go first.
	ArchiveMaxBytes int64
	Consumer        ConsumerSettings
}

// ConsumerSettings are the durable consumer's settings, shared by the whole fleet of consumer processes.
type ConsumerSettings struct {
	// MaxAckPending bounds the messages delivered and not yet acknowledged across every process: the
	// fleet's parallelism. Set it to at least the sum of all processes' CONSUMER_WORKERS, with room for
	// the autoscaler's maximum.
	MaxAckPending int
	// AckWait is how long a delivered message may stay unsettled before it is delivered again.
	AckWait time.Duration
	// MaxDeliver bounds the deliveries of one message; the last failed one is dead-lettered.
	MaxDeliver int
}

// Topology is the configuration in internal/topology's terms.
func (s Streams) Topology() topology.Options {
	return topology.Options{
		Replicas:        s.StreamReplicas,
		InboundMaxBytes: s.InboundMaxBytes,
		ArchiveMaxBytes: s.ArchiveMaxBytes,
		Consumer: topology.ConsumerOptions{
			MaxAckPending: s.Consumer.MaxAckPending,
			AckWait:       s.Consumer.AckWait,
			MaxDeliver:    s.Consumer.MaxDeliver,
		},
	}
}

// StreamsVars are the variables Streams is read from, in the order --help lists them.
var StreamsVars = []string{
	"STREAM_REPLICAS", "INBOUND_MAX_BYTES", "ARCHIVE_MAX_BYTES",
	"CONSUMER_MAX_ACK_PENDING", "CONSUMER_ACK_WAIT", "CONSUMER_MAX_DELIVER",
}

// minAckWait is the shortest CONSUMER_ACK_WAIT accepted. Production wants far more than one attempt
// takes (the consumer bounds each Redis and NATS call to 3 s); tests shorten it to seconds so that a
// crashed consumer's messages come back quickly.
const minAckWait = time.Second

func (s *source) streams(st *Streams) {
	s.integer(&st.StreamReplicas, "STREAM_REPLICAS", 1, 1, "JetStream replicas of the streams")
	s.byteCount(&st.InboundMaxBytes, "INBOUND_MAX_BYTES",
		"byte limit of WECHATPAY_INBOUND, which holds the notifications not yet processed (0: none); when full, the receiver answers 503")
	s.byteCount(&st.ArchiveMaxBytes, "ARCHIVE_MAX_BYTES",
		"byte limit of WECHATPAY_ARCHIVE, the 7-day history (0: none); the oldest copies go first")
	s.integer(&st.Consumer.MaxAckPending, "CONSUMER_MAX_ACK_PENDING", topology.DefaultMaxAckPending, 1,
		"messages in flight across ALL consumer processes (the durable consumer's MaxAckPending)")
	s.duration(&st.Consumer.AckWait, "CONSUMER_ACK_WAIT", topology.DefaultAckWait,
		"how long a delivered message may stay unsettled before it is redelivered")
	s.integer(&st.Consumer.MaxDeliver, "CONSUMER_MAX_DELIVER", topology.DefaultMaxDeliver, 2,
		"deliveries of one message before it is dead-lettered as max_deliveries")
	s.post = append(s.post, func() {
		if st.StreamReplicas > 5 {
			s.errs = append(s.errs, fmt.Sprintf("%s: %d is above JetStream's maximum of 5", s.describe("STREAM_REPLICAS"), st.StreamReplicas))
		}
		if st.Consumer.AckWait > 0 && st.Consumer.AckWait < minAckWait {
			s.errs = append(s.errs, fmt.Sprintf("%s: %s is below the minimum %s", s.describe("CONSUMER_ACK_WAIT"), st.Consumer.AckWait, minAckWait))
		}
	})
}

// LoadStreams reads Streams from args (--stream-replicas, --inbound-max-bytes, …) and getenv, validated
// exactly as the receiver and the consumer validate them: a bad value is an error naming its variable,
// never a silent default.
func LoadStreams(args []string, getenv func(string) string, out io.Writer) (Streams, error) {
	var st Streams
	s := newSource("streams", getenv, out)
	s.streams(&st)
	if err := s.parse(args); err != nil {
		return Streams{}, err
	}
	return st, s.err()
}

// FlagName is the flag of a variable: STREAM_REPLICAS → stream-replicas.
func FlagName(env string) string { return flagName(env) }
