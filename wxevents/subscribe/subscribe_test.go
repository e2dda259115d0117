package subscribe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/wxevents"
	"github.com/wxpay-events/wxpay-events/wxevents/subscribe"
)

const (
	payment = `{"mchid":"M","out_trade_no":"order-1","transaction_id":"4200000001","trade_state":"SUCCESS","amount":{"total":100}}`
	refund  = `{"mchid":"M","out_trade_no":"order-1","refund_id":"5030000001","refund_status":"SUCCESS","amount":{"refund":100}}`
	punish  = `{"sub_mchid":"S2","record_id":"2002018202001010800766"}`
)

// run starts s in the background; the returned function cancels it and returns Run's result.
func run(t *testing.T, s *subscribe.Subscriber) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("the subscriber was not ready within 10s")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Run did not return within 10s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return stop
}

// settled waits until the subscriber has nothing pending and nothing unacknowledged.
func settled(t *testing.T, s *subscribe.Subscriber) {
	t.Helper()
	eventually(t, 10*time.Second, "the subscriber to settle", func() bool {
		lag, err := s.Lag(context.Background())
		return err == nil && lag.Pending == 0 && lag.AckPending == 0
	})
}

// recorder collects what handlers saw.
type recorder struct {
	mu   sync.Mutex
	seen map[string]string // event id → what
	at   map[string][]time.Time
}

func newRecorder() *recorder {
	return &recorder{seen: map[string]string{}, at: map[string][]time.Time{}}
}

func (r *recorder) add(id, what string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[id] = what
	r.at[id] = append(r.at[id], time.Now())
	return len(r.at[id])
}

func (r *recorder) calls(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.at[id])
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.seen))
}

// Typed handlers receive exactly the events their filter selects, decoded, with the event id.
func TestTypedHandlersAndFilters(t *testing.T) {
	js := startJetStream(t)
	ids := map[string]string{
		"pay M1":    mustPublish(t, js, wxevents.TypePaymentSucceeded, "M1", "", payment),
		"refund M1": mustPublish(t, js, wxevents.TypeRefundSucceeded, "M1", "S1", refund),
		"punish M1": mustPublish(t, js, wxevents.TypeViolationPunished, "M1", "S2", punish),
		"pay M2":    mustPublish(t, js, wxevents.TypePaymentSucceeded, "M2", "", payment),
		"refund M2": mustPublish(t, js, wxevents.TypeRefundSucceeded, "M2", "", refund),
	}
	tests := []struct {
		name    string
		opts    []subscribe.Option
		filters []string
		want    []string
	}{
		{"the handlers' types", nil, []string{"wechatpay.events.payment.succeeded.*.*", "wechatpay.events.refund.succeeded.*.*"},
			[]string{"pay M1", "pay M2", "refund M1", "refund M2"}},
		{"one merchant", []subscribe.Option{subscribe.Merchants("M1")},
			[]string{"wechatpay.events.payment.succeeded.M1.*", "wechatpay.events.refund.succeeded.M1.*"},
			[]string{"pay M1", "refund M1"}},
		{"one sub-merchant", []subscribe.Option{subscribe.Merchants("M1"), subscribe.SubMerchants("S1")},
			[]string{"wechatpay.events.payment.succeeded.M1.S1", "wechatpay.events.refund.succeeded.M1.S1"},
			[]string{"refund M1"}},
		{"direct merchants only", []subscribe.Option{subscribe.SubMerchants(wxevents.NoSubMerchant)},
			[]string{"wechatpay.events.payment.succeeded.*._", "wechatpay.events.refund.succeeded.*._"},
			[]string{"pay M1", "pay M2", "refund M2"}},
		{"some types", []subscribe.Option{subscribe.Types(wxevents.TypeRefundSucceeded)},
			[]string{"wechatpay.events.refund.succeeded.*.*"},
			[]string{"refund M1", "refund M2"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			opts := append([]subscribe.Option{
				subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
					if p.OutTradeNo != "order-1" || p.Total() != 100 || e.DomainType() != wxevents.TypePaymentSucceeded {
						return subscribe.Permanent(fmt.Errorf("payment decoded as %+v", p))
					}
					rec.add(e.ID, "pay "+e.MchID())
					return nil
				}),
				subscribe.On(func(ctx context.Context, e wxevents.Event, r wxevents.RefundSucceeded) error {
					if r.RefundID != "5030000001" || r.Amount.Refund != 100 {
						return subscribe.Permanent(fmt.Errorf("refund decoded as %+v", r))
					}
					rec.add(e.ID, "refund "+e.MchID())
					return nil
				}),
				subscribe.FromBeginning(),
			}, tt.opts...)
			s, err := subscribe.New(js, fmt.Sprintf("filters-%d", i), opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.FilterSubjects(); !slices.Equal(got, tt.filters) {
				t.Errorf("FilterSubjects() = %q, want %q", got, tt.filters)
			}
			run(t, s)
			settled(t, s)
			var want []string
			for _, w := range tt.want {
				want = append(want, ids[w])
			}
			slices.Sort(want)
			if got := rec.ids(); !slices.Equal(got, want) {
				t.Fatalf("delivered %v (%v), want %v", got, rec.seen, tt.want)
			}
			for _, id := range want {
				if rec.calls(id) != 1 {
					t.Errorf("event %s handled %d times", id, rec.calls(id))
				}
			}
		})
	}
}

// A failing or panicking handler gets the event again after a growing delay, until it succeeds; the panic is
// logged with the event id.
func TestFailuresAreDeliveredAgainWithBackoff(t *testing.T) {
	const lowest = 150 * time.Millisecond
	errDown := errors.New("database down")
	tests := []struct {
		name  string
		fail  func(call int) error // the handler's behaviour on its n-th call
		calls int
		log   string
	}{
		{"error twice", func(call int) error {
			if call <= 2 {
				return errDown
			}
			return nil
		}, 3, "wxevents handler failed; the event will be delivered again"},
		{"panic once", func(call int) error {
			if call == 1 {
				panic("nil map")
			}
			return nil
		}, 2, "wxevents handler panicked; the event will be delivered again"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js := startJetStream(t)
			id := mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", payment)
			rec := newRecorder()
			var logs syncBuffer
			s, err := subscribe.New(js, fmt.Sprintf("retry-%d", i),
				subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
					return tt.fail(rec.add(e.ID, "pay"))
				}),
				subscribe.Backoff(lowest, time.Second),
				subscribe.Logger(slog.New(slog.NewJSONHandler(&logs, nil))),
				subscribe.FromBeginning(),
			)
			if err != nil {
				t.Fatal(err)
			}
			run(t, s)
			eventually(t, 10*time.Second, "the handler to succeed", func() bool { return rec.calls(id) == tt.calls })
			settled(t, s)
			if n := rec.calls(id); n != tt.calls {
				t.Fatalf("handler called %d times, want %d", n, tt.calls)
			}
			at := rec.at[id]
			for n := 1; n < len(at); n++ {
				want := lowest << (n - 1)
				if gap := at[n].Sub(at[n-1]); gap < want {
					t.Errorf("delivery %d came %s after the one before, want at least %s", n+1, gap, want)
				}
			}
			line := logs.line(t, tt.log)
			if line["event_id"] != id || line["type"] != "com.wechatpay.payment.succeeded" {
				t.Errorf("log line %v lacks the event id %s", line, id)
			}
		})
	}
}

// An event whose handler says Permanent, or fails on every delivery up to MaxDeliver, is terminated, logged
// and handed to OnGiveUp, and never delivered again.
func TestGivingUp(t *testing.T) {
	errUnknownOrder := errors.New("unknown order")
	errDown := errors.New("database down")
	tests := []struct {
		name    string
		handler func() error
		opts    []subscribe.Option
		calls   int
		wantErr []error
	}{
		{"permanent", func() error { return subscribe.Permanent(errUnknownOrder) }, nil, 1,
			[]error{subscribe.ErrPermanent, errUnknownOrder}},
		{"max deliver", func() error { return errDown }, []subscribe.Option{subscribe.MaxDeliver(3)}, 3,
			[]error{errDown}},
		{"panics up to max deliver", func() error { panic("boom") }, []subscribe.Option{subscribe.MaxDeliver(2)}, 2,
			[]error{subscribe.ErrPanic}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js := startJetStream(t)
			id := mustPublish(t, js, wxevents.TypeRefundSucceeded, "M", "", refund)
			rec := newRecorder()
			var logs syncBuffer
			gaveUp := make(chan error, 10)
			opts := append([]subscribe.Option{
				subscribe.On(func(ctx context.Context, e wxevents.Event, r wxevents.RefundSucceeded) error {
					rec.add(e.ID, "refund")
					return tt.handler()
				}),
				subscribe.OnGiveUp(func(ctx context.Context, e wxevents.Event, err error) {
					if e.ID != id {
						err = fmt.Errorf("gave up on %q, want %q", e.ID, id)
					}
					gaveUp <- err
				}),
				subscribe.Backoff(10*time.Millisecond, 10*time.Millisecond),
				subscribe.Logger(slog.New(slog.NewJSONHandler(&logs, nil))),
				subscribe.FromBeginning(),
			}, tt.opts...)
			s, err := subscribe.New(js, fmt.Sprintf("giveup-%d", i), opts...)
			if err != nil {
				t.Fatal(err)
			}
			run(t, s)
			var got error
			select {
			case got = <-gaveUp:
			case <-time.After(10 * time.Second):
				t.Fatal("OnGiveUp was not called")
			}
			for _, want := range tt.wantErr {
				if !errors.Is(got, want) {
					t.Errorf("OnGiveUp got %v, want it to wrap %v", got, want)
				}
			}
			// Terminated: nothing is pending or awaiting redelivery, so the handler is done with it.
			settled(t, s)
			if n := rec.calls(id); n != tt.calls {
				t.Errorf("handler called %d times, want %d", n, tt.calls)
			}
			if len(gaveUp) != 0 {
				t.Errorf("OnGiveUp called again: %v", <-gaveUp)
			}
			if line := logs.line(t, "wxevents event given up"); line["event_id"] != id || line["level"] != "ERROR" {
				t.Errorf("given-up log line %v", line)
			}
		})
	}
}

// What no typed handler can take — not a CloudEvent, a type from a newer producer, data that does not fit
// its type — reaches OnUnknown; without OnUnknown it is delivered again and finally given up, never
// acknowledged silently.
func TestUndecodableEvents(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	// Not a CloudEvent at all, on a payment subject.
	if _, err := js.Publish(ctx, wxevents.Subject(wxevents.TypePaymentSucceeded, "M", ""), []byte("not json"),
		jetstream.WithMsgID("garbage-1")); err != nil {
		t.Fatal(err)
	}
	newer := mustPublish(t, js, "transfer.finished", "M", "", `{"out_batch_no":"b1"}`)
	mismatch := mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", `{"transaction_id":"4200000002","amount":{"total":"100"}}`)

	t.Run("OnUnknown", func(t *testing.T) {
		var mu sync.Mutex
		got := map[string]error{}
		s, err := subscribe.New(js, "unknown",
			subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
				return subscribe.Permanent(fmt.Errorf("the handler got %s", e.ID))
			}),
			subscribe.OnUnknown(func(ctx context.Context, e wxevents.Event, err error) error {
				mu.Lock()
				defer mu.Unlock()
				got[e.ID] = err
				return nil
			}),
			subscribe.AllTypes(),
			subscribe.FromBeginning(),
		)
		if err != nil {
			t.Fatal(err)
		}
		run(t, s)
		settled(t, s)
		mu.Lock()
		defer mu.Unlock()
		want := map[string]error{"garbage-1": wxevents.ErrMalformed, newer: wxevents.ErrUnknownType, mismatch: wxevents.ErrDataMismatch}
		for id, w := range want {
			if !errors.Is(got[id], w) {
				t.Errorf("OnUnknown for %s got %v, want %v", id, got[id], w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("OnUnknown got %v", got)
		}
	})

	t.Run("without OnUnknown", func(t *testing.T) {
		gaveUp := make(chan error, 10)
		s, err := subscribe.New(js, "strict",
			subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
				return fmt.Errorf("the handler got %s", e.ID)
			}),
			subscribe.OnGiveUp(func(ctx context.Context, e wxevents.Event, err error) { gaveUp <- err }),
			subscribe.MaxDeliver(2),
			subscribe.Backoff(10*time.Millisecond, 10*time.Millisecond),
			subscribe.Logger(slog.New(slog.DiscardHandler)),
			subscribe.FromBeginning(),
		)
		if err != nil {
			t.Fatal(err)
		}
		run(t, s)
		settled(t, s)
		if len(gaveUp) != 2 {
			t.Fatalf("%d events given up, want the garbage and the mismatch", len(gaveUp))
		}
		for range 2 {
			if err := <-gaveUp; !errors.Is(err, wxevents.ErrMalformed) && !errors.Is(err, wxevents.ErrDataMismatch) {
				t.Errorf("gave up with %v", err)
			}
		}
	})
}

// On cancel, Run stops fetching and waits for the handler in flight, whose event is then acknowledged.
func TestRunDrainsOnCancel(t *testing.T) {
	js := startJetStream(t)
	id := mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", payment)
	started, release := make(chan struct{}), make(chan struct{})
	rec := newRecorder()
	s, err := subscribe.New(js, "drain",
		subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
			if rec.add(e.ID, "pay") == 1 {
				close(started)
				<-release
			}
			return ctx.Err() // the handler's context outlives the cancel
		}),
		subscribe.FromBeginning(),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a handler in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil after a cancel", err)
	}
	settled(t, s) // acknowledged, not waiting for redelivery
	if n := rec.calls(id); n != 1 {
		t.Errorf("handled %d times", n)
	}
}

// N workers handle N events at once.
func TestWorkersRunConcurrently(t *testing.T) {
	const workers = 3
	js := startJetStream(t)
	for range workers {
		mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", payment)
	}
	var mu sync.Mutex
	inFlight, peak := 0, 0
	all := make(chan struct{})
	s, err := subscribe.New(js, "workers",
		subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
			mu.Lock()
			inFlight++
			peak = max(peak, inFlight)
			if inFlight == workers {
				close(all)
			}
			mu.Unlock()
			select {
			case <-all:
			case <-ctx.Done():
			}
			mu.Lock()
			inFlight--
			mu.Unlock()
			return nil
		}),
		subscribe.Workers(workers),
		subscribe.FromBeginning(),
	)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("at most %d handlers ran at once, want %d", peak, workers)
	}
	settled(t, s)
}

// The start position applies when the consumer is created: new events only, from a time, or everything.
func TestStartPositions(t *testing.T) {
	tests := []struct {
		name string
		opt  subscribe.Option
		want []string // of before, after, later
	}{
		{"new only (default)", nil, []string{"later"}},
		{"from a time", nil, []string{"after", "later"}}, // FromTime(between) set below
		{"from the beginning", subscribe.FromBeginning(), []string{"before", "after", "later"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			js := startJetStream(t)
			ids := map[string]string{"before": mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", payment)}
			between := time.Now()
			ids["after"] = mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", payment)
			rec := newRecorder()
			opts := []subscribe.Option{subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
				rec.add(e.ID, "pay")
				return nil
			})}
			switch {
			case tt.opt != nil:
				opts = append(opts, tt.opt)
			case i == 1:
				opts = append(opts, subscribe.FromTime(between))
			}
			s, err := subscribe.New(js, "start", opts...)
			if err != nil {
				t.Fatal(err)
			}
			run(t, s) // returns once the consumer exists: its start position is fixed
			ids["later"] = mustPublish(t, js, wxevents.TypePaymentSucceeded, "M", "", payment)
			eventually(t, 10*time.Second, "the later event", func() bool { return rec.calls(ids["later"]) == 1 })
			settled(t, s)
			var want []string
			for _, w := range tt.want {
				want = append(want, ids[w])
			}
			slices.Sort(want)
			if got := rec.ids(); !slices.Equal(got, want) {
				t.Errorf("delivered %v, want %v (%v)", got, want, tt.want)
			}
		})
	}
}

// Running again with other options updates the consumer in place and keeps where it started; JetStream
// would refuse to change the start position.
func TestConsumerIsCreatedOrUpdated(t *testing.T) {
	js := startJetStream(t)
	ctx := context.Background()
	pay := subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error { return nil })
	refunds := subscribe.On(func(ctx context.Context, e wxevents.Event, r wxevents.RefundSucceeded) error { return nil })
	since := time.Now().Add(-time.Hour).Truncate(time.Second)

	// runOnce runs a subscriber until the consumer's configuration satisfies ready, and returns it.
	runOnce := func(ready func(jetstream.ConsumerConfig) bool, opts ...subscribe.Option) jetstream.ConsumerConfig {
		t.Helper()
		s, err := subscribe.New(js, "orders", opts...)
		if err != nil {
			t.Fatal(err)
		}
		stop := run(t, s)
		var cfg jetstream.ConsumerConfig
		eventually(t, 10*time.Second, "the consumer", func() bool {
			c, err := js.Consumer(ctx, wxevents.Stream, "orders")
			if err != nil {
				return false
			}
			cfg = c.CachedInfo().Config
			return ready(cfg)
		})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	first := runOnce(func(jetstream.ConsumerConfig) bool { return true },
		pay, subscribe.FromTime(since), subscribe.Workers(2), subscribe.MaxDeliver(5))
	if first.DeliverPolicy != jetstream.DeliverByStartTimePolicy || !first.OptStartTime.Equal(since) ||
		first.FilterSubject != "wechatpay.events.payment.succeeded.*.*" || first.MaxDeliver != 5 ||
		first.AckPolicy != jetstream.AckExplicitPolicy {
		t.Fatalf("created %+v", first)
	}
	second := runOnce(func(c jetstream.ConsumerConfig) bool { return c.AckWait == time.Minute },
		pay, refunds, subscribe.FromNew(), subscribe.AckWait(time.Minute))
	if second.DeliverPolicy != first.DeliverPolicy || !second.OptStartTime.Equal(since) {
		t.Errorf("start position changed to %v %v", second.DeliverPolicy, second.OptStartTime)
	}
	if want := []string{"wechatpay.events.payment.succeeded.*.*", "wechatpay.events.refund.succeeded.*.*"}; !slices.Equal(second.FilterSubjects, want) ||
		second.AckWait != time.Minute || second.MaxDeliver != subscribe.DefaultMaxDeliver {
		t.Errorf("updated %+v", second)
	}
}

// Run fails loudly when there is no events stream to subscribe to.
func TestRunWithoutStream(t *testing.T) {
	js := startJetStream(t)
	if err := js.DeleteStream(context.Background(), wxevents.Stream); err != nil {
		t.Fatal(err)
	}
	s, err := subscribe.New(js, "orders", subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Run(ctx); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Run = %v, want ErrStreamNotFound", err)
	}
}

func TestNewRejects(t *testing.T) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	pay := subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error { return nil })
	unknown := subscribe.OnUnknown(func(ctx context.Context, e wxevents.Event, err error) error { return nil })
	tests := []struct {
		name string
		svc  string
		opts []subscribe.Option
		want error
		says []string
	}{
		{"no handler", "orders", nil, subscribe.ErrInvalidOption, []string{"no handler"}},
		{"bad name and workers", "orders.v2", []subscribe.Option{pay, subscribe.Workers(0)}, subscribe.ErrInvalidOption,
			[]string{`name "orders.v2"`, "Workers(0)"}},
		{"second handler", "orders", []subscribe.Option{pay, pay}, subscribe.ErrInvalidOption, []string{"second handler for payment.succeeded"}},
		{"nil handler", "orders", []subscribe.Option{subscribe.On[wxevents.RefundClosed](nil)}, subscribe.ErrInvalidOption, []string{"nil handler"}},
		{"wildcard merchant", "orders", []subscribe.Option{pay, subscribe.Merchants("*"), subscribe.SubMerchants("a.b")}, subscribe.ErrInvalidOption,
			[]string{`Merchants: "*"`, `SubMerchants: "a.b"`}},
		{"unknown type", "orders", []subscribe.Option{pay, subscribe.Types("payment.later")}, subscribe.ErrInvalidOption, []string{"payment.later"}},
		{"bad backoff and ack wait", "orders", []subscribe.Option{pay, subscribe.Backoff(time.Second, time.Millisecond), subscribe.AckWait(time.Millisecond)},
			subscribe.ErrInvalidOption, []string{"Backoff", "AckWait"}},
		{"type without handler", "orders", []subscribe.Option{pay, subscribe.Types(wxevents.TypePaymentSucceeded, wxevents.TypeRefundClosed)},
			subscribe.ErrNoHandler, []string{"refund.closed"}},
		{"all types without OnUnknown", "orders", []subscribe.Option{pay, subscribe.AllTypes()}, subscribe.ErrNoHandler, []string{"OnUnknown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := subscribe.New(js, tt.svc, tt.opts...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("New err = %v, want %v", err, tt.want)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
	if _, err := subscribe.New(js, "orders", pay, unknown, subscribe.Types(wxevents.TypeRefundClosed)); err != nil {
		t.Errorf("a type without handler but with OnUnknown: %v", err)
	}
}

func TestPermanent(t *testing.T) {
	base := errors.New("unknown order")
	err := subscribe.Permanent(base)
	if !errors.Is(err, subscribe.ErrPermanent) || !errors.Is(err, base) {
		t.Errorf("Permanent(err) = %v", err)
	}
	if subscribe.Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}

// syncBuffer is a log sink handlers write to concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// line returns the first JSON log line whose msg is msg, failing the test if there is none.
func (s *syncBuffer) line(t *testing.T, msg string) map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no log line %q in:\n%s", msg, s.b.String())
	return nil
}
