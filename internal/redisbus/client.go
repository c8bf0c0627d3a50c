// Package redisbus connects the services to Redis: the client (single node,
// Cluster or Sentinel from one URL), the per-user channel and key names, and
// the pub/sub bus that carries answers to whichever gateway holds the user.
package redisbus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/rediskeys"
)

// NewClient opens a client for REDIS_URL:
//
//	redis://[user:pass@]host:port/db             a single server (rediss:// for TLS)
//	redis+cluster://host:port?addr=host2:port2   a Redis Cluster (seed nodes)
//	redis+sentinel://host:port?master_name=m     Sentinel-managed failover
//
// Every form returns a redis.UniversalClient, so the code using it is the same
// whichever topology runs. Commands are traced with redisotel. Errors are
// ErrBadURL and never show the password (see parseURL).
func NewClient(rawURL string) (redis.UniversalClient, error) {
	u, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := newTopologyClient(u)
	if err != nil {
		return nil, err
	}
	// No statements (they would carry chat content into traces) and no
	// caller file:line: finding it walks the stack on every command, about
	// a tenth of the relay's CPU, to name one of a handful of call sites the
	// span's parent already names.
	//
	// Pipelines are not traced here: they all go through redisbatch, which
	// traces each one itself, cheaply — redisotel renders every argument
	// of every command of a pipeline into a string for the span's name
	// even with statements off (7% of the relay's CPU with batching).
	if err := redisotel.InstrumentTracing(c, redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false),
		redisotel.WithCommandsFilter(func([]redis.Cmder) bool { return true })); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis tracing: %w", err)
	}
	return c, nil
}

// ErrBadURL is the error of a REDIS_URL that cannot be used.
var ErrBadURL = errors.New("REDIS_URL is not a usable Redis URL")

// parseURL parses REDIS_URL without ever putting the value in an error:
// url.Parse's errors quote the whole URL, password included, and their
// inner errors quote pieces of it (a '/', '?' or '#' in a password ends the
// host early, and the rest of the password is reported as a bad port). So a
// URL that does not parse gets a description in words, and a password
// piece that parsed as a path (an '@' after the host) is refused before
// go-redis reports it as a bad database number.
func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s (the value is not shown: it may hold a password)", ErrBadURL, parseProblem(err))
	}
	base, _, _ := strings.Cut(u.Scheme, "+")
	switch {
	case base != "redis" && base != "rediss":
		return nil, fmt.Errorf("%w: the scheme is not redis, rediss, redis+cluster or redis+sentinel", ErrBadURL)
	case u.Opaque != "":
		return nil, fmt.Errorf("%w: write it as %s://[user:password@]host:port", ErrBadURL, u.Scheme)
	case strings.Contains(u.EscapedPath()+u.RawQuery+u.EscapedFragment(), "@"):
		return nil, fmt.Errorf("%w: an '@' after the host: percent-encode '/', '?', '#' and '@' in the password (the value is not shown)", ErrBadURL)
	}
	return u, nil
}

// parseProblem says in words what url.Parse found wrong, quoting nothing.
func parseProblem(err error) string {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		err = ue.Err
	}
	msg := err.Error()
	switch {
	case errors.As(err, new(url.EscapeError)):
		return "a '%' that is not a %XX escape (percent-encode '%' in the password as %25)"
	case errors.As(err, new(url.InvalidHostError)):
		return "a character that is not allowed in the host"
	case strings.HasPrefix(msg, "invalid port"):
		return "the port is not a number (percent-encode '/', '?' and '#' in the password)"
	case strings.Contains(msg, "userinfo"):
		return "a character that is not allowed in the user or password (percent-encode it)"
	case strings.Contains(msg, "control character"):
		return "a control character"
	}
	return "it does not parse as a URL"
}

// newTopologyClient makes the client of u's topology.
func newTopologyClient(u *url.URL) (redis.UniversalClient, error) {
	base, topology, _ := strings.Cut(u.Scheme, "+")
	p := *u
	p.Scheme = base
	plain := p.String()
	var (
		c   redis.UniversalClient
		err error
	)
	switch topology {
	case "":
		var o *redis.Options
		if o, err = redis.ParseURL(plain); err == nil {
			c = redis.NewClient(o)
		}
	case "cluster":
		var o *redis.ClusterOptions
		if o, err = redis.ParseClusterURL(plain); err == nil {
			cc := redis.NewClusterClient(o)
			cc.AddHook(reloadOnFailure{cc})
			c = cc
		}
	case "sentinel":
		var o *redis.FailoverOptions
		if o, err = redis.ParseFailoverURL(plain); err == nil {
			c = redis.NewFailoverClient(o)
		}
	default:
		return nil, fmt.Errorf("%w: unknown topology %q (use cluster or sentinel)", ErrBadURL, topology)
	}
	if err != nil {
		// go-redis' text, not its error: the text is scrubbed of every
		// password (one may sit in a query value or where a path was
		// meant), and the error itself would carry the original.
		return nil, fmt.Errorf("%w %s", ErrBadURL, scrub("("+redacted(u)+"): "+err.Error(), u))
	}
	return c, nil
}

// passwords are the secrets a Redis URL may hold: the password of its user
// info and the value of any query parameter naming a password (Sentinel's
// password=).
func passwords(u *url.URL) []string {
	var out []string
	if p, ok := u.User.Password(); ok && p != "" {
		out = append(out, p)
	}
	for k, vs := range u.Query() {
		if strings.Contains(strings.ToLower(k), "password") {
			out = append(out, vs...)
		}
	}
	return out
}

const mask = "xxxxx"

// redacted is u for an error message, every password masked.
func redacted(u *url.URL) string {
	c := *u
	if _, ok := c.User.Password(); ok {
		c.User = url.UserPassword(c.User.Username(), mask)
	}
	q := c.Query()
	for k := range q {
		if strings.Contains(strings.ToLower(k), "password") {
			q[k] = []string{mask}
		}
	}
	c.RawQuery = q.Encode()
	return c.String()
}

// scrub masks every password of u wherever it appears in msg.
func scrub(msg string, u *url.URL) string {
	for _, p := range passwords(u) {
		if p != "" {
			msg = strings.ReplaceAll(msg, p, mask)
		}
	}
	return msg
}

// Ping checks that Redis answers, for readiness probes.
func Ping(ctx context.Context, c redis.UniversalClient) error {
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// UserChannel is the pub/sub channel of a user's live traffic
// (rediskeys.Live: it carries the user's {userid} hash tag, so on a Cluster
// it lives on the slot of the user's keys).
func UserChannel(userID string) string { return rediskeys.Live(userID) }

// UserFromChannel inverts UserChannel.
func UserFromChannel(ch string) (string, bool) { return rediskeys.UserFromLive(ch) }

// reloadOnFailure makes a cluster client read the slot map again when a
// command fails without a reply from Redis (its node refused or dropped the
// connection) or with CLUSTERDOWN. go-redis reloads it only on MOVED or
// READONLY replies and otherwise once a minute (ClusterStateReloadInterval),
// so after a master dies it keeps dialing the dead node — which never
// answers MOVED — for up to a minute after its replica took over: answers
// waited that long on a failover. A reload is cheap (one CLUSTER SLOTS)
// and go-redis coalesces those asked for within 200 ms.
type reloadOnFailure struct{ c *redis.ClusterClient }

func (h reloadOnFailure) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(ctx, err)
		return err
	}
}

func (h reloadOnFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(ctx, err)
		return err
	}
}

func (h reloadOnFailure) check(ctx context.Context, err error) {
	if staleSlots(err) {
		h.c.ReloadState(ctx)
	}
}

// staleSlots reports whether err may mean the client's slot map is out of
// date: no reply at all (a network error), or CLUSTERDOWN while a failover
// runs. A reply error (other than CLUSTERDOWN), a nil reply, a closed
// client and the caller's own deadline say nothing about the slots.
func staleSlots(err error) bool {
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.Is(err, redis.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case redis.HasErrorPrefix(err, "CLUSTERDOWN"):
		return true
	}
	var reply redis.Error
	return !errors.As(err, &reply)
}
