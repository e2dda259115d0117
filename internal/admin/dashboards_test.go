package admin_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/wxpay-events/wxpay-events/internal/certs"
	"github.com/wxpay-events/wxpay-events/internal/consumer"
	"github.com/wxpay-events/wxpay-events/internal/receiver"
)

// names records the metric names of every collector registered with it, vectors without a series yet
// included (a scrape would miss those).
type names struct {
	*prometheus.Registry
	got map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (n *names) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			n.got[m[1]] = true
		}
	}
	return n.Registry.Register(c)
}

func (n *names) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := n.Register(c); err != nil {
			panic(err)
		}
	}
}

// exported lists the wxpay_* metrics the receiver and the consumer serve on /metrics.
func exported(t *testing.T) map[string]bool {
	n := &names{Registry: prometheus.NewRegistry(), got: map[string]bool{}}
	receiver.NewMetrics(n)
	consumer.NewMetrics(n)
	certs.NewMetrics(n)
	if len(n.got) < 10 {
		t.Fatalf("only %d metrics found: %v", len(n.got), n.got)
	}
	return n.got
}

var metricName = regexp.MustCompile(`\bwxpay_[a-z0-9_]+`)

// unknown returns the wxpay_* names expr uses that no program exports (a histogram's _bucket, _sum and
// _count series count as its own).
func unknown(expr string, have map[string]bool) []string {
	var out []string
	for _, m := range metricName.FindAllString(expr, -1) {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(m, suffix); ok && have[b] {
				base = b
			}
		}
		if !have[base] {
			out = append(out, m)
		}
	}
	return out
}

// Every query of every dashboard under k8s/dashboards names metrics the programs export, so that a
// renamed metric cannot leave a panel silently empty; and the dashboards show every exported metric.
func TestDashboardsQueryExportedMetrics(t *testing.T) {
	have := exported(t)
	if bad := unknown(`rate(wxpay_receiver_requests_total[5m]) / wxpay_receiver_answers_total`, have); !slices.Equal(bad, []string{"wxpay_receiver_answers_total"}) {
		t.Fatalf("the check finds %v in a query with one unknown metric", bad)
	}
	files, err := filepath.Glob("../../k8s/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards (%v)", err)
	}
	shown := map[string]bool{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			UID    string  `json:"uid"`
			Panels []panel `json:"panels"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" {
			t.Errorf("%s: no uid (Grafana would make a new dashboard on every import)", f)
		}
		exprs := 0
		for _, p := range d.Panels {
			for _, target := range p.Targets {
				exprs++
				if bad := unknown(target.Expr, have); len(bad) > 0 {
					t.Errorf("%s: panel %q queries %v, which no program exports", f, p.Title, bad)
				}
				for _, m := range metricName.FindAllString(target.Expr, -1) {
					shown[strings.TrimSuffix(m, "_bucket")] = true
				}
			}
		}
		if exprs == 0 {
			t.Errorf("%s: no queries", f)
		}
	}
	for m := range have {
		if !shown[m] {
			t.Errorf("no dashboard shows %s", m)
		}
	}
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

// Every alert of the PrometheusRule names exported metrics only, and links to its section of the
// runbook in k8s/README.md, which exists.
func TestAlertsQueryExportedMetrics(t *testing.T) {
	have := exported(t)
	raw, err := os.ReadFile("../../k8s/base/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../k8s/README.md")
	if err != nil {
		t.Fatal(err)
	}
	const runbook = "https://github.com/wxpay-events/wxpay-events/blob/main/k8s/README.md#"
	var alerts []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if bad := unknown(r.Expr, have); len(bad) > 0 {
				t.Errorf("alert %s queries %v, which no program exports", r.Alert, bad)
			}
			// GitHub's anchor for a "### Name" heading is the name in lower case.
			if want := runbook + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !strings.Contains(string(readme), "\n### "+r.Alert+"\n") {
				t.Errorf("alert %s has no section \"### %s\" in k8s/README.md", r.Alert, r.Alert)
			}
		}
	}
	if len(alerts) == 0 || slices.Contains(alerts, "") {
		t.Errorf("alerts %q: want named alerts", alerts)
	}
}
