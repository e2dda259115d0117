package receiver

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// ErrNotConnected reports that NATS is unreachable right now; the notification was not stored.
var ErrNotConnected = errors.New("receiver: not connected to NATS")

// JetStreamStore stores notifications in the inbound stream with asynchronous publishes, so that
// concurrent requests share round trips to the server while each still waits for its own PubAck.
type JetStreamStore struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// NewJetStreamStore stores through js on nc.
func NewJetStreamStore(nc *nats.Conn, js jetstream.JetStream) *JetStreamStore {
	return &JetStreamStore{nc: nc, js: js}
}

// Store publishes msg with msgID as Nats-Msg-Id and waits for the acknowledgement or ctx's end.
func (s *JetStreamStore) Store(ctx context.Context, msg *nats.Msg, msgID string) (bool, error) {
	if !s.nc.IsConnected() {
		return false, ErrNotConnected
	}
	fut, err := s.js.PublishMsgAsync(msg, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(topology.InboundStream))
	if err != nil {
		return false, fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	select {
	case ack := <-fut.Ok():
		return ack.Duplicate, nil
	case err := <-fut.Err():
		return false, fmt.Errorf("publish %s: %w", msg.Subject, err)
	case <-ctx.Done():
		return false, fmt.Errorf("publish %s: no acknowledgement in time: %w", msg.Subject, ctx.Err())
	}
}
