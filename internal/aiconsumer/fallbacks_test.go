package aiconsumer

import (
	"reflect"
	"strings"
	"testing"

	"github.com/chatrelay/chat/internal/config"
	"github.com/chatrelay/chat/internal/llm"
)

const (
	primaryKey  = "sk-primary-0123456789"
	fallbackKey = "sk-fallback-0123456789"
)

// loadAI loads the ai-consumer's configuration from env plus a primary.
func loadAI(env map[string]string) (Config, error) {
	all := map[string]string{"OPENAI_API_KEY": primaryKey, "OPENAI_BASE_URL": "https://primary.test/v1", "OPENAI_MODEL": "gpt-4o"}
	for k, v := range env {
		all[k] = v
	}
	var cfg Config
	err := config.LoadFrom(&cfg, all)
	return cfg, err
}

func TestFallbacksParse(t *testing.T) {
	cfg, err := loadAI(map[string]string{
		"LLM_FALLBACKS":         " gpt-4o-mini@https://primary.test/v1/ , claude-3@20240229@https://other.test/v1,llama3@http://10.0.0.5:8000/v1",
		"LLM_FALLBACK_API_KEYS": "," + fallbackKey + ",",
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.fallbacks()
	if err != nil {
		t.Fatal(err)
	}
	want := []fallback{
		// The primary's endpoint with no key of its own: the primary's key.
		{model: "gpt-4o-mini", baseURL: "https://primary.test/v1/", key: primaryKey},
		// An '@' in a model name is the model's.
		{model: "claude-3@20240229", baseURL: "https://other.test/v1", key: fallbackKey},
		// Another host with no key: none, never the primary's.
		{model: "llama3", baseURL: "http://10.0.0.5:8000/v1", key: ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fallbacks\n got %+v\nwant %+v", got, want)
	}
	if m := config.Redact(&cfg)["LLM_FALLBACK_API_KEYS"]; strings.Contains(m, fallbackKey) || m == "" {
		t.Errorf("LLM_FALLBACK_API_KEYS logged as %q, want it masked", m)
	}
}

// Bad settings stop the service with the variable and the entry named,
// never a key or a URL (which may carry one).
func TestFallbacksRefused(t *testing.T) {
	tests := []struct {
		name, fallbacks, keys, want string
	}{
		{"no base URL", "gpt-4o-mini", "", "LLM_FALLBACKS: entry 1: want model@base_url"},
		{"a key pasted as an entry", "gpt-4o-mini@https://ok.test/v1," + fallbackKey, "", "LLM_FALLBACKS: entry 2: want model@base_url"},
		{"not http", "m@http" + "x://" + fallbackKey, "", "LLM_FALLBACKS: entry 1: the base URL must be an http(s) URL"},
		{"credentials in the URL", "m@https://user:" + fallbackKey + "@host.test/v1", "", "LLM_FALLBACKS: entry 1: the base URL must not carry credentials"},
		{"no model", "@https://host.test/v1", "", "LLM_FALLBACKS: entry 1: the model name must not be empty"},
		{"an empty entry", "m@https://host.test/v1,,n@https://host.test/v1", "", "LLM_FALLBACKS: entry 2: want model@base_url"},
		{"too many", strings.Repeat("m@https://host.test/v1,", maxFallbacks) + "m@https://host.test/v1", "", "LLM_FALLBACKS: 9 entries, at most 8"},
		{"fewer keys than entries", "m@https://a.test/v1,n@https://b.test/v1", fallbackKey, "LLM_FALLBACK_API_KEYS: 1 keys for 2 LLM_FALLBACKS entries"},
		{"more keys than entries", "m@https://a.test/v1", fallbackKey + "," + fallbackKey, "LLM_FALLBACK_API_KEYS: 2 keys for 1 LLM_FALLBACKS entries"},
		{"keys without fallbacks", "", fallbackKey, "LLM_FALLBACK_API_KEYS: set without LLM_FALLBACKS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadAI(map[string]string{"LLM_FALLBACKS": tc.fallbacks, "LLM_FALLBACK_API_KEYS": tc.keys})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			for _, secret := range []string{fallbackKey, primaryKey, "host.test", "ok.test"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q quotes %q", err, secret)
				}
			}
		})
	}
}

func TestTargetNames(t *testing.T) {
	got := targetNames(
		[]string{"gpt-4o", "gpt-4o-mini", "gpt-4o", "gpt-4o", "llama3"},
		[]string{"https://a.test/v1", "https://a.test/v1", "https://b.test:8443/v1", "https://a.test/v1", "http://c.test/v1"})
	want := []string{"gpt-4o@a.test", "gpt-4o-mini", "gpt-4o@b.test:8443", "gpt-4o@a.test#2", "llama3"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("names %q, want %q", got, want)
	}
}

// NewModel routes over the primary and the fallbacks only when there are
// fallbacks; an unvalidated bad setting leaves the primary alone.
func TestNewModelRoutesFallbacks(t *testing.T) {
	cfg, err := loadAI(map[string]string{"LLM_FALLBACKS": "gpt-4o@https://other.test/v1,gpt-4o-mini@https://other.test/v1"})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := NewModel(cfg).(*llm.Router)
	if !ok {
		t.Fatalf("NewModel with fallbacks made %T, want a router", NewModel(cfg))
	}
	if got, want := r.Targets(), []string{"gpt-4o@primary.test", "gpt-4o@other.test", "gpt-4o-mini"}; !reflect.DeepEqual(got, want) {
		t.Errorf("targets %q, want %q", got, want)
	}
	cfg.Fallbacks = nil
	if _, ok := NewModel(cfg).(*llm.OpenAI); !ok {
		t.Errorf("NewModel without fallbacks made %T, want the OpenAI client", NewModel(cfg))
	}
	cfg.Fallbacks = []string{"no-url"}
	if _, ok := NewModel(cfg).(*llm.OpenAI); !ok {
		t.Errorf("NewModel with a bad LLM_FALLBACKS made %T, want the OpenAI client", NewModel(cfg))
	}
}
