package subscribe_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/wxevents"
	"github.com/wxpay-events/wxpay-events/wxevents/subscribe"
)

// A service subscribes to the events it handles with typed handlers. The
// event id is the idempotency key: store it in the same transaction as the
// work it caused.
func Example() {
	ctx, stop := context.WithCancel(context.Background()) // signal.NotifyContext in a real main
	defer stop()

	nc, err := nats.Connect(natsURL) // the NATS_URL of wxpay-events
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	s, err := subscribe.New(js, "orders",
		subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
			fmt.Println("order", p.OutTradeNo, "paid", p.Total(), "fen; event", e.ID)
			stop() // this example stops after one event; a service runs until its signal
			return nil
		}),
		subscribe.FromBeginning(), // back-fill from the stream's history when first deployed
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: order order-1001 paid 100 fen; event 00000000-0000-5000-8000-000000000001
}

var errUnknownOrder = errors.New("unknown order")

// A handler returns Permanent for an event that no retry can fix; the
// subscriber terminates it, logs it and hands it to OnGiveUp to be kept.
func ExamplePermanent() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	s, err := subscribe.New(js, "refunds",
		subscribe.On(func(ctx context.Context, e wxevents.Event, r wxevents.RefundSucceeded) error {
			return subscribe.Permanent(fmt.Errorf("refund %s of order %s: %w", r.RefundID, r.OutTradeNo, errUnknownOrder))
		}),
		subscribe.OnGiveUp(func(ctx context.Context, e wxevents.Event, err error) {
			fmt.Println("gave up on", e.ID, "because", errors.Is(err, errUnknownOrder))
			stop()
		}),
		subscribe.FromBeginning(),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: gave up on 00000000-0000-5000-8000-000000000002 because true
}

// OnUnknown takes what the typed handlers cannot: here every event type,
// including one added by a newer producer, reaches the service, which
// handles payments and keeps the rest.
func ExampleOnUnknown() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	seen := 0
	done := func() {
		if seen++; seen == 3 {
			stop()
		}
	}
	s, err := subscribe.New(js, "archive",
		subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
			fmt.Println("payment", p.OutTradeNo)
			done()
			return nil
		}),
		subscribe.OnUnknown(func(ctx context.Context, e wxevents.Event, err error) error {
			switch {
			case errors.Is(err, subscribe.ErrNoHandler):
				fmt.Println("no handler for", e.DomainType())
			case errors.Is(err, wxevents.ErrUnknownType):
				fmt.Println("newer than this module:", e.DomainType())
			}
			done()
			return nil // kept (a real service stores e first), so acknowledged
		}),
		subscribe.AllTypes(),
		subscribe.Workers(1), // in stream order, for this example's output
		subscribe.FromBeginning(),
	)
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Run(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// payment order-1001
	// no handler for refund.succeeded
	// newer than this module: transfer.finished
}

// Lag is the subscriber's backlog, for a service to export as a metric; here
// the example waits until the subscriber has caught up.
func ExampleSubscriber_Lag() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)

	s, err := subscribe.New(js, "reports",
		subscribe.On(func(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error { return nil }),
		subscribe.FromBeginning(),
	)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	<-s.Ready() // the consumer exists: Lag is meaningful from now on
	for {
		lag, err := s.Lag(ctx)
		if err == nil && lag.Pending == 0 && lag.AckPending == 0 {
			fmt.Printf("caught up: %d pending, %d being handled\n", lag.Pending, lag.AckPending)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output: caught up: 0 pending, 0 being handled
}
