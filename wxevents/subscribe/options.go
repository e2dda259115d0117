package subscribe

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/wxpay-events/wxpay-events/wxevents"
)

// Defaults of the options.
const (
	// DefaultWorkers is how many events are handled at once.
	DefaultWorkers = 4
	// DefaultAckWait bounds one handler call (see AckWait).
	DefaultAckWait = 30 * time.Second
	// DefaultMaxDeliver bounds the deliveries of one event. With the default
	// backoff the last one comes about three and a half hours after the
	// first: long enough to ride out a database failover or a bad deploy.
	DefaultMaxDeliver = 50
	// DefaultMinBackoff and DefaultMaxBackoff bound the delay before an
	// event whose handler failed is delivered again: the delay doubles from
	// the minimum with each failed delivery, up to the maximum.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
)

// An Option configures a Subscriber; see New.
type Option func(*options)

// handlerFunc handles one parsed event of the type it is registered for.
type handlerFunc func(ctx context.Context, e wxevents.Event) error

type options struct {
	handlers    map[wxevents.Type]handlerFunc
	order       []wxevents.Type // handler types in registration order
	unknown     func(ctx context.Context, e wxevents.Event, err error) error
	giveUp      func(ctx context.Context, e wxevents.Event, err error)
	types       []wxevents.Type
	allTypes    bool
	merchants   []string
	subs        []string
	workers     int
	ackWait     time.Duration
	maxDeliver  int
	minBackoff  time.Duration
	maxBackoff  time.Duration
	start       start
	log         *slog.Logger
	tracer      trace.Tracer
	problems    []string
	description string
}

// start is where a new durable consumer begins.
type start struct {
	policy string // "new", "time" or "all"
	at     time.Time
}

// On registers h for events of the type whose data is T: the event type is
// T's, so
//
//	subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error { … })
//
// handles payment.succeeded. h gets the envelope (e.ID is the idempotency
// key; see wxevents.Event) and the decoded data. Its result settles the
// event: nil acknowledges it, an error delivers it again after a backoff,
// an error wrapped by Permanent terminates it. An event whose data does not
// decode into T goes to OnUnknown instead of h.
func On[T wxevents.Data](h func(ctx context.Context, e wxevents.Event, data T) error) Option {
	return func(o *options) {
		var zero T
		t := zero.DomainType()
		if h == nil {
			o.problems = append(o.problems, fmt.Sprintf("On[%T]: nil handler", zero))
			return
		}
		if _, dup := o.handlers[t]; dup {
			o.problems = append(o.problems, fmt.Sprintf("On[%T]: a second handler for %s", zero, t))
			return
		}
		o.handlers[t] = func(ctx context.Context, e wxevents.Event) error {
			d, err := wxevents.DecodeAs[T](e)
			if err != nil {
				return &undecodable{err}
			}
			return h(ctx, e, d)
		}
		o.order = append(o.order, t)
	}
}

// undecodable marks an event that reached a typed handler's decoder but did
// not decode, so that it takes the OnUnknown path.
type undecodable struct{ err error }

func (u *undecodable) Error() string { return u.err.Error() }
func (u *undecodable) Unwrap() error { return u.err }

// OnUnknown registers h for the events no typed handler can take: a message
// that is not a wxpay-events CloudEvent (err wraps wxevents.ErrMalformed; e
// holds only the ID, from the message's Nats-Msg-Id), an event of a type
// this version of wxevents does not know (wxevents.ErrUnknownType: a newer
// producer), data that does not decode into its type
// (wxevents.ErrDataMismatch), or a known type without a handler
// (ErrNoHandler, with AllTypes). h's result settles the event as a typed
// handler's does: return nil once the event is stored somewhere a person will
// look, or an error to have it delivered again later (after upgrading this
// module, say).
//
// Without OnUnknown such an event is logged and delivered again with backoff
// until MaxDeliver, then given up (see OnGiveUp): never acknowledged
// silently.
func OnUnknown(h func(ctx context.Context, e wxevents.Event, err error) error) Option {
	return func(o *options) { o.unknown = h }
}

// OnGiveUp registers f to record each event the subscriber stops delivering:
// its handler returned a Permanent error, or failed on the last of
// MaxDeliver deliveries. The subscriber has logged it at error level and
// terminated it in JetStream (it stays in the stream, so a person can read
// it and a new consumer started FromTime can process it again); f is where a
// service keeps its own record (a table, a metric, an alert). err says why.
func OnGiveUp(f func(ctx context.Context, e wxevents.Event, err error)) Option {
	return func(o *options) { o.giveUp = f }
}

// Types subscribes to events of these types only. Without Types (or
// AllTypes) the subscriber receives the types it has On handlers for; a type
// listed here without a handler needs OnUnknown.
func Types(types ...wxevents.Type) Option {
	return func(o *options) {
		for _, t := range types {
			if !t.Known() {
				o.problems = append(o.problems, fmt.Sprintf("Types: %q is not an event type of this version of wxevents", t))
				continue
			}
			o.types = appendNew(o.types, t)
		}
	}
}

// AllTypes subscribes to every event type, including those a newer producer
// may add; events without an On handler go to OnUnknown, which is required.
// For services that forward or archive every event.
func AllTypes() Option { return func(o *options) { o.allTypes = true } }

// Merchants subscribes to the events of these merchants (the mchid the
// notifications were sent to, a service provider's own id) only; by default,
// every merchant's.
func Merchants(mchids ...string) Option {
	return func(o *options) {
		for _, m := range mchids {
			if !token(m) {
				o.problems = append(o.problems, fmt.Sprintf("Merchants: %q is not a merchant id", m))
				continue
			}
			o.merchants = appendNew(o.merchants, m)
		}
	}
}

// SubMerchants subscribes to the events of these sub-merchants of a service
// provider only; wxevents.NoSubMerchant ("_") selects direct-merchant events.
// By default, every sub-merchant's and direct merchants'.
func SubMerchants(subMchids ...string) Option {
	return func(o *options) {
		for _, s := range subMchids {
			if !token(s) {
				o.problems = append(o.problems, fmt.Sprintf("SubMerchants: %q is not a sub-merchant id", s))
				continue
			}
			o.subs = appendNew(o.subs, s)
		}
	}
}

// Workers sets how many events are handled at once (DefaultWorkers). Events
// are not handled in stream order across workers, nor across redeliveries:
// key the handler's work by the event, not by its position.
func Workers(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.problems = append(o.problems, fmt.Sprintf("Workers(%d): want at least 1", n))
			return
		}
		o.workers = n
	}
}

// AckWait bounds one handler call (DefaultAckWait): the handler's context is
// cancelled after it, and JetStream, which has heard nothing by then, may
// deliver the event again — to this process after a crash, or to another
// one. Raise it for handlers that are slow on purpose.
func AckWait(d time.Duration) Option {
	return func(o *options) {
		if d < time.Second {
			o.problems = append(o.problems, fmt.Sprintf("AckWait(%s): want at least 1s", d))
			return
		}
		o.ackWait = d
	}
}

// MaxDeliver bounds how often one event is delivered (DefaultMaxDeliver). On
// the last delivery a failing event is given up (see OnGiveUp) instead of
// being left in limbo. n below 1 delivers forever.
func MaxDeliver(n int) Option {
	return func(o *options) {
		if n < 1 {
			n = -1
		}
		o.maxDeliver = n
	}
}

// Backoff sets the delay before an event whose handler failed is delivered
// again: lowest after the first failure, doubling with each further one, at
// most highest (DefaultMinBackoff, DefaultMaxBackoff). JetStream holds the
// event meanwhile (a delayed NAK), so a failing dependency is not hammered.
func Backoff(lowest, highest time.Duration) Option {
	return func(o *options) {
		if lowest <= 0 || highest < lowest {
			o.problems = append(o.problems, fmt.Sprintf("Backoff(%s, %s): want 0 < min <= max", lowest, highest))
			return
		}
		o.minBackoff, o.maxBackoff = lowest, highest
	}
}

// FromNew starts a new subscriber at the events published after it was
// created: the default. Start positions apply only when the durable consumer
// is created; a subscriber that already exists resumes where it stopped,
// whatever its options say.
func FromNew() Option { return func(o *options) { o.start = start{policy: "new"} } }

// FromTime starts a new subscriber at the events published at or after t:
// to back-fill a new service from the stream's history (30 days).
func FromTime(t time.Time) Option {
	return func(o *options) {
		if t.IsZero() {
			o.problems = append(o.problems, "FromTime: zero time")
			return
		}
		o.start = start{policy: "time", at: t}
	}
}

// FromBeginning starts a new subscriber at the oldest event the stream
// holds.
func FromBeginning() Option { return func(o *options) { o.start = start{policy: "all"} } }

// Logger sets where the subscriber logs (slog.Default() otherwise): a
// warning for each failed delivery, an error for each panic and each event
// given up, each with the event's id and type, never its data.
func Logger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// TracerProvider sets where the subscriber records the span of each delivery
// (otel.GetTracerProvider() otherwise, which records nothing until the
// service installs an SDK). The handler's context carries the span, a child
// of the producer's, so the handler's own spans and logs join the
// notification's trace.
func TracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) {
		if tp != nil {
			o.tracer = tp.Tracer(tracerScope)
		}
	}
}

// tracerScope is the instrumentation scope of the subscriber's spans.
const tracerScope = "github.com/wxpay-events/wxpay-events/wxevents/subscribe"

// Description sets the durable consumer's description, shown by
// `nats consumer info`.
func Description(s string) Option { return func(o *options) { o.description = s } }

// token reports whether s can be one NATS subject token.
func token(s string) bool {
	return s != "" && !strings.ContainsAny(s, ".*> \t\r\n")
}

func appendNew[T comparable](list []T, v T) []T {
	for _, x := range list {
		if x == v {
			return list
		}
	}
	return append(list, v)
}
