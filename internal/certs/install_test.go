package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"
)

func testCert(t *testing.T, serial int64, notBefore, notAfter time.Time) (string, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%X", c.SerialNumber.Bytes()), c
}

// A download replaces nothing it does not have to: certificates the listing no longer carries stay until
// they expire, expired ones go, and the newest is the one that became valid last.
func TestInstallKeepsUnexpiredDropsExpired(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	d := &Downloader{o: Options{Clock: func() time.Time { return now }}}
	oldValid, c1 := testCert(t, 0x11, now.AddDate(-4, 0, 0), now.AddDate(1, 0, 0))
	oldExpired, c2 := testCert(t, 0x22, now.AddDate(-6, 0, 0), now.Add(-time.Second))
	listed, c3 := testCert(t, 0x33, now.AddDate(-1, 0, 0), now.AddDate(4, 0, 0))
	incoming, c4 := testCert(t, 0x44, now.Add(-time.Hour), now.AddDate(5, 0, 0))
	d.snap.Store(newSnapshot(map[string]*x509.Certificate{oldValid: c1, oldExpired: c2, listed: c3}))

	added, kept, dropped := d.install(map[string]*x509.Certificate{listed: c3, incoming: c4})
	if !slices.Equal(added, []string{incoming}) || !slices.Equal(kept, []string{oldValid}) || !slices.Equal(dropped, []string{oldExpired}) {
		t.Fatalf("added %v kept %v dropped %v", added, kept, dropped)
	}
	got := d.snap.Load()
	if len(got.certs) != 3 || got.certs[oldExpired] != nil || got.newest != incoming {
		t.Fatalf("held %d certificates, newest %s", len(got.certs), got.newest)
	}
}
