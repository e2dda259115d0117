package wechatsim

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"
)

// LoadOptions describe an open-loop load run.
type LoadOptions struct {
	URL         string
	Rate        float64       // requests per second, scheduled at fixed intervals
	Concurrency int           // requests in flight at most; default 8
	Duration    time.Duration // how long requests are scheduled
	Timeout     time.Duration // per request; default DefaultTimeout
	Client      *http.Client  // default: one sized for Concurrency
	// Next makes the notification of one request, signed and ready to send. It is called from several
	// goroutines, ahead of the schedule, so that signing does not count as the receiver's latency.
	Next func() (Notification, error)
}

// LoadResult is what a load run measured. Latencies are measured from each request's scheduled time, not
// from when a free connection sent it: a slow receiver delays the requests queued behind a slow one, and
// that delay is what WeChat Pay would see (no coordinated omission).
type LoadResult struct {
	Scheduled int // requests the schedule called for
	Sent      int // requests sent
	Late      int // scheduled but never sent: no connection was free before the run's end plus Timeout
	Errors    int // sent, but no answer (timeout, connection refused, …)
	// Starved counts requests that had to wait for Next to sign them: the simulator, not the receiver,
	// was the limit for those, and their latency includes that wait.
	Starved  int
	ByStatus map[int]int   // answers by HTTP status
	Elapsed  time.Duration // from the first scheduled request to the last answer
	// Throughput is answers (any status) per second of Elapsed.
	Throughput float64
	Latency    Percentiles // over every sent request, answered or not
}

// Percentiles of request latency.
type Percentiles struct {
	P50, P90, P99, P999, Max, Mean time.Duration
}

// errLoadOptions reports unusable LoadOptions.
var errLoadOptions = errors.New("wechatsim: load needs a positive Rate and Duration, a URL and Next")

// Load runs an open-loop load test: request i is due at start + i/Rate whatever happened to the previous
// ones, is sent by the first of Concurrency workers that is free, and its latency counts from when it was
// due. The run schedules requests for Duration and lasts at most Duration + Timeout (plus the last
// answers' transfer). It ends early when ctx does.
func Load(ctx context.Context, o LoadOptions) (LoadResult, error) {
	if o.Rate <= 0 || o.Duration <= 0 || o.URL == "" || o.Next == nil {
		return LoadResult{}, errLoadOptions
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	client := o.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = o.Concurrency
		tr.MaxConnsPerHost = o.Concurrency
		client = &http.Client{Transport: tr}
		defer tr.CloseIdleConnections()
	}
	interval := time.Duration(float64(time.Second) / o.Rate)
	scheduled := int(o.Duration / interval)
	if scheduled == 0 {
		scheduled = 1
	}

	// Signed notifications, made ahead of the schedule by a few builders; the first ones before it starts.
	ready := make(chan Notification, 2*o.Concurrency)
	for range cap(ready) {
		n, err := o.Next()
		if err != nil {
			return LoadResult{}, err
		}
		ready <- n
	}

	start := time.Now()
	lastDue := start.Add(time.Duration(scheduled-1) * interval)
	runCtx, cancel := context.WithDeadline(ctx, lastDue.Add(o.Timeout+time.Second))
	defer cancel()
	buildCtx, stopBuilders := context.WithCancel(runCtx)
	var builders sync.WaitGroup
	var buildErr error
	var buildErrOnce sync.Once
	for range min(runtime.GOMAXPROCS(0), o.Concurrency, 4) {
		builders.Add(1)
		go func() {
			defer builders.Done()
			for {
				n, err := o.Next()
				if err != nil {
					buildErrOnce.Do(func() { buildErr = err })
					cancel() // nothing more can be sent: end the run
					return
				}
				select {
				case ready <- n:
				case <-buildCtx.Done():
					return
				}
			}
		}()
	}

	due := make(chan time.Time, min(scheduled, 1<<16))
	go func() {
		defer close(due)
		t := time.NewTimer(0)
		defer t.Stop()
		for i := range scheduled {
			at := start.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-runCtx.Done():
					return
				}
			}
			// When the queue is full, this waits, but the request keeps its due time.
			select {
			case due <- at:
			case <-runCtx.Done():
				return
			}
		}
	}()

	var mu sync.Mutex
	res := LoadResult{Scheduled: scheduled, ByStatus: map[int]int{}}
	latencies := make([]time.Duration, 0, scheduled)
	var lastAnswer time.Time
	var workers sync.WaitGroup
	for range o.Concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for at := range due {
				var n Notification
				select {
				case n = <-ready:
				default:
					// The builders are behind: this request waits for its signature, and its latency
					// includes the wait. Count it, so that the report can say the client was the limit.
					mu.Lock()
					res.Starved++
					mu.Unlock()
					select {
					case n = <-ready:
					case <-buildCtx.Done():
						continue // counted as late below
					}
				}
				if runCtx.Err() != nil {
					continue
				}
				rctx, rcancel := context.WithTimeout(runCtx, o.Timeout)
				status, err := Post(rctx, client, o.URL, n.Body, n.Header)
				rcancel()
				done := time.Now()
				mu.Lock()
				res.Sent++
				latencies = append(latencies, done.Sub(at))
				if err != nil {
					res.Errors++
				} else {
					res.ByStatus[status]++
				}
				if done.After(lastAnswer) {
					lastAnswer = done
				}
				mu.Unlock()
			}
		}()
	}
	workers.Wait()
	stopBuilders()
	builders.Wait()
	if buildErr != nil {
		return LoadResult{}, buildErr
	}

	res.Late = res.Scheduled - res.Sent
	if !lastAnswer.IsZero() {
		res.Elapsed = lastAnswer.Sub(start)
	}
	if res.Elapsed > 0 {
		res.Throughput = float64(res.Sent-res.Errors) / res.Elapsed.Seconds()
	}
	res.Latency = LatencyPercentiles(latencies)
	return res, ctx.Err()
}

// LatencyPercentiles summarises latencies by the nearest-rank method (d is not modified): the one
// percentile computation of the load tool and the benchmark suite.
func LatencyPercentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	d = slices.Clone(d)
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.999999999) - 1
		return d[min(max(i, 0), len(d)-1)]
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return Percentiles{P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), P999: rank(0.999), Max: d[len(d)-1], Mean: sum / time.Duration(len(d))}
}
