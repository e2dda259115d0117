// Package certs downloads a merchant's WeChat Pay platform certificates and keeps them current, so that
// notifications signed with a rotated certificate keep verifying. It replaces wechatpay-go's
// CertificateDownloaderMgr, which hard-codes the mainland host, cannot be pointed at a test server, swallows
// refresh errors and never refreshes when an unknown serial shows up.
//
// One Downloader serves one account. It implements wechatpay-go's core.CertificateGetter (for verify.KeySet)
// and verify.Refresher (an on-demand refresh when a notification names a serial it does not know).
package certs

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/credentials"
	"github.com/wechatpay-apiv3/wechatpay-go/core/auth/signers"
)

// Defaults of Options.
const (
	// DefaultInterval is the periodic refresh, as in wechatpay-go (which advises between 1 h and 2 days).
	DefaultInterval = 24 * time.Hour
	// DefaultMinRefreshInterval spaces on-demand refreshes: an unknown serial is cheap to send, so without
	// it anyone could make the receiver hammer WeChat Pay's API.
	DefaultMinRefreshInterval = time.Minute
	// DefaultDownloadTimeout bounds one download, request and answer.
	DefaultDownloadTimeout = 10 * time.Second
	// retryAfterFailure is how soon the periodic loop tries again after a failed download, instead of
	// waiting a whole interval with certificates that may be going stale.
	retryAfterFailure = 5 * time.Minute
	// maxResponseBytes caps the answer read; a real one holds a few certificates of ~2 KB each.
	maxResponseBytes = 1 << 20
)

// Sentinel errors. Error texts name the account, the URL, the HTTP status, WeChat's error code and
// certificate serials; never key material or the response body.
var (
	ErrInvalidOptions    = errors.New("certs: invalid options")
	ErrAPI               = errors.New("certs: WeChat Pay answered with an error")
	ErrMalformedResponse = errors.New("certs: malformed certificate list")
	ErrDecrypt           = errors.New("certs: cannot decrypt a downloaded certificate")
	ErrResponseSignature = errors.New("certs: certificate list signature does not verify")
	ErrRateLimited       = errors.New("certs: refresh rate-limited")
	ErrStopped           = errors.New("certs: downloader stopped")
)

// Triggers of a download, as log fields and metric labels.
const (
	triggerStart    = "start"
	triggerPeriodic = "periodic"
	triggerOnDemand = "on_demand"
)

// Options configure one account's Downloader.
type Options struct {
	MchID string
	// PrivateKey and CertSerial are the merchant's API key (apiclient_key.pem) and its certificate serial:
	// WeChat Pay authenticates the download request by them.
	PrivateKey *rsa.PrivateKey
	CertSerial string
	// APIv3Key decrypts the downloaded certificates; exactly 32 bytes.
	APIv3Key []byte
	// Region picks the API path and default host; empty means mainland.
	Region Region
	// BaseURL overrides the region's host (scheme://host[:port]), for a test server or an egress proxy.
	BaseURL string
	// Interval between periodic refreshes; 0 means DefaultInterval.
	Interval time.Duration
	// MinRefreshInterval is the least time between any download and an on-demand one; 0 means
	// DefaultMinRefreshInterval.
	MinRefreshInterval time.Duration
	// DownloadTimeout bounds one download; 0 means DefaultDownloadTimeout.
	DownloadTimeout time.Duration
	// HTTPClient sends the requests; nil means a client of its own.
	HTTPClient *http.Client
	// Clock replaces time.Now for the rate limit, the answer's timestamp check and certificate expiry.
	Clock func() time.Time
	// Log receives one line per download; failures of background downloads are only reported here.
	Log zerolog.Logger
	// Metrics, when set, counts downloads and rate-limited refreshes.
	Metrics *Metrics
}

// Stats count a Downloader's work since it started.
type Stats struct {
	Downloads   uint64 // successful downloads, the first one included
	Failures    uint64 // failed downloads (each also logged, or returned by Start)
	RateLimited uint64 // on-demand refreshes refused by the rate limit
}

// Downloader keeps one account's platform certificates: every certificate of the last successful download
// plus those previously downloaded that have not expired, so that the certificate WeChat Pay is rotating
// away from keeps verifying during the overlap even if a listing no longer carries it. It is safe for
// concurrent use.
type Downloader struct {
	o      Options
	url    string
	client *http.Client
	cred   *credentials.WechatPayCredentials
	log    zerolog.Logger

	snap atomic.Pointer[snapshot]

	mu          sync.Mutex // guards the fields below
	lastAttempt time.Time
	inflight    *call
	stopped     bool

	life   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	downloads, failures, rateLimited atomic.Uint64
}

// call is one download that several refreshes may wait for.
type call struct {
	done chan struct{}
	err  error
}

// snapshot is an immutable set of certificates, swapped whole so that lookups take no lock.
type snapshot struct {
	certs  map[string]*x509.Certificate
	newest string
}

func newSnapshot(m map[string]*x509.Certificate) *snapshot {
	s := &snapshot{certs: m}
	var newest *x509.Certificate
	for serial, c := range m {
		if newest == nil || c.NotBefore.After(newest.NotBefore) || (c.NotBefore.Equal(newest.NotBefore) && serial > s.newest) {
			newest, s.newest = c, serial
		}
	}
	return s
}

// Start checks o, downloads the certificates once (failing when that fails: a receiver that cannot verify
// its merchant's notifications should not start) and refreshes them every o.Interval until Stop.
func Start(ctx context.Context, o Options) (*Downloader, error) {
	d, err := newDownloader(o)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.lastAttempt = d.now()
	d.mu.Unlock()
	if err := d.run(ctx, triggerStart); err != nil {
		d.cancel()
		return nil, err
	}
	d.wg.Add(1)
	go d.loop()
	return d, nil
}

func newDownloader(o Options) (*Downloader, error) {
	var problems []string
	if o.MchID == "" {
		problems = append(problems, "no merchant id")
	}
	if o.PrivateKey == nil {
		problems = append(problems, "no merchant private key")
	}
	if strings.TrimSpace(o.CertSerial) == "" {
		problems = append(problems, "no merchant certificate serial")
	}
	if len(o.APIv3Key) != 32 {
		problems = append(problems, fmt.Sprintf("the APIv3 key holds %d bytes, AEAD_AES_256_GCM needs 32", len(o.APIv3Key)))
	}
	region, err := ParseRegion(string(o.Region))
	if err != nil {
		problems = append(problems, err.Error())
	}
	base := region.BaseURL()
	if o.BaseURL != "" {
		if err := CheckBaseURL(o.BaseURL); err != nil {
			problems = append(problems, err.Error())
		}
		base = strings.TrimRight(o.BaseURL, "/")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w for merchant %s: %s", ErrInvalidOptions, o.MchID, strings.Join(problems, "; "))
	}
	o.Region = region
	o.APIv3Key = append([]byte(nil), o.APIv3Key...)
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.MinRefreshInterval <= 0 {
		o.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if o.DownloadTimeout <= 0 {
		o.DownloadTimeout = DefaultDownloadTimeout
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	client := o.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: o.DownloadTimeout}
	}
	d := &Downloader{
		o:      o,
		url:    base + region.Path(),
		client: client,
		cred: &credentials.WechatPayCredentials{Signer: &signers.SHA256WithRSASigner{
			MchID: o.MchID, CertificateSerialNo: strings.TrimSpace(o.CertSerial), PrivateKey: o.PrivateKey,
		}},
		log: o.Log.With().Str("component", "platform_certificates").Str("mchid", o.MchID).Logger(),
	}
	d.snap.Store(newSnapshot(map[string]*x509.Certificate{}))
	d.life, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// URL is the certificate API this downloader calls.
func (d *Downloader) URL() string { return d.url }

// Stats reports the downloader's counters.
func (d *Downloader) Stats() Stats {
	return Stats{Downloads: d.downloads.Load(), Failures: d.failures.Load(), RateLimited: d.rateLimited.Load()}
}

// Stop ends the periodic refresh and waits for a download in flight to give up. Later refreshes fail with
// ErrStopped; the certificates stay readable.
func (d *Downloader) Stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// Refresh downloads the certificates now, unless any download started less than MinRefreshInterval ago
// (then it fails at once with ErrRateLimited, sending nothing). Concurrent callers share one download. The
// download runs on the downloader's own time, so a caller that stops waiting (ctx) does not waste it: its
// result still lands for the next request.
func (d *Downloader) Refresh(ctx context.Context) error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return ErrStopped
	}
	c := d.inflight
	if c == nil {
		if since := d.now().Sub(d.lastAttempt); since < d.o.MinRefreshInterval {
			d.mu.Unlock()
			d.rateLimited.Add(1)
			d.o.Metrics.rateLimited(d.o.MchID)
			d.log.Debug().Dur("since_last_download", since).Msg("platform certificate refresh rate-limited")
			return fmt.Errorf("%w: merchant %s's last download began %s ago; at most one refresh per %s",
				ErrRateLimited, d.o.MchID, since.Round(time.Second), d.o.MinRefreshInterval)
		}
		c = d.beginLocked(triggerOnDemand)
	}
	d.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("certs: merchant %s: waiting for the certificate download: %w", d.o.MchID, ctx.Err())
	}
}

// beginLocked starts a download in the background; d.mu is held and the downloader is not stopped.
func (d *Downloader) beginLocked(trigger string) *call {
	c := &call{done: make(chan struct{})}
	d.inflight = c
	d.lastAttempt = d.now()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		c.err = d.run(d.life, trigger)
		d.mu.Lock()
		d.inflight = nil
		d.mu.Unlock()
		close(c.done)
	}()
	return c
}

// loop refreshes every Interval, sooner after a failure.
func (d *Downloader) loop() {
	defer d.wg.Done()
	wait := d.o.Interval
	for {
		t := time.NewTimer(wait)
		select {
		case <-d.life.Done():
			t.Stop()
			return
		case <-t.C:
		}
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			return
		}
		c := d.inflight
		if c == nil {
			c = d.beginLocked(triggerPeriodic)
		}
		d.mu.Unlock()
		select {
		case <-d.life.Done():
			return
		case <-c.done:
		}
		wait = d.o.Interval
		if c.err != nil {
			wait = min(d.o.Interval, retryAfterFailure)
		}
	}
}

// run downloads once and installs the result. A failure is counted and, for background downloads, logged;
// the initial download's failure is returned to the caller instead, which stops the program with it.
func (d *Downloader) run(ctx context.Context, trigger string) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.DownloadTimeout)
	defer cancel()
	start := time.Now()
	got, err := d.download(ctx)
	if errors.Is(err, errProbe) {
		// WeChat Pay signs a few answers wrong on purpose (WECHATPAY/SIGNTEST/); a second request gets
		// a real signature. Still one request per trigger in the normal case.
		got, err = d.download(ctx)
	}
	if err != nil {
		d.failures.Add(1)
		d.o.Metrics.download(d.o.MchID, trigger, false)
		if trigger != triggerStart {
			d.log.Error().Str("trigger", trigger).Str("url", d.url).Err(err).Msg("platform certificate download failed")
		}
		return err
	}
	added, kept, dropped := d.install(got)
	d.downloads.Add(1)
	d.o.Metrics.download(d.o.MchID, trigger, true)
	d.o.Metrics.installed(d.o.MchID, len(d.snap.Load().certs), d.now())
	// A periodic download that changes nothing is routine; everything else is worth a line at info
	// (on-demand ones are rate-limited, so they cannot flood the log).
	lvl := zerolog.InfoLevel
	if trigger == triggerPeriodic && len(added)+len(dropped) == 0 {
		lvl = zerolog.DebugLevel
	}
	d.log.WithLevel(lvl).Str("trigger", trigger).Str("url", d.url).
		Strs("serials", sortedKeys(got)).Strs("added", added).Strs("kept_unlisted", kept).Strs("dropped_expired", dropped).
		Dur("latency", time.Since(start)).Msg("platform certificates downloaded")
	return nil
}

// install makes the downloaded certificates current, keeping earlier ones that the listing no longer
// carries until they expire: WeChat Pay overlaps an outgoing and an incoming certificate, and a
// notification signed with the outgoing one must not fail because of the order in which things happened.
func (d *Downloader) install(got map[string]*x509.Certificate) (added, kept, dropped []string) {
	now := d.now()
	old := d.snap.Load().certs
	next := make(map[string]*x509.Certificate, len(got)+len(old))
	for s, c := range got {
		next[s] = c
		if _, ok := old[s]; !ok {
			added = append(added, s)
		}
	}
	for s, c := range old {
		if _, ok := next[s]; ok {
			continue
		}
		if now.Before(c.NotAfter) {
			next[s] = c
			kept = append(kept, s)
		} else {
			dropped = append(dropped, s)
		}
	}
	d.snap.Store(newSnapshot(next))
	sort.Strings(added)
	sort.Strings(kept)
	sort.Strings(dropped)
	return added, kept, dropped
}

// Get returns the certificate with this serial (upper-case hex, as in Wechatpay-Serial).
func (d *Downloader) Get(_ context.Context, serial string) (*x509.Certificate, bool) {
	c, ok := d.snap.Load().certs[serial]
	return c, ok
}

// GetAll returns a copy of every certificate held, by serial.
func (d *Downloader) GetAll(_ context.Context) map[string]*x509.Certificate {
	m := d.snap.Load().certs
	out := make(map[string]*x509.Certificate, len(m))
	for s, c := range m {
		out[s] = c
	}
	return out
}

// GetNewestSerial returns the serial of the certificate that became valid last.
func (d *Downloader) GetNewestSerial(_ context.Context) string { return d.snap.Load().newest }

func (d *Downloader) now() time.Time { return d.o.Clock() }

func sortedKeys(m map[string]*x509.Certificate) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
