package main

import (
	"bufio"
	"bytes"
	"fmt"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim/samples"
)

// note is one signed, encrypted notification as the bytes of its HTTP request, ready to write on a
// connection. One flat byte slice per notification keeps a pool of 100,000 of them out of the way of the
// garbage collector, which would otherwise scan their header maps in the middle of the measurements.
type note struct {
	id     string
	fact   int // business fact (transaction_id) it carries
	raw    []byte
	bodyAt int
}

func (n *note) body() []byte { return n.raw[n.bodyAt:] }

// request parses the note back into an *http.Request as a server receives it, for handler benchmarks.
func (n *note) request() (*http.Request, error) {
	return http.ReadRequest(bufio.NewReader(bytes.NewReader(n.raw)))
}

// rawRequest is POST /notify/{mchid} with WeChat Pay's headers and the body, over HTTP/1.1 keep-alive.
func rawRequest(h http.Header, body []byte) ([]byte, int) {
	var b bytes.Buffer
	b.Grow(len(body) + 1024)
	b.WriteString("POST /notify/" + mchid + " HTTP/1.1\r\nHost: 127.0.0.1\r\n")
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	at := b.Len()
	b.Write(body)
	return b.Bytes(), at
}

// factory builds TRANSACTION.SUCCESS notifications, each about its own payment unless told otherwise.
// RSA signing is WeChat Pay's cost, not the receiver's: notifications are built before a clock starts.
type factory struct {
	p         *wechatsim.Platform
	template  []byte
	nextFact  atomic.Int64
	workers   int
	eventType string
}

// sampleTransactionID is the transaction_id of the TRANSACTION.SUCCESS sample, replaced per fact.
const sampleTransactionID = "1217752501201407033233368018"

func newFactory(p *wechatsim.Platform) (*factory, error) {
	plain, ok := samples.All()["TRANSACTION.SUCCESS"]
	if !ok || !bytes.Contains(plain, []byte(sampleTransactionID)) {
		return nil, fmt.Errorf("the TRANSACTION.SUCCESS sample no longer holds transaction_id %s", sampleTransactionID)
	}
	return &factory{p: p, template: plain, workers: runtime.GOMAXPROCS(0), eventType: "TRANSACTION.SUCCESS"}, nil
}

// plaintext is the sample with transaction_id replaced by a 28-digit id derived from fact.
func (f *factory) plaintext(fact int) []byte {
	return bytes.Replace(f.template, []byte(sampleTransactionID), fmt.Appendf(nil, "4200%024d", fact), 1)
}

// fresh builds n notifications, each a new business fact, stamped with the current time.
func (f *factory) fresh(n int) ([]note, error) {
	first := int(f.nextFact.Add(int64(n))) - n
	return f.build(n, func(i int) int { return first + i })
}

// withRetries builds n notifications of which every dupEvery-th repeats the business fact of an earlier
// one under a new notification id, as WeChat Pay's retries do once JetStream's duplicate window is over:
// only Redis can tell them apart. It returns the notifications and the number of distinct facts.
func (f *factory) withRetries(n, dupEvery int) ([]note, int, error) {
	first := int(f.nextFact.Load())
	distinct := 0
	facts := make([]int, n)
	for i := range facts {
		if dupEvery > 0 && i > 0 && i%dupEvery == 0 {
			facts[i] = facts[i/2] // an earlier fact, not always the previous one
			continue
		}
		facts[i] = first + distinct
		distinct++
	}
	f.nextFact.Add(int64(distinct))
	notes, err := f.build(n, func(i int) int { return facts[i] })
	return notes, distinct, err
}

func (f *factory) build(n int, factOf func(int) int) ([]note, error) {
	out := make([]note, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for range f.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fact := factOf(i)
				nt, err := f.p.Build(f.eventType, f.plaintext(fact), wechatsim.Options{Key: wechatsim.SignWithPublicKeyID})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				raw, at := rawRequest(nt.Header, nt.Body)
				out[i] = note{id: nt.ID, fact: fact, raw: raw, bodyAt: at}
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}
