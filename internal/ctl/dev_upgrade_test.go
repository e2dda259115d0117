package ctl_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxpay-events/wxpay-events/internal/testenv/natstest"
	"github.com/wxpay-events/wxpay-events/internal/testenv/wait"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// A dev directory an older version made holds WECHATPAY_INBOUND with Limits retention and no archive.
// dev owns that store, so it brings it to this version's layout before the programs start, as `wxpayctl
// streams apply` does in production: the inbound stream moves to Interest retention, the history is
// copied to WECHATPAY_ARCHIVE, and the log says what changed.
func TestDevUpgradesAnOldStore(t *testing.T) {
	dir := t.TempDir()
	const stored = 3
	oldStore(t, filepath.Join(dir, "jetstream"), stored)

	d := startDev(t, dir, nil)
	d.waitOutput(t, 60*time.Second, "export NATS_URL=")
	natsURL := natsURLRe.FindStringSubmatch(d.stdout.String())[1]
	if log := d.stderr.String(); !strings.Contains(log, "update stream "+topology.InboundStream+": retention limits → interest") {
		t.Fatalf("the log does not say the inbound stream changed:\n%s", log)
	}

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	info := func(name string) *jetstream.StreamInfo {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		i, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	if in := info(topology.InboundStream); in.Config.Retention != jetstream.InterestPolicy || in.Config.MaxAge != 0 {
		t.Fatalf("inbound after dev started: retention %s, max age %s", in.Config.Retention, in.Config.MaxAge)
	}
	// The old notifications are not WeChat's (the consumer dead-letters them); what counts is that the
	// history reached the archive and left nothing behind in the inbound stream once processed.
	wait.For(t, "the old history in the archive and the inbound stream empty", func() bool {
		return info(topology.ArchiveStream).State.Msgs == stored && info(topology.InboundStream).State.Msgs == 0
	}, wait.Options{Timeout: 30 * time.Second})
	d.stop(t)
}

// oldStore writes, in storeDir, the layout of the release before WECHATPAY_ARCHIVE: WECHATPAY_INBOUND
// with Limits retention for 7 days, holding n notifications.
func oldStore(t *testing.T, storeDir string, n int) {
	t.Helper()
	srv := natstest.StartIn(t, storeDir)
	defer srv.Stop()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	old := topology.InboundConfig(topology.Options{})
	old.Retention, old.MaxAge = jetstream.LimitsPolicy, 7*24*time.Hour
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := js.Publish(ctx, topology.InboundSubject("1900000100", "transaction.success"), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
}
