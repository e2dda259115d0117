package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/wxevents"
	"github.com/wxpay-events/wxpay-events/wxevents/subscribe"
)

// config is the service's configuration, from the environment.
type config struct {
	natsURL   string        // NATS_URL
	natsCreds string        // NATS_CREDS
	dbURL     string        // DATABASE_URL
	name      string        // ORDERS_NAME: the durable consumer
	mchid     string        // ORDERS_MCHID: only this merchant's events, when set
	workers   int           // ORDERS_WORKERS
	ackWait   time.Duration // ORDERS_ACK_WAIT
	start     subscribe.Option
}

// loadConfig reads the configuration and reports every problem at once,
// each naming its variable.
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		natsURL:   getenv("NATS_URL"),
		natsCreds: getenv("NATS_CREDS"),
		dbURL:     getenv("DATABASE_URL"),
		name:      getenv("ORDERS_NAME"),
		mchid:     getenv("ORDERS_MCHID"),
		workers:   subscribe.DefaultWorkers,
		ackWait:   subscribe.DefaultAckWait,
		start:     subscribe.FromNew(),
	}
	if c.natsURL == "" {
		c.natsURL = nats.DefaultURL
	}
	if c.name == "" {
		c.name = "orders"
	}
	var problems []string
	if c.dbURL == "" {
		problems = append(problems, "DATABASE_URL: required (postgres://user@host/db)")
	}
	if v := getenv("ORDERS_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			problems = append(problems, fmt.Sprintf("ORDERS_WORKERS=%q: want a whole number of at least 1", v))
		}
		c.workers = n
	}
	if v := getenv("ORDERS_ACK_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			problems = append(problems, fmt.Sprintf("ORDERS_ACK_WAIT=%q: want a duration of at least 1s", v))
		}
		c.ackWait = d
	}
	switch v := getenv("ORDERS_START"); v {
	case "", "new":
	case "beginning":
		c.start = subscribe.FromBeginning()
	default:
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			problems = append(problems, fmt.Sprintf("ORDERS_START=%q: want new, beginning or an RFC 3339 time", v))
		}
		c.start = subscribe.FromTime(t)
	}
	if len(problems) > 0 {
		return config{}, fmt.Errorf("configuration: %s", strings.Join(problems, "; "))
	}
	return c, nil
}

// run is the whole service: it connects to PostgreSQL and NATS, creates its
// tables, and handles events until ctx ends.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil))

	db, err := pgxpool.New(ctx, cfg.dbURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	defer db.Close()
	if err := migrate(ctx, db); err != nil {
		return err
	}

	opts := []nats.Option{nats.Name("orders"), nats.MaxReconnects(-1)}
	if cfg.natsCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.natsCreds))
	}
	nc, err := nats.Connect(cfg.natsURL, opts...)
	if err != nil {
		return fmt.Errorf("NATS_URL: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}

	svc := &service{db: db, log: log}
	subOpts := []subscribe.Option{
		subscribe.On(svc.paid),
		subscribe.On(svc.refunded),
		subscribe.OnGiveUp(svc.rejected),
		subscribe.Workers(cfg.workers),
		subscribe.AckWait(cfg.ackWait),
		subscribe.Logger(log),
		cfg.start,
	}
	if cfg.mchid != "" {
		subOpts = append(subOpts, subscribe.Merchants(cfg.mchid))
	}
	s, err := subscribe.New(js, cfg.name, subOpts...)
	if err != nil {
		return err
	}
	go func() {
		select {
		case <-s.Ready():
			log.Info("orders service subscribed", "consumer", cfg.name, "filter", s.FilterSubjects(), "workers", cfg.workers)
		case <-ctx.Done():
		}
	}()
	if err := s.Run(ctx); err != nil {
		return err
	}
	log.Info("orders service stopped")
	return nil
}

// schema is the service's tables. processed_events is the idempotency
// record: one row per event applied, written in the same transaction as the
// change, keyed by the event id, which is the same for every delivery of
// one business fact. rejected_events keeps the events given up, for a person
// to look at.
const schema = `
CREATE TABLE IF NOT EXISTS orders (
	out_trade_no   text PRIMARY KEY,
	amount         bigint NOT NULL CHECK (amount > 0),
	status         text NOT NULL DEFAULT 'created',
	transaction_id text,
	paid_at        timestamptz,
	refunded       bigint NOT NULL DEFAULT 0,
	version        integer NOT NULL DEFAULT 0,
	updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS processed_events (
	event_id     text PRIMARY KEY,
	type         text NOT NULL,
	out_trade_no text NOT NULL,
	processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rejected_events (
	event_id    text PRIMARY KEY,
	type        text NOT NULL,
	reason      text NOT NULL,
	rejected_at timestamptz NOT NULL DEFAULT now()
);`

// migrate creates the tables. Replicas starting together take turns: a
// transaction-scoped advisory lock serialises them, since concurrent
// CREATE TABLE IF NOT EXISTS can still collide.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('orders schema'))`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schema)
		return err
	})
	if err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	return nil
}

var (
	// errUnknownOrder: an event for an order this service never created.
	errUnknownOrder = errors.New("unknown order")
	// errAmountMismatch: a payment of another amount than the order's.
	errAmountMismatch = errors.New("amount does not match the order")
	// errOverRefund: refunds adding up to more than was paid.
	errOverRefund = errors.New("refunds exceed the order's amount")
	// errNotPaidYet: a refund arrived before the payment it refunds; events
	// are not ordered across redeliveries, so it is retried until the
	// payment has been applied.
	errNotPaidYet = errors.New("refund of an order not paid yet")
)

// service applies payment and refund events to orders.
type service struct {
	db  *pgxpool.Pool
	log *slog.Logger
}

// paid marks the order paid. A second payment.succeeded for an order
// already paid (by another transaction) changes nothing.
func (s *service) paid(ctx context.Context, e wxevents.Event, p wxevents.PaymentSucceeded) error {
	return s.apply(ctx, e, p.OutTradeNo, func(tx pgx.Tx, o order) error {
		if p.Total() != o.amount {
			return subscribe.Permanent(fmt.Errorf("order %s: paid %d, %w of %d", p.OutTradeNo, p.Total(), errAmountMismatch, o.amount))
		}
		if o.status != "created" {
			return nil
		}
		_, err := tx.Exec(ctx, `UPDATE orders SET status = 'paid', transaction_id = $2, paid_at = $3,
			version = version + 1, updated_at = now() WHERE out_trade_no = $1`,
			p.OutTradeNo, p.TransactionNo(), p.SuccessTime)
		return err
	})
}

// refunded adds the refund to the order; the order is refunded once the
// refunds reach its amount, partially_refunded before.
func (s *service) refunded(ctx context.Context, e wxevents.Event, r wxevents.RefundSucceeded) error {
	var refund int64
	if r.Amount != nil {
		refund = r.Amount.Refund
	}
	return s.apply(ctx, e, r.OutTradeNo, func(tx pgx.Tx, o order) error {
		switch {
		case o.status == "created":
			return fmt.Errorf("order %s: %w", r.OutTradeNo, errNotPaidYet)
		case o.refunded+refund > o.amount:
			return subscribe.Permanent(fmt.Errorf("order %s: %w", r.OutTradeNo, errOverRefund))
		}
		_, err := tx.Exec(ctx, `UPDATE orders SET refunded = refunded + $2,
			status = CASE WHEN refunded + $2 >= amount THEN 'refunded' ELSE 'partially_refunded' END,
			version = version + 1, updated_at = now() WHERE out_trade_no = $1`,
			r.OutTradeNo, refund)
		return err
	})
}

// order is the part of an order the handlers decide on.
type order struct {
	status           string
	amount, refunded int64
}

// apply runs change on the order out_trade_no in one transaction with the
// record of e, unless e was applied before: then it does nothing, which is
// what makes a redelivered event harmless. The order's row is locked, so
// concurrent events for one order take turns.
func (s *service) apply(ctx context.Context, e wxevents.Event, outTradeNo string, change func(pgx.Tx, order) error) error {
	return pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO processed_events (event_id, type, out_trade_no) VALUES ($1, $2, $3)
			ON CONFLICT (event_id) DO NOTHING`, e.ID, e.DomainType(), outTradeNo)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // applied by an earlier delivery
		}
		var o order
		err = tx.QueryRow(ctx, `SELECT status, amount, refunded FROM orders WHERE out_trade_no = $1 FOR UPDATE`,
			outTradeNo).Scan(&o.status, &o.amount, &o.refunded)
		if errors.Is(err, pgx.ErrNoRows) {
			return subscribe.Permanent(fmt.Errorf("order %q: %w", outTradeNo, errUnknownOrder))
		}
		if err != nil {
			return err
		}
		return change(tx, o)
	})
}

// rejected keeps an event the subscriber gave up on. It is recorded once,
// however often it is given up.
func (s *service) rejected(ctx context.Context, e wxevents.Event, reason error) {
	_, err := s.db.Exec(ctx, `INSERT INTO rejected_events (event_id, type, reason) VALUES ($1, $2, $3)
		ON CONFLICT (event_id) DO NOTHING`, e.ID, e.DomainType(), reason.Error())
	if err != nil {
		s.log.ErrorContext(ctx, "record rejected event", "event_id", e.ID, "error", err)
	}
}
