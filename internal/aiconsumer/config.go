package aiconsumer

import (
	"errors"
	"net/url"
	"time"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/ratelimit"
)

// Config is the ai-consumer's configuration.
type Config struct {
	Kafka   config.Kafka
	Fetch   config.KafkaFetch
	Redis   config.Redis
	History history.Config

	// MemoryTurns is how many earlier question/answer pairs go to the model
	// as context; MemoryChars bounds their total size.
	MemoryTurns int `env:"HISTORY_CONTEXT_TURNS" envDefault:"10"`
	MemoryChars int `env:"HISTORY_CONTEXT_CHARS" envDefault:"12000"`
	// AnswerTTL is how long an answer is kept under its message id for
	// redeliveries.
	AnswerTTL time.Duration `env:"AI_ANSWER_TTL" envDefault:"24h"`

	APIKey       string        `env:"OPENAI_API_KEY" secret:"true"`
	BaseURL      string        `env:"OPENAI_BASE_URL" envDefault:"https://api.openai.com/v1"`
	Model        string        `env:"OPENAI_MODEL" envDefault:"gpt-4o-mini"`
	SystemPrompt string        `env:"OPENAI_SYSTEM_PROMPT" envDefault:"You are a helpful assistant in a chat application. Answer concisely."`
	Timeout      time.Duration `env:"OPENAI_TIMEOUT" envDefault:"60s"`
	// Fallbacks are asked in order when the model above is rate limited,
	// failing or refusing its key: model@base_url entries, their keys in
	// FallbackAPIKeys in the same order (fallbacks.go). Empty: none.
	Fallbacks       []string `env:"LLM_FALLBACKS" envSeparator:","`
	FallbackAPIKeys string   `env:"LLM_FALLBACK_API_KEYS" secret:"true"`
	// Offline selects the built-in offline model; the standalone service
	// refuses to start without a key unless this is set.
	Offline        bool          `env:"LLM_OFFLINE" envDefault:"false"`
	OfflineLatency time.Duration `env:"LLM_OFFLINE_LATENCY" envDefault:"0s"`
	// The answer deadline, retries, budget and breaker around model calls.
	LLM llm.Policy
	// DelayedAfter is how long after its acceptance a message whose model
	// call is waiting for the model (rate limited, failing, breaker open)
	// gets its status envelope, state delayed (wait.go says why 3s).
	DelayedAfter time.Duration `env:"ANSWER_DELAYED_AFTER" envDefault:"3s"`
	// Limits: the daily token budget per user is reserved here before each
	// model call and settled with the call's real use after it.
	Limits ratelimit.Config
	// ModelLimits are shared by every ai-consumer instance (the provider's
	// quota is per account): requests and tokens per minute, calls in flight.
	ModelLimits ratelimit.ModelConfig
	// MaxConcurrency bounds model calls in flight in this instance;
	// MaxInFlight the records handed out and not finished (waiting for a
	// slot, Redis or a retry included); ModelLimits.MaxConcurrent the calls
	// of all instances. New says how the three nest.
	MaxConcurrency int `env:"LLM_MAX_CONCURRENCY" envDefault:"1024"`

	Group       string        `env:"AI_CONSUMER_GROUP" envDefault:"ai-consumer"`
	MaxInFlight int           `env:"AI_MAX_IN_FLIGHT" envDefault:"2048"`
	Drain       time.Duration `env:"AI_DRAIN_TIMEOUT" envDefault:"20s"`
}

// Validate checks the ai-consumer's settings.
func (c Config) Validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	if err := c.Fetch.Validate(); err != nil {
		return err
	}
	if err := c.History.Validate(); err != nil {
		return err
	}
	if err := c.LLM.Validate(); err != nil {
		return err
	}
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	if err := c.ModelLimits.Validate(); err != nil {
		return err
	}
	switch {
	case c.MaxConcurrency < 1:
		return errors.New("LLM_MAX_CONCURRENCY: must be at least 1")
	case c.MemoryTurns < 0:
		return errors.New("HISTORY_CONTEXT_TURNS: must not be negative")
	case c.MemoryChars < 0:
		return errors.New("HISTORY_CONTEXT_CHARS: must not be negative")
	case c.AnswerTTL < time.Minute:
		return errors.New("AI_ANSWER_TTL: must be at least 1m")
	case c.DelayedAfter < 0:
		return errors.New("ANSWER_DELAYED_AFTER: must not be negative")
	}
	if !c.Offline {
		if c.APIKey == "" {
			return errors.New("OPENAI_API_KEY: required (or set LLM_OFFLINE=true to use the built-in offline model)")
		}
		if u, err := url.Parse(c.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("OPENAI_BASE_URL: must be an http(s) URL")
		}
		if c.Model == "" {
			return errors.New("OPENAI_MODEL: must not be empty")
		}
		if _, err := c.fallbacks(); err != nil {
			return err
		}
	}
	switch {
	case c.Timeout <= 0:
		return errors.New("OPENAI_TIMEOUT: must be positive")
	case c.MaxInFlight < 1:
		return errors.New("AI_MAX_IN_FLIGHT: must be at least 1")
	case c.Group == "":
		return errors.New("AI_CONSUMER_GROUP: must not be empty")
	case c.OfflineLatency < 0:
		return errors.New("LLM_OFFLINE_LATENCY: must not be negative")
	}
	return nil
}
