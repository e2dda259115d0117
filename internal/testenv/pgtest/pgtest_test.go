package pgtest_test

import (
	"context"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/wxpay-events/wxpay-events/internal/testenv/pgtest"
)

// A test gets a working database of its own: tables can be created and used, and without PG_URL or
// DATABASE_URL it is a private server, not whatever PostgreSQL the machine runs on 5432.
func TestStart(t *testing.T) {
	db := pgtest.Start(t)
	u, err := url.Parse(db.URL())
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(pgtest.EnvURL) == "" && os.Getenv(pgtest.EnvDatabaseURL) == "" && u.Port() == "5432" {
		t.Fatalf("private server on the standard port: %s", db.URL())
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `CREATE TABLE t (id text PRIMARY KEY); INSERT INTO t VALUES ('a'), ('b')`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("count = %d, %v", n, err)
	}
}
