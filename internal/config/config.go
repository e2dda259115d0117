// Package config loads the programs' configuration from the environment (and flags of the same meaning),
// and the merchant accounts from either the single-account variables or WECHATPAY_ACCOUNTS_FILE. Every
// problem is reported at once, each naming the variable, flag or YAML field at fault.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid wraps every configuration error; the text lists each problem on its own line.
var ErrInvalid = errors.New("invalid configuration")

// Common are the settings every program shares.
type Common struct {
	NATSURL   string
	NATSCreds string
	AdminAddr string
	// Streams is the JetStream layout, the same in every program (each creates what is missing).
	Streams
	LogLevel  string
	LogFormat string
}

// Receiver is the receiver's configuration.
type Receiver struct {
	Common
	Addr            string
	MaxBody         int64
	PublishTimeout  time.Duration
	ShutdownTimeout time.Duration
	MaxSkew         time.Duration
	Accounts        []Account
}

// DefaultDedupeTTL is DEDUPE_TTL's default: WeChat Pay's retry horizon (24 h 4 min after the first attempt)
// plus two days in which a stalled or lagging consumer can catch up before a late retry of a fact it already
// published could pass as new. It equals dedupe.DefaultTTL (not imported here: the receiver needs no Redis).
const DefaultDedupeTTL = 72 * time.Hour

// MinDedupeTTL is the shortest DEDUPE_TTL accepted: WeChat Pay's 24 h 4 min of retries and a little margin.
const MinDedupeTTL = 25 * time.Hour

// Consumer is the consumer's configuration.
type Consumer struct {
	Common
	Redis     Redis
	DedupeTTL time.Duration
	// DedupeAllowEviction lets the consumer run on a Redis whose maxmemory-policy may evict dedupe keys
	// (anything but noeviction), which it otherwise refuses: an evicted fact is published again.
	DedupeAllowEviction bool
	Workers             int
	// Batch is the most messages a worker processes together (CONSUMER_BATCH): their claims, publishes,
	// commits and acks share round trips, and each is settled on its own.
	Batch           int
	ShutdownTimeout time.Duration
	Accounts        []Account
}

// DefaultConsumerWorkers is CONSUMER_WORKERS' default.
//
// DefaultConsumerBatch is CONSUMER_BATCH's default, chosen by measurement (BENCHMARKS.md, "Third
// round"): with 8 workers, batches of 64 drained a backlog 1.3 times as fast as batches of 16 at 0.83
// times the CPU per notification, with no longer POST → event latency; 8 × 64 matched 32 workers × 16.
// A worker never waits for a batch to fill, so the size matters only when notifications queue up.
// MaxConsumerBatch bounds it: a batch's messages wait for its slowest.
const (
	DefaultConsumerWorkers = 8
	DefaultConsumerBatch   = 64
	MaxConsumerBatch       = 256
)

// BatchSize is Batch, or DefaultConsumerBatch for a configuration built without it.
func (c Consumer) BatchSize() int {
	if c.Batch < 1 {
		return DefaultConsumerBatch
	}
	return c.Batch
}

// Redis says how to reach Redis: a URL, or a Sentinel/Cluster address list, and the passwords.
type Redis struct {
	// URL is a single node (redis://, rediss://), or in go-redis's URL forms a Sentinel deployment
	// (?master_name=M&addr=…: the host and addr are sentinels, userinfo is the sentinels' password,
	// ?password= the data nodes') or a Cluster (?addr=…).
	URL        string
	Addrs      []string
	MasterName string
	// Password authenticates to the data nodes (REDIS_PASSWORD): the master and replicas of a
	// Sentinel deployment, every node of a Cluster, or the node of REDIS_URL when the URL has none.
	Password string
	// SentinelPassword authenticates to the sentinels (REDIS_SENTINEL_PASSWORD), which Redis configures
	// apart from the data nodes (sentinel's requirepass).
	SentinelPassword string
}

// Target names the Redis in use for a log line, passwords hidden: the URL, the Sentinel master and its
// sentinels, or the Cluster's seed addresses.
func (r Redis) Target() string {
	switch {
	case len(r.Addrs) > 0 && r.MasterName != "":
		return "sentinel master " + r.MasterName + " via " + strings.Join(r.Addrs, ",")
	case len(r.Addrs) > 0:
		return "cluster " + strings.Join(r.Addrs, ",")
	}
	return RedactRedisURL(r.URL)
}

// RedactRedisURL is u without its passwords: the userinfo's and a password= query parameter's (the data
// nodes' password in go-redis's Sentinel URL form).
func RedactRedisURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "(unparseable REDIS_URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Source reads settings from flags first, then the environment, then defaults.
type source struct {
	fs     *flag.FlagSet
	getenv func(string) string
	errs   []string
	post   []func()
}

func newSource(name string, getenv func(string) string, out io.Writer) *source {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		if about, ok := programs[name]; ok {
			fmt.Fprintf(out, "%s — %s\n\nUsage: %s [flags]\n\n", name, about, name)
		}
		fmt.Fprintf(out, "Every flag is also an environment variable (in brackets); a flag wins over its variable.\n\n")
		fs.PrintDefaults()
	}
	return &source{fs: fs, getenv: getenv}
}

// programs says what each program does, for --help.
var programs = map[string]string{
	"receiver": "the HTTP intake WeChat Pay's notify_url points at: verifies each notification's signature, stores it " +
		"still encrypted in JetStream (WECHATPAY_INBOUND) and only then answers 204. It holds no decryption key " +
		"(except the APIv3 key to download platform certificates, when configured to).",
	"consumer": "pulls stored notifications, decrypts them with the merchant's APIv3 key, drops duplicates with Redis " +
		"and publishes one CloudEvent per business fact on WECHATPAY_EVENTS; what cannot be processed goes to " +
		"WECHATPAY_DLQ with the reason.",
}

func flagName(env string) string { return strings.ReplaceAll(strings.ToLower(env), "_", "-") }

func (s *source) describe(env string) string { return fmt.Sprintf("%s (--%s)", env, flagName(env)) }

func (s *source) str(p *string, env, def, usage string) {
	v := s.getenv(env)
	if v == "" {
		v = def
	}
	s.fs.StringVar(p, flagName(env), v, usage+" ["+env+"]")
}

// parsed registers a flag whose text is parsed after flag parsing, so that env and flag values both go
// through the same validation and errors name both.
func (s *source) parsed(env, def, usage string, parse func(string) error) {
	raw := new(string)
	s.str(raw, env, def, usage)
	s.post = append(s.post, func() {
		if err := parse(*raw); err != nil {
			s.errs = append(s.errs, fmt.Sprintf("%s: %v", s.describe(env), err))
		}
	})
}

func (s *source) integer(p *int, env string, def, least int, usage string) {
	s.parsed(env, strconv.Itoa(def), usage, func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		if n < least {
			return fmt.Errorf("%d is below the minimum %d", n, least)
		}
		*p = n
		return nil
	})
}

func (s *source) duration(p *time.Duration, env string, def time.Duration, usage string) {
	s.parsed(env, def.String(), usage, func(v string) error {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration such as 2s or 168h", v)
		}
		if d <= 0 {
			return fmt.Errorf("%s must be positive", d)
		}
		*p = d
		return nil
	})
}

func (s *source) boolean(p *bool, env string, def bool, usage string) {
	s.parsed(env, strconv.FormatBool(def), usage, func(v string) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "yes":
			*p = true
		case "false", "0", "no":
			*p = false
		default:
			return fmt.Errorf("%q is not true or false", v)
		}
		return nil
	})
}

func (s *source) oneOf(p *string, env, def string, allowed ...string) {
	s.parsed(env, def, "one of "+strings.Join(allowed, ", "), func(v string) error {
		for _, a := range allowed {
			if v == a {
				*p = v
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	})
}

func (s *source) common(c *Common, adminDefault string) {
	s.str(&c.NATSURL, "NATS_URL", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	s.str(&c.NATSCreds, "NATS_CREDS", "", "NATS credentials file")
	s.str(&c.AdminAddr, "ADMIN_ADDR", adminDefault, "listen address of /metrics, /healthz, /readyz")
	s.streams(&c.Streams)
	s.oneOf(&c.LogLevel, "LOG_LEVEL", "info", "trace", "debug", "info", "warn", "error")
	s.oneOf(&c.LogFormat, "LOG_FORMAT", "json", "json", "console")
}

func (s *source) byteCount(p *int64, env, usage string) {
	s.parsed(env, "0", usage, func(v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a byte count (0 for no limit)", v)
		}
		*p = n
		return nil
	})
}

// parse parses args, runs the deferred validations and returns every problem at once.
func (s *source) parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err // flag already printed the usage; flag.ErrHelp passes through
	}
	if s.fs.NArg() > 0 {
		s.errs = append(s.errs, fmt.Sprintf("unexpected argument %q", s.fs.Arg(0)))
	}
	for _, p := range s.post {
		p()
	}
	return nil
}

func (s *source) err() error {
	if len(s.errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n  %s", ErrInvalid, strings.Join(s.errs, "\n  "))
}

// MaxClockSkewLimit bounds MAX_CLOCK_SKEW. A notification verifies for as long as its timestamp is within
// the skew of the clock, 2 × skew in all; the inbound stream's duplicate window (10 min) must outlast that,
// or a replay of a captured notification would be stored a second time.
const MaxClockSkewLimit = 5 * time.Minute

// LoadReceiver reads the receiver's configuration from args (without the program name) and getenv.
func LoadReceiver(args []string, getenv func(string) string, out io.Writer) (Receiver, error) {
	var c Receiver
	s := newSource("receiver", getenv, out)
	s.common(&c.Common, ":9090")
	s.str(&c.Addr, "RECEIVER_ADDR", ":8080", "public listen address of POST /notify/{mchid}")
	s.parsed("RECEIVER_MAX_BODY", "65536", "largest accepted body in bytes", func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1024 || n > 16<<20 {
			return fmt.Errorf("%q must be a byte count between 1024 and 16777216", v)
		}
		c.MaxBody = n
		return nil
	})
	s.duration(&c.PublishTimeout, "PUBLISH_TIMEOUT", 2*time.Second, "longest wait for JetStream to store a notification")
	s.duration(&c.ShutdownTimeout, "SHUTDOWN_TIMEOUT", 10*time.Second, "longest wait for in-flight requests on SIGTERM")
	s.duration(&c.MaxSkew, "MAX_CLOCK_SKEW", 300*time.Second, "accepted distance between Wechatpay-Timestamp and the clock")
	accounts := s.accounts(false)
	if err := s.parse(args); err != nil {
		return c, err
	}
	if c.PublishTimeout >= 4*time.Second {
		s.errs = append(s.errs, fmt.Sprintf("%s: %s leaves no margin under WeChat Pay's 5 s deadline (use at most 4s)", s.describe("PUBLISH_TIMEOUT"), c.PublishTimeout))
	}
	if c.MaxSkew > MaxClockSkewLimit {
		s.errs = append(s.errs, fmt.Sprintf("%s: %s is more than %s: a captured notification could be replayed after the inbound stream's duplicate window forgot it, and stored again",
			s.describe("MAX_CLOCK_SKEW"), c.MaxSkew, MaxClockSkewLimit))
	}
	c.Accounts = accounts()
	return c, s.err()
}

// LoadConsumer reads the consumer's configuration from args (without the program name) and getenv.
func LoadConsumer(args []string, getenv func(string) string, out io.Writer) (Consumer, error) {
	var c Consumer
	s := newSource("consumer", getenv, out)
	s.common(&c.Common, ":9091")
	s.redis(&c.Redis)
	s.duration(&c.DedupeTTL, "DEDUPE_TTL", DefaultDedupeTTL, "how long a processed business fact is remembered")
	s.boolean(&c.DedupeAllowEviction, "DEDUPE_ALLOW_EVICTION", false,
		"run even if Redis's maxmemory-policy may evict dedupe keys (anything but noeviction): evicted facts are published again")
	s.integer(&c.Workers, "CONSUMER_WORKERS", DefaultConsumerWorkers, 1, "notifications processed at once by this process")
	s.integer(&c.Batch, "CONSUMER_BATCH", DefaultConsumerBatch, 1, "most notifications one worker processes together, sharing round trips to Redis and NATS (1: one at a time)")
	s.duration(&c.ShutdownTimeout, "SHUTDOWN_TIMEOUT", 10*time.Second, "longest wait for in-flight messages on SIGTERM")
	accounts := s.accounts(true)
	if err := s.parse(args); err != nil {
		return c, err
	}
	if c.Workers > c.Consumer.MaxAckPending {
		s.errs = append(s.errs, fmt.Sprintf("%s: %d workers, but %s lets the whole fleet hold only %d messages at once: "+
			"raise %s (it is shared by every consumer process) or lower the workers",
			s.describe("CONSUMER_WORKERS"), c.Workers, s.describe("CONSUMER_MAX_ACK_PENDING"), c.Consumer.MaxAckPending, "CONSUMER_MAX_ACK_PENDING"))
	}
	if c.Batch > MaxConsumerBatch {
		s.errs = append(s.errs, fmt.Sprintf("%s: %d is above the maximum %d: a batch's notifications wait for its slowest",
			s.describe("CONSUMER_BATCH"), c.Batch, MaxConsumerBatch))
	}
	if c.DedupeTTL < MinDedupeTTL {
		s.errs = append(s.errs, fmt.Sprintf("%s: %s is shorter than WeChat Pay's 24 h 4 min of retries plus margin (use at least %s; default %s)",
			s.describe("DEDUPE_TTL"), c.DedupeTTL, fmtHours(MinDedupeTTL), fmtHours(DefaultDedupeTTL)))
	}
	c.Accounts = accounts()
	return c, s.err()
}

// DefaultRedisURL is REDIS_URL's default, used only when REDIS_ADDRS names no Sentinel or Cluster.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

func (s *source) redis(r *Redis) {
	s.str(&r.URL, "REDIS_URL", "", "Redis URL: redis:// or rediss:// for one node; with ?master_name= Sentinel, with ?addr= Cluster (default "+DefaultRedisURL+" unless REDIS_ADDRS is set)")
	s.parsed("REDIS_ADDRS", "", "Sentinel or Cluster addresses, comma-separated (instead of REDIS_URL)", func(v string) error {
		r.Addrs = splitList(v)
		return nil
	})
	s.str(&r.MasterName, "REDIS_MASTER_NAME", "", "Sentinel master name (with REDIS_ADDRS)")
	s.str(&r.Password, "REDIS_PASSWORD", "", "password of the Redis data nodes (Sentinel's master and replicas, a Cluster's nodes, or REDIS_URL's node)")
	s.str(&r.SentinelPassword, "REDIS_SENTINEL_PASSWORD", "", "password of the sentinels (with REDIS_MASTER_NAME)")
	s.post = append(s.post, func() {
		if r.URL == "" && len(r.Addrs) == 0 {
			r.URL = DefaultRedisURL
		}
		if r.MasterName != "" && len(r.Addrs) == 0 {
			s.errs = append(s.errs, fmt.Sprintf("%s: set, but %s lists no Sentinel address", s.describe("REDIS_MASTER_NAME"), s.describe("REDIS_ADDRS")))
		}
		if r.URL != "" && len(r.Addrs) > 0 {
			s.errs = append(s.errs, fmt.Sprintf("%s and %s are both set: use one (a URL for one node or in go-redis's Sentinel or Cluster form, or the address list)",
				s.describe("REDIS_URL"), s.describe("REDIS_ADDRS")))
		}
		if r.SentinelPassword != "" && r.MasterName == "" {
			s.errs = append(s.errs, fmt.Sprintf("%s: set, but %s names no Sentinel master (a URL with ?master_name= carries the sentinels' password as its userinfo)",
				s.describe("REDIS_SENTINEL_PASSWORD"), s.describe("REDIS_MASTER_NAME")))
		}
	})
}

// fmtHours writes a whole number of hours as DEDUPE_TTL is usually written ("72h", not "72h0m0s").
func fmtHours(d time.Duration) string { return strconv.FormatInt(int64(d/time.Hour), 10) + "h" }

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
