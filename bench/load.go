package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

// wechatDeadline is how long WeChat Pay waits for an answer before it counts the delivery as failed.
const wechatDeadline = 5 * time.Second

// requestTimeout bounds one request on the wire, as a client's timeout would; WeChat Pay gives up after 5 s,
// the generator waits longer so that late answers are measured, not cut off.
const requestTimeout = 30 * time.Second

// conn is one keep-alive HTTP/1.1 connection of the load generator. Like wrk, it writes pre-built request
// bytes and reads just enough of the answer to know its status and where it ends, so that the generator,
// which shares the machine with the systems it measures, costs a fraction of net/http's client.
type conn struct {
	addr string
	c    net.Conn
	r    *bufio.Reader
}

func newConn(addr string) *conn { return &conn{addr: addr} }

// post sends one notification and returns the answer's status code (0 and the error on a transport
// failure, after which the connection is closed and the next post dials again).
func (c *conn) post(n *note) (int, error) {
	if c.c == nil {
		nc, err := (&net.Dialer{Timeout: 5 * time.Second}).Dial("tcp", c.addr)
		if err != nil {
			return 0, err
		}
		c.c = nc
		if c.r == nil {
			c.r = bufio.NewReaderSize(nc, 4096)
		} else {
			c.r.Reset(nc)
		}
	}
	code, keep, err := c.roundTrip(n.raw)
	if err != nil || !keep {
		c.close()
	}
	return code, err
}

func (c *conn) close() {
	if c.c != nil {
		_ = c.c.Close()
		c.c = nil
	}
}

func (c *conn) roundTrip(raw []byte) (code int, keep bool, err error) {
	if err := c.c.SetDeadline(time.Now().Add(requestTimeout)); err != nil {
		return 0, false, err
	}
	if _, err := c.c.Write(raw); err != nil {
		return 0, false, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return 0, false, err
	}
	// "HTTP/1.1 204 No Content\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, keep := int64(-1), false, true
	for {
		h, err := c.r.ReadSlice('\n')
		if err != nil {
			return code, false, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		k, v, _ := bytes.Cut(h, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(v), 10, 64); err != nil {
				return code, false, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			keep = !bytes.EqualFold(v, []byte("close"))
		}
	}
	switch {
	case code == http.StatusNoContent || code == http.StatusNotModified || code < 200:
	case chunked:
		err = c.skipChunked()
	case length >= 0:
		_, err = c.r.Discard(int(length))
	default: // the body runs to the end of the connection
		_, err = io.Copy(io.Discard, c.r)
		keep = false
	}
	return code, keep && err == nil, err
}

func (c *conn) skipChunked() error {
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.SplitN(line, []byte(";"), 2)[0])), 16, 64)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			for { // trailers, then the blank line
				t, err := c.r.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := c.r.Discard(int(size) + 2); err != nil {
			return err
		}
	}
}

// hostPort is the address of a system's URL ("http://127.0.0.1:1234/notify/…" → "127.0.0.1:1234").
func hostPort(url string) string {
	rest := strings.TrimPrefix(url, "http://")
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// cpuMeter reads the CPU time of this process and of its helper processes: redis-server (pids) and a
// nats-server child (nats), whose share it can also read alone; a pid of 0 is none.
type cpuMeter struct {
	pids []int
	nats int
}

func (m cpuMeter) now() time.Duration {
	t := selfCPU() + m.natsNow()
	for _, p := range m.pids {
		if p != 0 {
			t += procCPU(p)
		}
	}
	return t
}

// natsNow is the nats-server child's CPU time so far; 0 when there is none.
func (m cpuMeter) natsNow() time.Duration {
	if m.nats == 0 {
		return 0
	}
	return procCPU(m.nats)
}

// closedResult is a saturation run: C clients, each sending its next request when the previous answer
// arrives.
type closedResult struct {
	Conc     int
	Requests int // measured (after warm-up)
	Elapsed  time.Duration
	CPU      time.Duration
	NATSCPU  time.Duration // of CPU, the nats-server child's
	Non204   int
	Errors   int
	FirstErr string
}

func (r closedResult) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

func (r closedResult) CPUPerReq() time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Requests)
}

// closedLoop sends total requests (notes[i % len(notes)]) from conc clients. The first warm answers
// are not measured; the clock and the CPU meter start when the warm-th answer arrives.
func closedLoop(url string, notes []note, total, warm, conc int, cpu cpuMeter) closedResult {
	var next, done atomic.Int64
	var t0, t1 time.Time
	var cpu0, cpu1, nats0, nats1 time.Duration
	var mu sync.Mutex
	var non204, errs int
	var firstErr string
	if warm >= total {
		warm = 0
	}
	mark := func(n int64) {
		switch {
		case n == int64(warm) && warm > 0:
			t0, cpu0, nats0 = time.Now(), cpu.now(), cpu.natsNow()
		case n == int64(total):
			t1, cpu1, nats1 = time.Now(), cpu.now(), cpu.natsNow()
		}
	}
	if warm == 0 {
		t0, cpu0, nats0 = time.Now(), cpu.now(), cpu.natsNow()
	}
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newConn(hostPort(url))
			defer c.close()
			for {
				i := int(next.Add(1)) - 1
				if i >= total {
					return
				}
				code, err := c.post(&notes[i%len(notes)])
				if code != http.StatusNoContent {
					mu.Lock()
					if err != nil {
						errs++
						if firstErr == "" {
							firstErr = err.Error()
						}
					} else {
						non204++
						if firstErr == "" {
							firstErr = fmt.Sprintf("status %d", code)
						}
					}
					mu.Unlock()
				}
				mark(done.Add(1))
			}
		}()
	}
	wg.Wait()
	return closedResult{Conc: conc, Requests: total - warm, Elapsed: t1.Sub(t0), CPU: cpu1 - cpu0, NATSCPU: nats1 - nats0, Non204: non204, Errors: errs, FirstErr: firstErr}
}

// openResult is a fixed-rate run: requests are sent on a schedule that does not wait for answers, and
// each latency is measured from the request's scheduled time, so a stall shows in full (no coordinated
// omission).
type openResult struct {
	Rate     float64 // offered, requests per second
	Requests int
	Elapsed  time.Duration // first scheduled send to last answer
	CPU      time.Duration
	Lat      []time.Duration // by request index; from scheduled send to answer (or to the error)
	Sched    []time.Time     // scheduled send times
	Non204   int
	Errors   int
	FirstErr string
	MaxLag   time.Duration // the generator's worst lateness in sending, part of the latencies
}

func (r openResult) CPUPerReq() time.Duration {
	if r.Requests == 0 {
		return 0
	}
	return r.CPU / time.Duration(r.Requests)
}

// openLoop offers rate requests per second for dur, notes[i % len(notes)] as request i. A dispatcher
// hands each request at its scheduled time to a pool of workers, each with its own connection; a request
// that finds every worker busy waits in the queue, and its latency, measured from its scheduled time,
// includes that wait. Workers are long-lived so that the generator costs about as much per request as
// the closed loop's clients do.
//
// Before the clock starts each worker opens its connection and sends one of warm on it (not measured),
// so that the run does not begin with hundreds of connections being accepted at once.
func openLoop(url string, notes, warm []note, rate float64, dur time.Duration, workers int, cpu cpuMeter) openResult {
	n := max(1, int(rate*dur.Seconds()))
	res := openResult{Rate: rate, Requests: n, Lat: make([]time.Duration, n), Sched: make([]time.Time, n)}
	var mu sync.Mutex
	var wg, ready sync.WaitGroup
	queue := make(chan int, n)
	for w := range min(workers, n) {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			c := newConn(hostPort(url))
			defer c.close()
			if len(warm) > 0 {
				_, _ = c.post(&warm[w%len(warm)]) // a failure only means the first measured request dials
			}
			ready.Done()
			for i := range queue {
				code, err := c.post(&notes[i%len(notes)])
				res.Lat[i] = time.Since(res.Sched[i])
				if code == http.StatusNoContent {
					continue
				}
				mu.Lock()
				if err != nil {
					res.Errors++
					if res.FirstErr == "" {
						res.FirstErr = err.Error()
					}
				} else {
					res.Non204++
					if res.FirstErr == "" {
						res.FirstErr = fmt.Sprintf("status %d", code)
					}
				}
				mu.Unlock()
			}
		}()
	}
	ready.Wait()
	cpu0 := cpu.now()
	start := time.Now().Add(5 * time.Millisecond)
	for i := range n {
		at := start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
		res.Sched[i] = at
		// Sleep only when ahead by more than a timer's slack; requests due meanwhile go out together.
		if d := time.Until(at); d > 200*time.Microsecond {
			time.Sleep(d)
		} else if -d > res.MaxLag {
			res.MaxLag = -d
		}
		queue <- i
	}
	close(queue)
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.CPU = cpu.now() - cpu0
	return res
}

// stats are latency percentiles.
type stats struct {
	N                   int
	P50, P99, P999, Max time.Duration
	Over5s              int
}

func summarize(lat []time.Duration) stats {
	if len(lat) == 0 {
		return stats{}
	}
	p := wechatsim.LatencyPercentiles(lat)
	st := stats{N: len(lat), P50: p.P50, P99: p.P99, P999: p.P999, Max: p.Max}
	for _, d := range lat {
		if d > wechatDeadline {
			st.Over5s++
		}
	}
	return st
}

func (s stats) String() string {
	return fmt.Sprintf("p50=%s p99=%s p999=%s max=%s over5s=%d (n=%d)", ms(s.P50), ms(s.P99), ms(s.P999), ms(s.Max), s.Over5s, s.N)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }
