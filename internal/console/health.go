package console

import (
	"context"
	"net/http"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/dlq"
	"github.com/wxpay-events/wxpay-events/internal/topology"
)

// StreamHealth is one stream's state.
type StreamHealth struct {
	Name      string    `json:"name"`
	Subjects  []string  `json:"subjects"`          // its own subjects; none for a stream that only sources others
	Sources   []string  `json:"sources,omitempty"` // the streams it copies from
	Messages  uint64    `json:"messages"`
	Bytes     uint64    `json:"bytes"`
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	LastTime  time.Time `json:"last_time,omitzero"`
	Consumers int       `json:"consumers"`
	Error     string    `json:"error,omitempty"`
}

// ConsumerHealth is the durable consumer's state: how far the consumers are behind.
type ConsumerHealth struct {
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`     // stored, not yet delivered
	AckPending  int    `json:"ack_pending"` // delivered, not yet acknowledged
	Redelivered int    `json:"redelivered"` // delivered more than once, not yet acknowledged
	Waiting     int    `json:"waiting"`     // pull requests waiting: consumer processes ready for work
	Error       string `json:"error,omitempty"`
}

// Health is the health view.
type Health struct {
	Now      time.Time       `json:"now"`
	Streams  []StreamHealth  `json:"streams"`
	Consumer ConsumerHealth  `json:"consumer"`
	Programs []ProgramHealth `json:"programs"`
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), dlq.DefaultTimeout)
	defer cancel()
	out := Health{Now: time.Now().UTC(), Consumer: ConsumerHealth{Name: topology.ConsumerName}}
	progs := make(chan []ProgramHealth, 1)
	go func() { progs <- h.scraper.scrape(ctx) }()
	for _, cfg := range topology.StreamConfigs(topology.Options{}) {
		sh := StreamHealth{Name: cfg.Name, Subjects: append([]string{}, cfg.Subjects...)}
		for _, src := range cfg.Sources {
			sh.Sources = append(sh.Sources, src.Name)
		}
		if s, err := h.js.Stream(ctx, cfg.Name); err != nil {
			sh.Error = err.Error()
		} else {
			st := s.CachedInfo().State
			sh.Messages, sh.Bytes, sh.FirstSeq, sh.LastSeq, sh.Consumers = st.Msgs, st.Bytes, st.FirstSeq, st.LastSeq, st.Consumers
			sh.LastTime = st.LastTime.UTC()
		}
		out.Streams = append(out.Streams, sh)
	}
	if c, err := h.js.Consumer(ctx, topology.InboundStream, topology.ConsumerName); err != nil {
		out.Consumer.Error = err.Error()
	} else {
		ci := c.CachedInfo()
		out.Consumer.Pending, out.Consumer.AckPending, out.Consumer.Redelivered, out.Consumer.Waiting =
			ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting
	}
	out.Programs = <-progs
	writeJSON(w, http.StatusOK, out)
}
