package config

import "io"

// Streams is the stream configuration that every program shares and `wxpayctl streams apply` applies.
type Streams struct {
	StreamReplicas  int
	InboundMaxBytes int64
}

// LoadStreams reads STREAM_REPLICAS and INBOUND_MAX_BYTES from args (--stream-replicas,
// --inbound-max-bytes) and getenv, validated exactly as the receiver and the consumer validate them: a bad
// value is an error naming its variable, never a silent default.
func LoadStreams(args []string, getenv func(string) string, out io.Writer) (Streams, error) {
	var c Common
	s := newSource("streams", getenv, out)
	s.common(&c, "")
	if err := s.parse(args); err != nil {
		return Streams{}, err
	}
	return Streams{StreamReplicas: c.StreamReplicas, InboundMaxBytes: c.InboundMaxBytes}, s.err()
}
