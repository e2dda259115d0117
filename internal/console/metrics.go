package console

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ErrBadAdminURL means an admin URL given for the health view is not an http(s) URL of a host.
var ErrBadAdminURL = errors.New("console: bad admin URL")

// Scraping.
const (
	scrapeTimeout  = 2 * time.Second
	maxScrapeBytes = 4 << 20
	// rateWindow is how far back a rate looks: the oldest sample within it is the baseline.
	rateWindow = time.Minute
	// minRateSpan is the shortest span a rate is computed over; two pages polling a moment apart would
	// otherwise divide noise by nearly nothing.
	minRateSpan = time.Second
)

// NormalizeAdminURL checks an admin server's base URL ("127.0.0.1:9090" means http://127.0.0.1:9090) and
// returns it without a trailing slash; "" stays "".
func NormalizeAdminURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", nil
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return "", fmt.Errorf("%w: %q: want http://HOST:PORT of a receiver's or consumer's ADMIN_ADDR", ErrBadAdminURL, raw)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// counterGroup is one table of the health view: a counter summed by some of its labels.
type counterGroup struct {
	key    string   // the JSON name
	title  string   // what the page calls it
	metric string   // the Prometheus counter
	by     []string // labels the rows are made of
}

// The programs' metrics the health view shows. Their names are the receiver's and consumer's (see
// README, "Operating it"); the API test reads them from a real receiver and consumer.
var (
	receiverGroups = []counterGroup{
		{key: "answers", title: "answers by code", metric: "wxpay_receiver_requests_total", by: []string{"code", "reason"}},
	}
	consumerGroups = []counterGroup{
		{key: "processed", title: "notifications by outcome", metric: "wxpay_consumer_processed_total", by: []string{"outcome"}},
		{key: "dead_lettered", title: "dead-lettered by reason", metric: "wxpay_consumer_dlq_total", by: []string{"reason"}},
	}
)

// program is a receiver or consumer whose /metrics the health view reads.
type program struct {
	name   string
	url    string
	groups []counterGroup
}

// ProgramHealth is what the health view shows of one program.
type ProgramHealth struct {
	Name      string        `json:"name"`
	URL       string        `json:"url,omitempty"`
	Up        bool          `json:"up"`
	Error     string        `json:"error,omitempty"`
	ScrapedAt time.Time     `json:"scraped_at,omitzero"`
	Groups    []GroupHealth `json:"groups,omitempty"`
}

// GroupHealth is one counter table: its rows, their total, and their rates per second over the last
// minute (nil until two scrapes a second or more apart, or after a counter reset).
type GroupHealth struct {
	Key   string      `json:"key"`
	Title string      `json:"title"`
	Total float64     `json:"total"`
	Rate  *float64    `json:"rate"`
	Rows  []RowHealth `json:"rows"`
}

// RowHealth is one row of a counter table.
type RowHealth struct {
	Label string   `json:"label"`
	Value float64  `json:"value"`
	Rate  *float64 `json:"rate"`
}

// sample is one scrape's values by series ("group\x00label").
type sample struct {
	at     time.Time
	values map[string]float64
}

// scraper reads the programs' /metrics and remembers recent scrapes for rates.
type scraper struct {
	client   *http.Client
	programs []program
	mu       sync.Mutex
	history  map[string][]sample // by program name, oldest first
}

func newScraper(programs []program) *scraper {
	return &scraper{client: &http.Client{Timeout: scrapeTimeout}, programs: programs, history: map[string][]sample{}}
}

// scrape reads every configured program at once.
func (s *scraper) scrape(ctx context.Context) []ProgramHealth {
	out := make([]ProgramHealth, len(s.programs))
	var wg sync.WaitGroup
	for i, p := range s.programs {
		if p.url == "" {
			out[i] = ProgramHealth{Name: p.name, Error: "not configured (--" + p.name + "-admin)"}
			continue
		}
		wg.Go(func() { out[i] = s.scrapeOne(ctx, p) })
	}
	wg.Wait()
	return out
}

func (s *scraper) scrapeOne(ctx context.Context, p program) ProgramHealth {
	ph := ProgramHealth{Name: p.name, URL: p.url}
	families, err := s.fetch(ctx, p.url+"/metrics")
	if err != nil {
		ph.Error = err.Error()
		return ph
	}
	now := time.Now()
	ph.Up, ph.ScrapedAt = true, now.UTC()
	cur := sample{at: now, values: map[string]float64{}}
	for _, g := range p.groups {
		gh := GroupHealth{Key: g.key, Title: g.title, Rows: []RowHealth{}}
		for label, v := range sumBy(families[g.metric], g.by) {
			gh.Rows = append(gh.Rows, RowHealth{Label: label, Value: v})
			gh.Total += v
			cur.values[g.key+"\x00"+label] = v
		}
		cur.values[g.key] = gh.Total
		slices.SortFunc(gh.Rows, func(a, b RowHealth) int { return cmp.Compare(a.Label, b.Label) })
		ph.Groups = append(ph.Groups, gh)
	}
	base := s.remember(p.name, cur)
	if base != nil {
		dt := now.Sub(base.at).Seconds()
		for gi := range ph.Groups {
			g := &ph.Groups[gi]
			g.Rate = rate(base.values, g.Key, g.Total, dt)
			for ri := range g.Rows {
				r := &g.Rows[ri]
				r.Rate = rate(base.values, g.Key+"\x00"+r.Label, r.Value, dt)
			}
		}
	}
	return ph
}

// rate is (v - before)/dt, nil after a reset (the value went down: the program restarted). A series
// absent before started at zero.
func rate(before map[string]float64, key string, v, dt float64) *float64 {
	b := before[key]
	if v < b {
		return nil
	}
	r := (v - b) / dt
	return &r
}

// remember records cur and returns the baseline to compute rates against: the oldest sample within
// rateWindow that is at least minRateSpan old, or nil.
func (s *scraper) remember(name string, cur sample) *sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.history[name]
	var base *sample
	kept := h[:0]
	for i := range h {
		if cur.at.Sub(h[i].at) > rateWindow {
			continue
		}
		kept = append(kept, h[i])
	}
	for i := range kept {
		if cur.at.Sub(kept[i].at) >= minRateSpan {
			b := kept[i]
			base = &b
			break
		}
	}
	s.history[name] = append(kept, cur)
	return base
}

// fetch reads a /metrics page in the Prometheus text format and parses it with expfmt.
func (s *scraper) fetch(ctx context.Context, target string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", target, err)
	}
	// The text format, which expfmt's parser reads; promhttp would otherwise pick protobuf or OpenMetrics.
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", target, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", target, resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, maxScrapeBytes))
}

// parseMetrics parses the Prometheus text exposition format.
func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return families, nil
}

// sumBy sums a counter's series by the values of labels, joined by a space ("204 stored").
func sumBy(mf *dto.MetricFamily, labels []string) map[string]float64 {
	out := map[string]float64{}
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		vals := make([]string, len(labels))
		for i, name := range labels {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == name {
					vals[i] = lp.GetValue()
				}
			}
		}
		v := m.GetCounter().GetValue()
		if m.GetCounter() == nil {
			v = m.GetUntyped().GetValue()
		}
		out[strings.TrimSpace(strings.Join(vals, " "))] += v
	}
	return out
}
