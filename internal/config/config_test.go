package config_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxpay-events/wxpay-events/internal/certs"
	"github.com/wxpay-events/wxpay-events/internal/config"
	"github.com/wxpay-events/wxpay-events/internal/topology"
	"github.com/wxpay-events/wxpay-events/internal/wechatsim"
)

var (
	once  sync.Once
	plat  *wechatsim.Platform
	files wechatsim.Files
	dir   string
)

// setup writes one simulated platform's files into a directory shared by the tests of this package.
func setup(t *testing.T) (*wechatsim.Platform, wechatsim.Files) {
	t.Helper()
	once.Do(func() {
		var err error
		plat, err = wechatsim.NewPlatform("1900000100")
		if err != nil {
			panic(err)
		}
		dir, err = os.MkdirTemp("", "config-test")
		if err != nil {
			panic(err)
		}
		files, err = plat.WriteFiles(dir)
		if err != nil {
			panic(err)
		}
	})
	return plat, files
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestReceiverDefaultsAndSingleAccount(t *testing.T) {
	p, f := setup(t)
	env := p.Env(f)
	delete(env, "WECHATPAY_APIV3_KEY_FILE")
	c, err := config.LoadReceiver(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":8080" || c.AdminAddr != ":9090" || c.NATSURL != "nats://127.0.0.1:4222" || c.StreamReplicas != 1 ||
		c.MaxBody != 64<<10 || c.PublishTimeout != 2*time.Second || c.LogFormat != "json" || c.LogLevel != "info" {
		t.Fatalf("defaults: %+v", c)
	}
	if len(c.Accounts) != 1 {
		t.Fatalf("accounts: %d", len(c.Accounts))
	}
	a := c.Accounts[0]
	if a.MchID != p.MchID || a.PublicKeyID != p.PublicKeyID || a.PublicKey == nil || len(a.Certificates) != 1 {
		t.Fatalf("account: %+v", a)
	}
	if a.APIv3Key != nil {
		t.Fatal("the receiver loaded the APIv3 key without needing it")
	}
}

func TestFlagsOverrideEnvironment(t *testing.T) {
	p, f := setup(t)
	env := p.Env(f)
	env["STREAM_REPLICAS"] = "1"
	c, err := config.LoadReceiver([]string{"--stream-replicas", "3", "--receiver-addr", "127.0.0.1:0"}, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.StreamReplicas != 3 || c.Addr != "127.0.0.1:0" {
		t.Fatalf("flags not applied: %+v", c.Common)
	}
}

func TestConsumerNeedsExactly32ByteKey(t *testing.T) {
	p, f := setup(t)
	env := p.Env(f)
	c, err := config.LoadConsumer(nil, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.Accounts[0].APIv3Key) != string(p.APIv3Key) || c.DedupeTTL != 72*time.Hour || c.DedupeAllowEviction || c.AdminAddr != ":9091" {
		t.Fatalf("consumer config: %+v", c)
	}
	if s := fmt.Sprintf("%v %+v", c.Accounts[0].APIv3Key, c.Accounts[0]); strings.Contains(s, string(p.APIv3Key)) {
		t.Fatalf("the key shows in formatted output: %s", s)
	}

	// A 16-byte key (as in wechatpay-go's own vectors) is refused, naming the variable and the length only.
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("testMchAPIv3Key0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env["WECHATPAY_APIV3_KEY_FILE"] = short
	_, err = config.LoadConsumer(nil, envOf(env), io.Discard)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "WECHATPAY_APIV3_KEY_FILE") || !strings.Contains(err.Error(), "16 bytes") {
		t.Fatalf("16-byte key: %v", err)
	}
	if strings.Contains(err.Error(), "testMchAPIv3Key0") {
		t.Fatal("error text contains the key")
	}

	// The consumer needs no verification key.
	env = map[string]string{"WECHATPAY_MCHID": p.MchID, "WECHATPAY_APIV3_KEY_FILE": f.APIv3KeyFile}
	if _, err := config.LoadConsumer(nil, envOf(env), io.Discard); err != nil {
		t.Fatalf("consumer without verification keys: %v", err)
	}
}

// DEDUPE_TTL defaults to WeChat Pay's retry horizon plus two days and refuses less than the horizon plus
// margin; DEDUPE_ALLOW_EVICTION is a boolean, off unless set. Both name their variable when wrong.
func TestDedupeSettings(t *testing.T) {
	p, f := setup(t)
	base := p.Env(f)
	load := func(extra map[string]string) (config.Consumer, error) {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		return config.LoadConsumer(nil, envOf(env), io.Discard)
	}
	for _, tc := range []struct {
		env   map[string]string
		ttl   time.Duration
		evict bool
	}{
		{nil, config.DefaultDedupeTTL, false},
		{map[string]string{"DEDUPE_TTL": "25h"}, 25 * time.Hour, false},
		{map[string]string{"DEDUPE_TTL": "168h", "DEDUPE_ALLOW_EVICTION": "true"}, 168 * time.Hour, true},
		{map[string]string{"DEDUPE_ALLOW_EVICTION": "false"}, config.DefaultDedupeTTL, false},
		{map[string]string{"DEDUPE_ALLOW_EVICTION": "1"}, config.DefaultDedupeTTL, true},
	} {
		c, err := load(tc.env)
		if err != nil || c.DedupeTTL != tc.ttl || c.DedupeAllowEviction != tc.evict {
			t.Errorf("%v: TTL %s, allow eviction %v, %v; want %s, %v", tc.env, c.DedupeTTL, c.DedupeAllowEviction, err, tc.ttl, tc.evict)
		}
	}
	if config.DefaultDedupeTTL != 72*time.Hour || config.DefaultDedupeTTL < 24*time.Hour+4*time.Minute+24*time.Hour {
		t.Errorf("DefaultDedupeTTL %s: want WeChat's 24 h 4 min of retries plus a margin of about two days", config.DefaultDedupeTTL)
	}
	if _, err := config.LoadConsumer([]string{"--dedupe-allow-eviction", "true"}, envOf(base), io.Discard); err != nil {
		t.Errorf("--dedupe-allow-eviction true: %v", err)
	}
	for _, bad := range []struct{ env, value, want string }{
		{"DEDUPE_TTL", "24h", "use at least 25h"},
		{"DEDUPE_TTL", "24h4m", "24 h 4 min"},
		{"DEDUPE_ALLOW_EVICTION", "maybe", `"maybe" is not true or false`},
	} {
		_, err := load(map[string]string{bad.env: bad.value})
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), bad.env) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s=%s: %v, want an error naming %s and saying %q", bad.env, bad.value, err, bad.env, bad.want)
		}
	}
}

func TestConsumerBatch(t *testing.T) {
	p, f := setup(t)
	base := p.Env(f)
	load := func(batch string) (config.Consumer, error) {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		if batch != "" {
			env["CONSUMER_BATCH"] = batch
		}
		return config.LoadConsumer(nil, envOf(env), io.Discard)
	}
	for _, tc := range []struct {
		value string
		want  int
	}{{"", config.DefaultConsumerBatch}, {"1", 1}, {"64", 64}, {"256", config.MaxConsumerBatch}} {
		c, err := load(tc.value)
		if err != nil || c.Batch != tc.want || c.BatchSize() != tc.want {
			t.Errorf("CONSUMER_BATCH=%q: %d (size %d), %v; want %d", tc.value, c.Batch, c.BatchSize(), err, tc.want)
		}
	}
	for _, bad := range []struct{ value, want string }{
		{"0", "below the minimum 1"},
		{"257", "above the maximum 256"},
		{"many", `"many" is not a whole number`},
	} {
		_, err := load(bad.value)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "CONSUMER_BATCH") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("CONSUMER_BATCH=%s: %v, want an error naming CONSUMER_BATCH and saying %q", bad.value, err, bad.want)
		}
	}
	// A configuration built in code without the field (the bench, tests) gets the default.
	if n := (config.Consumer{}).BatchSize(); n != config.DefaultConsumerBatch {
		t.Errorf("zero Consumer: BatchSize %d, want %d", n, config.DefaultConsumerBatch)
	}
}

// Every problem is reported at once, each naming its variable or field.
func TestEveryProblemNamed(t *testing.T) {
	p, f := setup(t)
	cases := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"no account", map[string]string{}, []string{"WECHATPAY_MCHID", "WECHATPAY_ACCOUNTS_FILE"}},
		{"several problems", map[string]string{
			"WECHATPAY_MCHID": "19000x", "STREAM_REPLICAS": "zero", "PUBLISH_TIMEOUT": "5s", "LOG_FORMAT": "xml",
			"WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_1",
		}, []string{"WECHATPAY_MCHID", "STREAM_REPLICAS (--stream-replicas)", "PUBLISH_TIMEOUT", "LOG_FORMAT", "WECHATPAY_PUBLIC_KEY_FILE"}},
		{"public key file unreadable", map[string]string{
			"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PUBLIC_KEY_ID": "PUB_KEY_ID_1", "WECHATPAY_PUBLIC_KEY_FILE": "/nonexistent.pem",
		}, []string{"WECHATPAY_PUBLIC_KEY_FILE", "no such file"}},
		{"certificate is not a certificate", map[string]string{
			"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PLATFORM_CERT_FILES": f.PublicKeyFile,
		}, []string{"WECHATPAY_PLATFORM_CERT_FILES", "not a PEM certificate"}},
		{"public key is a certificate", map[string]string{
			"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PUBLIC_KEY_ID": p.PublicKeyID, "WECHATPAY_PUBLIC_KEY_FILE": f.CertFile,
		}, []string{"WECHATPAY_PUBLIC_KEY_FILE"}},
		{"no verification key", map[string]string{"WECHATPAY_MCHID": "1900000100"}, []string{"WECHATPAY_PUBLIC_KEY_FILE", "no key to verify"}},
		{"both ways", map[string]string{"WECHATPAY_MCHID": "1900000100", "WECHATPAY_ACCOUNTS_FILE": "/x.yaml"}, []string{"both set"}},
		{"public key id that is not one", map[string]string{
			"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PUBLIC_KEY_ID": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", "WECHATPAY_PUBLIC_KEY_FILE": f.PublicKeyFile,
		}, []string{"WECHATPAY_PUBLIC_KEY_ID", "PUB_KEY_ID_ followed by digits"}},
		{"clock skew beyond the duplicate window", map[string]string{
			"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PUBLIC_KEY_ID": p.PublicKeyID, "WECHATPAY_PUBLIC_KEY_FILE": f.PublicKeyFile,
			"MAX_CLOCK_SKEW": "8760h",
		}, []string{"MAX_CLOCK_SKEW", "duplicate window"}},
		{"download without serial", map[string]string{
			"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PRIVATE_KEY_FILE": f.PrivateKeyFile,
		}, []string{"WECHATPAY_CERT_SERIAL", "WECHATPAY_APIV3_KEY_FILE"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.LoadReceiver(nil, envOf(c.env), io.Discard)
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestAccountsFile(t *testing.T) {
	p, f := setup(t)
	other, err := wechatsim.NewPlatform("1900000200")
	if err != nil {
		t.Fatal(err)
	}
	d := t.TempDir()
	of, err := other.WriteFiles(d)
	if err != nil {
		t.Fatal(err)
	}
	write := func(body string) string {
		path := filepath.Join(d, "accounts.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	good := write(fmt.Sprintf(`accounts:
  - mchid: "%s"
    public_key_id: %s
    public_key_file: %s
    platform_cert_files: [%s]
    apiv3_key_file: %s
  - mchid: "%s"
    platform_cert_files: [%s]
    apiv3_key_file: %s
`, p.MchID, p.PublicKeyID, f.PublicKeyFile, f.CertFile, f.APIv3KeyFile, other.MchID, of.CertFile, of.APIv3KeyFile))
	c, err := config.LoadConsumer(nil, envOf(map[string]string{"WECHATPAY_ACCOUNTS_FILE": good}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Accounts) != 2 || c.Accounts[1].MchID != other.MchID || c.Accounts[1].Origin != good+": accounts[1]" {
		t.Fatalf("accounts: %v (origin %q)", c.Accounts, c.Accounts[1].Origin)
	}

	bad := write(fmt.Sprintf(`accounts:
  - mchid: "%s"
    public_key_file: %s
  - mchid: "%s"
    platform_cert_files: [%s]
`, p.MchID, f.PublicKeyFile, p.MchID, f.CertFile))
	_, err = config.LoadReceiver(nil, envOf(map[string]string{"WECHATPAY_ACCOUNTS_FILE": bad}), io.Discard)
	for _, w := range []string{"accounts[0].public_key_id", "accounts[1].mchid", "appears twice"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}

	typo := write("accounts:\n  - mchid: \"1900000100\"\n    public_key_fil: /x\n")
	_, err = config.LoadReceiver(nil, envOf(map[string]string{"WECHATPAY_ACCOUNTS_FILE": typo}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "public_key_fil") {
		t.Fatalf("a misspelt field must be an error: %v", err)
	}
}

// Accounts that download platform certificates say where from: a region (mainland by default, global for
// cross-border merchants) and optionally an API host of their own; both are checked and named.
func TestRegionAndAPIBaseURL(t *testing.T) {
	p, f := setup(t)
	d := t.TempDir()
	keyFile, err := p.WriteMerchantKey(d)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := p.Merchant()
	download := map[string]string{
		"WECHATPAY_MCHID": p.MchID, "WECHATPAY_PRIVATE_KEY_FILE": keyFile, "WECHATPAY_CERT_SERIAL": m.CertSerial,
		"WECHATPAY_APIV3_KEY_FILE": f.APIv3KeyFile,
	}
	with := func(extra map[string]string) map[string]string {
		env := map[string]string{}
		for k, v := range download {
			env[k] = v
		}
		for k, v := range extra {
			env[k] = v
		}
		return env
	}

	c, err := config.LoadReceiver(nil, envOf(download), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Accounts[0]; a.Region != certs.RegionMainland || a.APIBaseURL != "" || a.PrivateKey == nil || len(a.APIv3Key) != 32 {
		t.Fatalf("defaults: region %q, base %q", a.Region, a.APIBaseURL)
	}
	c, err = config.LoadReceiver(nil, envOf(with(map[string]string{"WECHATPAY_REGION": "global", "WECHATPAY_API_BASE_URL": "http://127.0.0.1:8443"})), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Accounts[0]; a.Region != certs.RegionGlobal || a.APIBaseURL != "http://127.0.0.1:8443" {
		t.Fatalf("env: region %q, base %q", a.Region, a.APIBaseURL)
	}

	for _, bad := range []struct{ env, value, want string }{
		{"WECHATPAY_REGION", "hongkong", `"hongkong" is not a region`},
		{"WECHATPAY_API_BASE_URL", "apihk.mch.weixin.qq.com", "not an absolute http(s) URL"},
		{"WECHATPAY_API_BASE_URL", "ftp://apihk.mch.weixin.qq.com", "not an absolute http(s) URL"},
		{"WECHATPAY_API_BASE_URL", "https://apihk.mch.weixin.qq.com/v3/global", "scheme://host[:port] only"},
	} {
		_, err := config.LoadReceiver(nil, envOf(with(map[string]string{bad.env: bad.value})), io.Discard)
		if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), bad.env+": ") || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s=%s: %v, want an error naming %s and saying %q", bad.env, bad.value, err, bad.env, bad.want)
		}
	}

	path := filepath.Join(d, "accounts.yaml")
	yaml := fmt.Sprintf(`accounts:
  - mchid: "%s"
    apiv3_key_file: %s
    private_key_file: %s
    cert_serial: %s
    region: global
    api_base_url: https://egress.internal:8443
  - mchid: "1900000200"
    apiv3_key_file: %s
    private_key_file: %s
    cert_serial: %s
    region: moon
    api_base_url: /relative
`, p.MchID, f.APIv3KeyFile, keyFile, m.CertSerial, f.APIv3KeyFile, keyFile, m.CertSerial)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = config.LoadReceiver(nil, envOf(map[string]string{"WECHATPAY_ACCOUNTS_FILE": path}), io.Discard)
	for _, w := range []string{"accounts[1].region", "accounts[1].api_base_url"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "accounts[0]") {
		t.Errorf("the good account is blamed: %v", err)
	}
	good := strings.SplitAfter(yaml, "egress.internal:8443\n")[0]
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = config.LoadReceiver(nil, envOf(map[string]string{"WECHATPAY_ACCOUNTS_FILE": path}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Accounts[0]; a.Region != certs.RegionGlobal || a.APIBaseURL != "https://egress.internal:8443" {
		t.Fatalf("YAML: region %q, base %q", a.Region, a.APIBaseURL)
	}
}

// The clock-skew bound keeps a replay inside the inbound stream's duplicate window: a notification
// verifies during 2 × skew.
func TestClockSkewLimitWithinDuplicateWindow(t *testing.T) {
	if 2*config.MaxClockSkewLimit > topology.InboundDuplicates {
		t.Fatalf("2 × %s exceeds the inbound duplicate window %s", config.MaxClockSkewLimit, topology.InboundDuplicates)
	}
	p, f := setup(t)
	env := map[string]string{"WECHATPAY_MCHID": "1900000100", "WECHATPAY_PUBLIC_KEY_ID": p.PublicKeyID,
		"WECHATPAY_PUBLIC_KEY_FILE": f.PublicKeyFile, "MAX_CLOCK_SKEW": config.MaxClockSkewLimit.String()}
	if _, err := config.LoadReceiver(nil, envOf(env), io.Discard); err != nil {
		t.Fatalf("MAX_CLOCK_SKEW at the limit: %v", err)
	}
}

// The Redis named in the start-up log line never shows a password.
func TestRedisTarget(t *testing.T) {
	for r, want := range map[*config.Redis]string{
		{URL: "redis://:s3cret@10.0.0.5:6379/0"}:                          "redis://:xxxxx@10.0.0.5:6379/0",
		{Addrs: []string{"s1:26379", "s2:26379"}, MasterName: "mymaster"}: "sentinel master mymaster via s1:26379,s2:26379",
		{Addrs: []string{"c1:6379", "c2:6379"}}:                           "cluster c1:6379,c2:6379",
	} {
		if got := r.Target(); got != want {
			t.Errorf("Target() = %q, want %q", got, want)
		}
	}
}

// --help says what the program is for before listing its flags.
func TestHelpDescribesTheProgram(t *testing.T) {
	var out strings.Builder
	_, err := config.LoadReceiver([]string{"--help"}, envOf(nil), &out)
	if err == nil {
		t.Fatal("--help returned no error")
	}
	if !strings.Contains(out.String(), "receiver — the HTTP intake") || !strings.Contains(out.String(), "-max-clock-skew") {
		t.Fatalf("receiver --help:\n%s", out.String())
	}
	out.Reset()
	_, _ = config.LoadConsumer([]string{"-h"}, envOf(nil), &out)
	if !strings.Contains(out.String(), "consumer — pulls stored notifications") {
		t.Fatalf("consumer --help:\n%s", out.String())
	}
}
