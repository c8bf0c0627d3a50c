package loadgen

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chatrelay/chat/internal/auth"
)

// Config is one load run.
type Config struct {
	URLs        []string `json:"urls"`
	MetricsURLs []string `json:"metrics"`
	Secret      string   `json:"-"`

	Users      int    `json:"users"`
	UserPrefix string `json:"user_prefix"`

	Ramp            float64       `json:"ramp_per_s"` // connects per second
	DialConcurrency int           `json:"dial_concurrency"`
	ConnectTimeout  time.Duration `json:"connect_timeout"`
	Reconnect       bool          `json:"reconnect"`
	Resume          bool          `json:"resume"`

	Rate        float64       `json:"rate_per_s"`      // total messages per second
	UserRate    float64       `json:"user_rate_per_s"` // messages per second per user
	Duration    time.Duration `json:"duration"`
	MessageSize int           `json:"message_size"`
	Drain       time.Duration `json:"drain"`
	Idle        bool          `json:"idle"`

	Procs     int      `json:"procs"`
	SourceIPs []string `json:"source_ips"`
	Senders   int      `json:"senders"`

	MaxConnectFailures int64         `json:"max_connect_failures"`
	ScrapeInterval     time.Duration `json:"scrape_interval"`
	Settle             time.Duration `json:"settle"`
	Progress           time.Duration `json:"progress"`
	TokenTTL           time.Duration `json:"token_ttl"`
	JSONPath           string        `json:"-"`
}

// DefaultConfig is what the flags default to.
func DefaultConfig() Config {
	return Config{
		Users: 100, UserPrefix: "load-", Ramp: 500, DialConcurrency: 256, ConnectTimeout: 10 * time.Second, Reconnect: true,
		// Like every shipped client: a reconnect resumes from the last
		// cursor (the connection's ready cursor, then each answer's).
		Resume:   true,
		Duration: 30 * time.Second, MessageSize: 64, Drain: 30 * time.Second, Procs: 1, Senders: 8,
		ScrapeInterval: time.Second, Settle: 10 * time.Second, Progress: 5 * time.Second,
	}
}

// stringList is a repeatable, comma-separated flag.
type stringList struct{ v *[]string }

func (s stringList) String() string {
	if s.v == nil {
		return ""
	}
	return strings.Join(*s.v, ",")
}

func (s stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s.v = append(*s.v, p)
		}
	}
	return nil
}

// envName is the environment fallback of a flag: LOADGEN_ + upper snake.
func envName(flagName string) string {
	return "LOADGEN_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseFlags reads the command line; a flag not given falls back to its
// LOADGEN_* environment variable (and -secret to AUTH_SECRET).
func ParseFlags(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := DefaultConfig()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Var(stringList{&c.URLs}, "url", "chat endpoint ws://host:port[/ws]; comma-separated or repeated, users go round-robin")
	fs.Var(stringList{&c.MetricsURLs}, "metrics", "ops listener of a server instance, http://host:port[/metrics]; comma-separated or repeated")
	fs.StringVar(&c.Secret, "secret", "", "AUTH_SECRET the tokens are minted with (default $AUTH_SECRET)")
	fs.IntVar(&c.Users, "users", c.Users, "number of simulated users (one socket each)")
	fs.StringVar(&c.UserPrefix, "user-prefix", c.UserPrefix, "user ids are prefix + index")
	fs.Float64Var(&c.Ramp, "ramp", c.Ramp, "ramp-up: connects per second")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", c.DialConcurrency, "connection attempts in flight at most")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", c.ConnectTimeout, "TCP connect + WebSocket handshake timeout")
	fs.BoolVar(&c.Reconnect, "reconnect", c.Reconnect, "reconnect (with backoff) a socket that failed or closed during the run")
	fs.BoolVar(&c.Resume, "resume", c.Resume, "on reconnect, pass resume=<cursor of the last ready frame or answer seen> (the response id if the server sends no cursor); -resume=false tests the cursor-less path")
	fs.Float64Var(&c.Rate, "rate", 0, "total messages per second over all users (open model); exclusive with -user-rate")
	fs.Float64Var(&c.UserRate, "user-rate", 0, "messages per second per user (open model); exclusive with -rate")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "sending phase (with -idle: how long the sockets are held)")
	fs.IntVar(&c.MessageSize, "message-size", c.MessageSize, "content bytes per message")
	fs.DurationVar(&c.Drain, "drain", c.Drain, "after sending stops, wait this long for answers; an answer not received by then is lost")
	fs.BoolVar(&c.Idle, "idle", false, "connect and hold the sockets, send nothing (idle-socket memory test)")
	fs.IntVar(&c.Procs, "procs", c.Procs, "spread the users over this many child processes")
	fs.Var(stringList{&c.SourceIPs}, "source-ips", "local addresses client sockets bind to, round-robin (e.g. 127.0.0.2,127.0.0.3): ~28k ports each per destination")
	fs.IntVar(&c.Senders, "senders", c.Senders, "goroutines writing scheduled messages, per process")
	fs.Int64Var(&c.MaxConnectFailures, "max-connect-failures", 0, "initial connect failures tolerated before the run fails")
	fs.DurationVar(&c.ScrapeInterval, "scrape-interval", c.ScrapeInterval, "how often -metrics are scraped for the peak")
	fs.DurationVar(&c.Settle, "settle", c.Settle, "after closing the sockets, wait at most this long for the servers' chat_ws_connections to fall back before the final scrape")
	fs.DurationVar(&c.Progress, "progress", c.Progress, "progress line interval on stderr (0: none)")
	fs.DurationVar(&c.TokenTTL, "token-ttl", 0, "token validity (default: long enough for the run plus an hour)")
	fs.StringVar(&c.JSONPath, "json", "", "write the JSON result to this file (- for stdout; the table then goes to stderr)")
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: loadgen -url ws://127.0.0.1:8080 -secret S -users N (-rate R | -user-rate r | -idle) [flags]\n\n"+
			"Every flag falls back to LOADGEN_<FLAG> from the environment (e.g. LOADGEN_USERS), -secret to AUTH_SECRET.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		name := envName(f.Name)
		v := getenv(name)
		if v == "" && f.Name == "secret" {
			name, v = "AUTH_SECRET", getenv("AUTH_SECRET")
		}
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", name, v, err)
		}
	})
	return c, envErr
}

// filesReserved is what a process keeps free besides its sockets (stdio,
// epoll, scrapes, pipes, the runtime).
const filesReserved = 100

// fileLimit is the soft RLIMIT_NOFILE (Go raises it to the hard limit at start).
func fileLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	if rl.Cur > 1<<30 {
		return 1 << 30
	}
	return int(rl.Cur)
}

// portRange is the number of ephemeral ports (net.ipv4.ip_local_port_range).
func portRange() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 28232
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 28232
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 28232
	}
	return hi - lo + 1
}

// parseEndpoint accepts ws://host:port[/path][?query] (http:// too).
func parseEndpoint(raw string) (*endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("-url %q: %w", raw, err)
	}
	switch u.Scheme {
	case "ws", "http":
	case "wss", "https":
		return nil, fmt.Errorf("-url %q: TLS is not supported (the load generator reads raw sockets); target nginx or an instance over ws://", raw)
	default:
		return nil, fmt.Errorf("-url %q: want ws://host:port", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("-url %q: no host", raw)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	path := u.EscapedPath()
	if path == "" || path == "/" {
		path = "/ws"
	}
	return &endpoint{raw: raw, hostport: hostport, host: u.Host, path: path, query: u.RawQuery}, nil
}

// metricsURL completes an ops address to its /metrics URL.
func metricsURL(raw string) (string, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("-metrics %q: want http://host:port[/metrics]", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	return u.String(), nil
}

// messageRate is the total message rate of cfg.
func (c *Config) messageRate() float64 {
	if c.Idle {
		return 0
	}
	if c.Rate > 0 {
		return c.Rate
	}
	return c.UserRate * float64(c.Users)
}

// Validate checks the configuration and the limits of this machine; it
// completes URLs in place.
func (c *Config) Validate() error {
	if len(c.URLs) == 0 {
		return errors.New("-url: at least one ws://host:port is required")
	}
	for _, u := range c.URLs {
		if _, err := parseEndpoint(u); err != nil {
			return err
		}
	}
	for i, m := range c.MetricsURLs {
		u, err := metricsURL(m)
		if err != nil {
			return err
		}
		c.MetricsURLs[i] = u
	}
	if c.Secret == "" {
		return errors.New("-secret: required (or AUTH_SECRET): tokens are minted with the servers' AUTH_SECRET")
	}
	if c.Users < 1 {
		return errors.New("-users: must be at least 1")
	}
	if !auth.ValidUserID(c.UserPrefix + strconv.Itoa(c.Users-1)) {
		return fmt.Errorf("-user-prefix %q: user ids must be 1-64 characters of [A-Za-z0-9._:-]", c.UserPrefix)
	}
	if c.Ramp <= 0 {
		return errors.New("-ramp: connects per second must be positive")
	}
	if c.DialConcurrency < 1 {
		return errors.New("-dial-concurrency: must be at least 1")
	}
	if c.ConnectTimeout <= 0 {
		return errors.New("-connect-timeout: must be positive")
	}
	if c.Idle {
		if c.Rate > 0 || c.UserRate > 0 {
			return errors.New("-idle sends nothing: drop -rate/-user-rate")
		}
		if c.Duration < 0 {
			return errors.New("-duration: must not be negative")
		}
	} else {
		if (c.Rate > 0) == (c.UserRate > 0) {
			return errors.New("set exactly one of -rate (total messages/s) and -user-rate (messages/s per user), or -idle")
		}
		if c.Rate < 0 || c.UserRate < 0 {
			return errors.New("-rate/-user-rate: must be positive")
		}
		if c.Duration <= 0 {
			return errors.New("-duration: must be positive")
		}
	}
	if c.MessageSize < 1 {
		return errors.New("-message-size: at least 1 byte (the server refuses empty content)")
	}
	if c.Drain < 0 {
		return errors.New("-drain: must not be negative")
	}
	if c.Senders < 1 {
		return errors.New("-senders: must be at least 1")
	}
	if c.Procs < 1 || c.Procs > c.Users {
		return fmt.Errorf("-procs %d: must be between 1 and -users (%d)", c.Procs, c.Users)
	}
	for _, s := range c.SourceIPs {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("-source-ips: %q is not an IP address", s)
		}
	}
	if c.ScrapeInterval <= 0 {
		return errors.New("-scrape-interval: must be positive")
	}
	return c.checkLimits(fileLimit(), portRange())
}

// checkLimits refuses a run this machine cannot hold: more sockets in one
// process than its open-file limit, or more sockets from one source address
// to one destination than there are ephemeral ports.
func (c *Config) checkLimits(files, ports int) error {
	perProc := (c.Users + c.Procs - 1) / c.Procs
	if perProc+filesReserved > files {
		need := (c.Users + files - filesReserved - 1) / (files - filesReserved)
		return fmt.Errorf("-users %d over -procs %d puts %d sockets in one process, but a process may open %d files (RLIMIT_NOFILE) and keeps %d for itself: use -procs %d or more",
			c.Users, c.Procs, perProc, files, filesReserved, need)
	}
	sources := max(1, len(c.SourceIPs))
	pairs := len(c.URLs) * sources
	perPair := (c.Users + pairs - 1) / pairs
	if perPair > ports {
		needSources := (c.Users + len(c.URLs)*ports - 1) / (len(c.URLs) * ports)
		return fmt.Errorf("-users %d over %d destination(s) and %d source address(es) needs %d sockets per source→destination pair, but there are %d ephemeral ports: give -source-ips with %d or more loopback addresses (127.0.0.2,127.0.0.3,…)",
			c.Users, len(c.URLs), sources, perPair, ports, needSources)
	}
	return nil
}

// tokenTTL is long enough for the whole run.
func (c *Config) tokenTTL() time.Duration {
	if c.TokenTTL > 0 {
		return c.TokenTTL
	}
	ramp := time.Duration(float64(c.Users) / c.Ramp * float64(time.Second))
	return ramp + c.Duration + c.Drain + time.Hour
}
