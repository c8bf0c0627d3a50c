package aiconsumer

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/chatrelay/chat/internal/llm"
)

// maxFallbacks bounds LLM_FALLBACKS: every target is a metric label value,
// and a message may try them all before it is answered.
const maxFallbacks = 8

// fallback is one LLM_FALLBACKS entry with its key.
type fallback struct {
	model, baseURL, key string
}

// fallbacks parses LLM_FALLBACKS (model@base_url entries, comma-separated,
// tried in order after the primary) with their keys from
// LLM_FALLBACK_API_KEYS (one per entry, in the same order). An empty key
// means the primary's OPENAI_API_KEY when the entry's base URL is
// OPENAI_BASE_URL (another model of the same provider account), and no key
// otherwise: the primary's key is never sent to another host.
//
// Errors name the variable and the entry's position, never its text: an
// entry may hold a key pasted in the wrong place, a URL its credentials.
func (c Config) fallbacks() ([]fallback, error) {
	if len(c.Fallbacks) == 0 {
		if strings.TrimSpace(c.FallbackAPIKeys) != "" {
			return nil, errors.New("LLM_FALLBACK_API_KEYS: set without LLM_FALLBACKS")
		}
		return nil, nil
	}
	if len(c.Fallbacks) > maxFallbacks {
		return nil, fmt.Errorf("LLM_FALLBACKS: %d entries, at most %d", len(c.Fallbacks), maxFallbacks)
	}
	keys, err := fallbackKeys(c.FallbackAPIKeys, len(c.Fallbacks))
	if err != nil {
		return nil, err
	}
	out := make([]fallback, 0, len(c.Fallbacks))
	for i, entry := range c.Fallbacks {
		model, base, err := parseFallback(strings.TrimSpace(entry))
		if err != nil {
			return nil, fmt.Errorf("LLM_FALLBACKS: entry %d: %w", i+1, err)
		}
		key := keys[i]
		if key == "" && sameEndpoint(base, c.BaseURL) {
			key = c.APIKey
		}
		out = append(out, fallback{model: model, baseURL: base, key: key})
	}
	return out, nil
}

// fallbackKeys splits LLM_FALLBACK_API_KEYS into n keys: unset means n
// empty keys; otherwise there must be one (maybe empty) per entry, so a
// forgotten key cannot shift the others onto the wrong endpoints.
func fallbackKeys(raw string, n int) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		return make([]string, n), nil
	}
	keys := strings.Split(raw, ",")
	if len(keys) != n {
		return nil, fmt.Errorf("LLM_FALLBACK_API_KEYS: %d keys for %d LLM_FALLBACKS entries; give one per entry, in order (empty for none)", len(keys), n)
	}
	for i := range keys {
		keys[i] = strings.TrimSpace(keys[i])
	}
	return keys, nil
}

// parseFallback splits "model@base_url" at the last "@http": a model name
// may hold an '@' (a version), a base URL may not carry credentials.
func parseFallback(entry string) (model, base string, err error) {
	at := strings.LastIndex(entry, "@http")
	if at < 0 {
		return "", "", errors.New("want model@base_url, e.g. gpt-4o-mini@https://host/v1")
	}
	model, base = entry[:at], entry[at+1:]
	if model == "" || strings.ContainsAny(model, " \t,") {
		return "", "", errors.New("the model name must not be empty or hold spaces")
	}
	u, err := url.Parse(base)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return "", "", errors.New("the base URL must be an http(s) URL")
	case u.User != nil:
		return "", "", errors.New("the base URL must not carry credentials; keys go in LLM_FALLBACK_API_KEYS")
	}
	return model, base, nil
}

func sameEndpoint(a, b string) bool {
	return strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}

// targetNames names the targets (primary first) for metrics and spans: by
// model, as model@host where one model is configured at several
// endpoints, and with #n after the first where it is configured twice at
// one host (two accounts). Configured, so bounded; distinct.
func targetNames(models, bases []string) []string {
	perModel := map[string]int{}
	for _, m := range models {
		perModel[m]++
	}
	seen := map[string]int{}
	names := make([]string, len(models))
	for i, m := range models {
		name := m
		if perModel[m] > 1 {
			host := bases[i]
			if u, err := url.Parse(bases[i]); err == nil && u.Host != "" {
				host = u.Host
			}
			name = m + "@" + host
		}
		if seen[name]++; seen[name] > 1 {
			name = fmt.Sprintf("%s#%d", name, seen[name])
		}
		names[i] = name
	}
	return names
}

// newRouter is the primary and the fallbacks behind one llm.Router, each
// with its own client (and so its own key, timeout and breaker).
func newRouter(cfg Config, primary llm.Model, fbs []fallback) *llm.Router {
	models, bases := []string{cfg.Model}, []string{cfg.BaseURL}
	clients := []llm.Model{primary}
	for _, f := range fbs {
		models, bases = append(models, f.model), append(bases, f.baseURL)
		clients = append(clients, llm.NewOpenAI(llm.OpenAIConfig{APIKey: f.key, BaseURL: f.baseURL, Model: f.model, Timeout: cfg.Timeout}))
	}
	names := targetNames(models, bases)
	targets := make([]llm.Target, len(clients))
	for i, c := range clients {
		targets[i] = llm.Target{Name: names[i], Model: c}
	}
	return llm.NewRouter(targets, cfg.LLM)
}

// routed is the model the service calls: the Router NewModel built when
// fallbacks are configured, or the one model it was given as a router of
// one target (the same retries and breaker as a Resilient). Either way an
// answer names its target, and the model metrics are by target.
func routed(model llm.Model, p llm.Policy, m *metrics) *llm.Router {
	r, ok := model.(*llm.Router)
	if !ok {
		r = llm.NewRouter([]llm.Target{{Name: model.Name(), Model: model}}, p)
	}
	m.addModels(r.Targets())
	r.Observe(m)
	return r
}
