// Package ratelimit holds the abuse limits of the chat gateway. Every limit
// but InstanceSockets is shared by all gateway instances through Redis and
// decided atomically there (a Lua script, redis_rate's GCRA script, or
// UserMessages' script that holds the same GCRA), so N instances together
// allow exactly the configured amount, not N times it.
//
// Keys follow the rest of the system (their layout is in rediskeys): a
// user's keys carry the {userid} hash tag (chat:{u1}:…), so on a Redis
// Cluster each script touches one slot.
//
//	RATE_USER_MESSAGES_PER_MIN  UserMessages  rate:chat:{u1}:msgrate    GCRA (redis_rate's, in our script)
//	LIMIT_USER_SOCKETS          UserSockets   chat:{u1}:sockets         sorted set connID → expiry (ms)
//	LIMIT_IP_CONNECTS_PER_MIN   IPConnects    rate:chat:ip:{1.2.3.4}:connects  GCRA (redis_rate)
//	LIMIT_USER_TOKENS_PER_DAY   DailyTokens   chat:{u1}:tokens:2026-05-01      INCRBY + EXPIRE (read by UserMessages)
//	LIMIT_INSTANCE_SOCKETS      InstanceSockets (in process)
//
// A limit of 0 disables its limiter: it allows everything without touching
// Redis. Errors are Redis errors; whether to fail open or closed is the
// caller's choice.
package ratelimit

import (
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Config is the limits' configuration (internal/config env tags).
type Config struct {
	// UserMessagesPerMin is the sustained message rate of one user across
	// all of the user's sockets and all instances; UserMessagesBurst how
	// many may come at once (0 means the same as the rate).
	UserMessagesPerMin int `env:"RATE_USER_MESSAGES_PER_MIN" envDefault:"30"`
	UserMessagesBurst  int `env:"RATE_USER_MESSAGES_BURST" envDefault:"10"`
	// UserSockets bounds the open sockets of one user across instances;
	// a socket's slot expires UserSocketTTL after its last Refresh.
	UserSockets   int           `env:"LIMIT_USER_SOCKETS" envDefault:"10"`
	UserSocketTTL time.Duration `env:"LIMIT_USER_SOCKETS_TTL" envDefault:"90s"`
	// IPConnectsPerMin bounds connection attempts per client address
	// (IPv6 per /64) across instances.
	IPConnectsPerMin int `env:"LIMIT_IP_CONNECTS_PER_MIN" envDefault:"120"`
	// ExemptNetworks are client networks IPConnects does not limit; the
	// default is what nginx.conf's geo $limit_exempt block exempts (see
	// exempt.go).
	ExemptNetworks string `env:"LIMIT_EXEMPT_NETWORKS" envDefault:"127.0.0.1/32,::1/128"`
	// InstanceSockets bounds the sockets one instance holds.
	InstanceSockets int `env:"LIMIT_INSTANCE_SOCKETS" envDefault:"20000"`
	// UserTokensPerDay bounds the model tokens one user spends per UTC day.
	UserTokensPerDay int64 `env:"LIMIT_USER_TOKENS_PER_DAY" envDefault:"200000"`
}

// Validate checks the limits; errors name the variable.
func (c Config) Validate() error {
	switch {
	case c.UserMessagesPerMin < 0:
		return errors.New("RATE_USER_MESSAGES_PER_MIN: must not be negative (0 disables)")
	case c.UserMessagesBurst < 0:
		return errors.New("RATE_USER_MESSAGES_BURST: must not be negative (0 means the per-minute rate)")
	case c.UserSockets < 0:
		return errors.New("LIMIT_USER_SOCKETS: must not be negative (0 disables)")
	case c.UserSockets > 0 && c.UserSocketTTL < time.Second:
		return errors.New("LIMIT_USER_SOCKETS_TTL: must be at least 1s (and well above WS_PING_INTERVAL, which refreshes it)")
	case c.IPConnectsPerMin < 0:
		return errors.New("LIMIT_IP_CONNECTS_PER_MIN: must not be negative (0 disables)")
	case c.InstanceSockets < 0:
		return errors.New("LIMIT_INSTANCE_SOCKETS: must not be negative (0 disables)")
	case c.UserTokensPerDay < 0:
		return errors.New("LIMIT_USER_TOKENS_PER_DAY: must not be negative (0 disables)")
	}
	_, err := ParseNetworks(c.ExemptNetworks)
	return err
}

// Limiters are all the limits built from one Config.
type Limiters struct {
	// Messages checks the message rate and the token budget of each
	// message in one script. (The budget is spent by the ai-consumer,
	// which builds its own DailyTokens.)
	Messages   *UserMessages
	Sockets    *UserSockets
	IPConnects *IPConnects
	Instance   *InstanceSockets
}

// New builds every limiter of cfg on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Limiters {
	return &Limiters{
		Messages:   NewUserMessages(rdb, cfg.UserMessagesPerMin, cfg.UserMessagesBurst, NewDailyTokens(rdb, cfg.UserTokensPerDay)),
		Sockets:    NewUserSockets(rdb, cfg.UserSockets, cfg.UserSocketTTL),
		IPConnects: NewIPConnects(rdb, cfg.IPConnectsPerMin, cfg.exemptPrefixes()...),
		Instance:   NewInstanceSockets(cfg.InstanceSockets),
	}
}

// Limit names, the values of the {limit} label of
// chat_gateway_limited_total.
const (
	LimitFrameSize      = "frame_size" // WS_READ_LIMIT, enforced by the gateway itself
	LimitUserMessages   = "user_messages"
	LimitUserSockets    = "user_sockets"
	LimitIPConnects     = "ip_connects"
	LimitInstanceSocket = "instance_sockets"
	LimitUserTokens     = "user_tokens"
	LimitResumes        = "resumes" // WS_RESUMES_PER_MIN, per socket, in the gateway
)

// Names lists every limit name, to start a counter at zero for each.
func Names() []string {
	return []string{LimitFrameSize, LimitUserMessages, LimitUserSockets, LimitIPConnects, LimitInstanceSocket, LimitUserTokens, LimitResumes}
}

// Result is the answer of a rate limiter.
type Result struct {
	Allowed bool
	// Remaining is how many more would be allowed right now (-1 when the
	// limiter is disabled).
	Remaining int
	// RetryAfter is how long until the next one is allowed (0 when
	// allowed).
	RetryAfter time.Duration
}
