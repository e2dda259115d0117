package main

import (
	"context"
	"encoding/json"
	"fmt"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/testenv/pgtest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/pipelinetest"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/wxevents"
)

// serviceEnv makes the test binary run the service itself (main), so that the test can SIGKILL a real
// process without building one.
const serviceEnv = "ORDERS_TEST_RUN_SERVICE"

func TestMain(m *testing.M) {
	if os.Getenv(serviceEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// plan is one order and what happens to it: paid, then refunded in zero, one or two parts.
type plan struct {
	no      string
	amount  int64
	refunds []int64
}

func (p plan) status() string {
	var sum int64
	for _, r := range p.refunds {
		sum += r
	}
	switch {
	case len(p.refunds) == 0:
		return "paid"
	case sum == p.amount:
		return "refunded"
	}
	return "partially_refunded"
}

func plans(n int) []plan {
	out := make([]plan, n)
	for i := range out {
		amount := int64(100 + i)
		p := plan{no: fmt.Sprintf("order-%04d", i), amount: amount}
		switch i % 4 {
		case 1:
			p.refunds = []int64{amount}
		case 2:
			p.refunds = []int64{amount / 2, amount - amount/2}
		case 3:
			p.refunds = []int64{amount / 2}
		}
		out[i] = p
	}
	return out
}

// The whole system: the simulated WeChat Pay posts payments and refunds to the receiver, the consumer
// turns them into events, and the order service applies them to PostgreSQL. The service is killed with
// SIGKILL while it works through the payments, the refunds arrive while it is down, it is restarted, and
// some events are published a second time past JetStream's duplicate window. Every order must end up
// updated exactly once per event: paid once, refunded once per refund, none missed; the one payment for
// an order the service never created is given up and recorded.
func TestEveryOrderUpdatedExactlyOnceAcrossAKill(t *testing.T) {
	const n = 120
	db := pgtest.Start(t)
	p := pipelinetest.StartWith(t, pipelinetest.Options{})
	p.StartConsumer(pipelinetest.ConsumerOptions{})
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, db.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	orders := plans(n)
	for _, o := range orders {
		if _, err := pool.Exec(ctx, `INSERT INTO orders (out_trade_no, amount) VALUES ($1, $2)`, o.no, o.amount); err != nil {
			t.Fatal(err)
		}
	}

	env := map[string]string{
		serviceEnv:        "1",
		"NATS_URL":        p.NATS.URL(),
		"DATABASE_URL":    db.URL(),
		"ORDERS_MCHID":    pipelinetest.MchID,
		"ORDERS_WORKERS":  "4",
		"ORDERS_ACK_WAIT": "2s", // what the killed process held comes back after 2 s
	}
	js := p.JetStream()
	first := pipelinetest.StartProcess(t, "orders", os.Args[0], nil, env)
	waitFor(t, 30*time.Second, "the service subscribed", func() bool {
		return strings.Contains(first.Output(), `"msg":"orders service subscribed"`)
	}, first.Output)

	// Payments, with WeChat's retries of every tenth notification, and one payment for an order that
	// does not exist, posted while the service runs.
	posted := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: 10 * time.Second}
		send := func(eventType string, plaintext []byte, times int) error {
			note, err := p.Platform.Build(eventType, plaintext, wechatsim.Options{})
			if err != nil {
				return err
			}
			for range times {
				code, err := wechatsim.Post(ctx, client, p.URL, note.Body, note.Header)
				if err != nil {
					return err
				}
				if code != http.StatusNoContent {
					return fmt.Errorf("receiver answered %d", code)
				}
			}
			return nil
		}
		for i, o := range orders {
			if err := send("TRANSACTION.SUCCESS", paymentPlaintext(o.no, i, o.amount), 1+btoi(i%10 == 0)); err != nil {
				posted <- err
				return
			}
		}
		posted <- send("TRANSACTION.SUCCESS", paymentPlaintext("order-unknown", 9999, 100), 1)
	}()
	waitFor(t, 30*time.Second, "a third of the payments applied", func() bool { return count(t, pool, "processed_events") >= n/3 }, first.Output)
	first.Kill()
	atKill := count(t, pool, "processed_events")
	var held int
	if c, err := js.Consumer(ctx, wxevents.Stream, "orders"); err == nil {
		if info, err := c.Info(ctx); err == nil {
			held = info.NumAckPending
		}
	}
	if err := <-posted; err != nil {
		t.Fatal(err)
	}
	if atKill >= n {
		t.Fatalf("the service applied all %d payments before it was killed; the kill proves nothing", atKill)
	}

	// Refunds while the service is down.
	refunds := 0
	for i, o := range orders {
		for j, amount := range o.refunds {
			note := p.Build("REFUND.SUCCESS", refundPlaintext(o.no, i, j, o.amount, amount), wechatsim.Options{})
			if code := p.Post(note); code != http.StatusNoContent {
				t.Fatalf("receiver answered %d", code)
			}
			refunds++
		}
	}
	second := pipelinetest.StartProcess(t, "orders restarted", os.Args[0], nil, env)
	output := func() string { return first.Output() + second.Output() }

	// Events published again past the duplicate window (a producer's commit lost, say): same event ids,
	// new stream messages.
	waitFor(t, 30*time.Second, "every event published", func() bool {
		return p.Count(wxevents.Stream) == uint64(n+1+refunds)
	}, output)
	again := 0
	for _, m := range p.Messages(wxevents.Stream) {
		if m.Sequence%7 != 0 {
			continue
		}
		msg := &nats.Msg{Subject: m.Subject, Data: m.Data, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, m.Header.Get(jetstream.MsgIDHeader)+":again")
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		again++
	}

	events := n + refunds
	waitFor(t, 60*time.Second, "every event applied and the consumer settled", func() bool {
		c, err := js.Consumer(ctx, wxevents.Stream, "orders")
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 &&
			count(t, pool, "processed_events") == events && count(t, pool, "rejected_events") == 1
	}, output)

	rows, err := pool.Query(ctx, `SELECT o.out_trade_no, o.status, o.version, o.refunded,
		(SELECT count(*) FROM processed_events e WHERE e.out_trade_no = o.out_trade_no AND e.type = 'payment.succeeded'),
		(SELECT count(*) FROM processed_events e WHERE e.out_trade_no = o.out_trade_no AND e.type = 'refund.succeeded')
		FROM orders o ORDER BY o.out_trade_no`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var no, status string
		var version, refunded, payments, refundEvents int64
		if err := rows.Scan(&no, &status, &version, &refunded, &payments, &refundEvents); err != nil {
			t.Fatal(err)
		}
		got[no] = fmt.Sprintf("%s version %d refunded %d, %d payment and %d refund events", status, version, refunded, payments, refundEvents)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, o := range orders {
		var sum int64
		for _, r := range o.refunds {
			sum += r
		}
		// version counts the changes: one for the payment, one per refund.
		want := fmt.Sprintf("%s version %d refunded %d, 1 payment and %d refund events", o.status(), 1+len(o.refunds), sum, len(o.refunds))
		if got[o.no] != want {
			t.Errorf("%s: %s, want %s", o.no, got[o.no], want)
		}
	}
	var rejected string
	if err := pool.QueryRow(ctx, `SELECT reason FROM rejected_events`).Scan(&rejected); err != nil || !strings.Contains(rejected, errUnknownOrder.Error()) {
		t.Errorf("rejected event: %q, %v", rejected, err)
	}
	if err := second.Stop(10 * time.Second); err != nil {
		t.Errorf("the service did not stop cleanly on SIGTERM: %v\n%s", err, second.Output())
	}
	t.Logf("%d orders, %d events; killed with %d applied and %d delivered but unacknowledged; %d published twice; %d deliveries retried",
		n, events, atKill, held, again, strings.Count(output(), "wxevents handler failed"))
}

// The service builds on the public packages only, as a service outside this module would.
func TestServiceImportsOnlyPublicPackages(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	const module = "github.com/wxpay-events/wxpay-events"
	allowed := map[string]bool{module + "/wxevents": true, module + "/wxevents/subscribe": true}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(path, module) && !allowed[path] {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		err  []string
	}{
		{"defaults", map[string]string{"DATABASE_URL": "postgres://localhost/orders"}, nil},
		{"everything wrong", map[string]string{"ORDERS_WORKERS": "0", "ORDERS_ACK_WAIT": "5ms", "ORDERS_START": "yesterday"},
			[]string{"DATABASE_URL", "ORDERS_WORKERS", "ORDERS_ACK_WAIT", "ORDERS_START"}},
		{"start at a time", map[string]string{"DATABASE_URL": "postgres://localhost/orders", "ORDERS_START": "2024-01-01T00:00:00+08:00"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(func(k string) string { return tt.env[k] })
			if len(tt.err) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, v := range tt.err {
				if !strings.Contains(err.Error(), v) {
					t.Errorf("%v does not name %s", err, v)
				}
			}
		})
	}
	if err := run(context.Background(), func(string) string { return "" }, nil); err == nil || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Errorf("run without configuration: %v", err)
	}
}

func paymentPlaintext(outTradeNo string, i int, amount int64) []byte {
	return mustJSON(map[string]any{
		"appid": "wxd678efh567hg6787", "mchid": pipelinetest.MchID, "out_trade_no": outTradeNo,
		"transaction_id": fmt.Sprintf("4200000001%018d", i), "trade_type": "JSAPI", "trade_state": "SUCCESS",
		"trade_state_desc": "支付成功", "bank_type": "CMC", "success_time": time.Now().Format(time.RFC3339),
		"payer":  map[string]any{"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		"amount": map[string]any{"total": amount, "payer_total": amount, "currency": "CNY", "payer_currency": "CNY"},
	})
}

func refundPlaintext(outTradeNo string, i, j int, total, refund int64) []byte {
	return mustJSON(map[string]any{
		"mchid": pipelinetest.MchID, "out_trade_no": outTradeNo, "transaction_id": fmt.Sprintf("4200000001%018d", i),
		"refund_id": fmt.Sprintf("5030000001%016d%02d", i, j), "out_refund_no": fmt.Sprintf("R-%s-%d", outTradeNo, j),
		"refund_status": "SUCCESS", "success_time": time.Now().Format(time.RFC3339), "user_received_account": "招商银行信用卡0403",
		"amount": map[string]any{"total": total, "refund": refund, "payer_total": total, "payer_refund": refund},
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func count(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds, failing the test with the service's output after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool, output func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			out := output()
			if len(out) > 6000 {
				out = "…" + out[len(out)-6000:]
			}
			t.Fatalf("timed out after %s waiting for %s; service output:\n%s", timeout, what, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
