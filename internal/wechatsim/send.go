package wechatsim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// RetrySchedule is how long WeChat Pay waits before each new attempt after a notification was not answered
// with a 2xx: 15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h, 16 attempts over about 24 hours.
var RetrySchedule = []time.Duration{
	15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute, 20 * time.Minute,
	30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 60 * time.Minute, 3 * time.Hour, 3 * time.Hour,
	3 * time.Hour, 6 * time.Hour, 6 * time.Hour,
}

// DefaultTimeout is WeChat Pay's deadline for an answer.
const DefaultTimeout = 5 * time.Second

// Attempt is one POST of a notification.
type Attempt struct {
	N       int           // 1 for the first attempt
	Waited  time.Duration // the (scaled) wait before this attempt
	Status  int           // HTTP status; 0 when no answer came
	Err     error         // transport error or timeout
	Latency time.Duration
	// Header is what this attempt sent (each attempt is signed afresh); the body is the notification's.
	Header http.Header
}

// OK reports whether the attempt was answered with a 2xx, which ends WeChat's retries.
func (a Attempt) OK() bool { return a.Err == nil && a.Status >= 200 && a.Status < 300 }

// DeliverOptions say how Deliver sends.
type DeliverOptions struct {
	Client *http.Client // default: a client with DefaultTimeout
	// Retry follows RetrySchedule until an attempt is answered with a 2xx or the schedule ends.
	Retry bool
	// TimeScale divides the schedule's waits (60: a minute becomes a second); 0 or 1 is real time.
	TimeScale float64
	Key       KeyKind       // which key signs
	Probe     bool          // send a signature probe
	Skew      time.Duration // added to the clock when signing; -10*time.Minute makes a stale notification
	// OnAttempt, when set, is called after each attempt.
	OnAttempt func(Attempt)
}

// Deliver POSTs n to url as WeChat Pay does: each attempt signs the body afresh (new timestamp, nonce and
// Request-ID); with Retry, attempts follow RetrySchedule until a 2xx. It returns the attempts made and
// ends early when ctx does.
func (p *Platform) Deliver(ctx context.Context, url string, n Notification, o DeliverOptions) []Attempt {
	client := o.Client
	if client == nil {
		client = &http.Client{Timeout: DefaultTimeout}
	}
	scale := o.TimeScale
	if scale <= 0 {
		scale = 1
	}
	var attempts []Attempt
	var wait time.Duration
	for i := 0; ; i++ {
		if i > 0 {
			wait = time.Duration(float64(RetrySchedule[i-1]) / scale)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return attempts
			case <-t.C:
			}
		}
		a := Attempt{N: i + 1, Waited: wait}
		h, err := p.Sign(n.Body, p.now().Add(o.Skew), o.Key, o.Probe)
		a.Header = h
		if err != nil {
			a.Err = err
		} else {
			start := time.Now()
			a.Status, a.Err = Post(ctx, client, url, n.Body, h)
			a.Latency = time.Since(start)
		}
		attempts = append(attempts, a)
		if o.OnAttempt != nil {
			o.OnAttempt(a)
		}
		if a.OK() || !o.Retry || i >= len(RetrySchedule) || ctx.Err() != nil {
			return attempts
		}
	}
}

// Post sends one notification body with its headers and returns the status code. The answer's body is
// read and discarded so that the connection is reused.
func Post(ctx context.Context, client *http.Client, url string, body []byte, h http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("wechatsim: %w", err)
	}
	req.Header = h.Clone()
	req.Header.Set("User-Agent", "Mozilla/4.0 (wxpay-events simulator)")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, nil
}
