package process

import (
	"maps"
	"os"
	"strings"
)

// Environ is the process environment as a map, for callers that start from
// it and add their own settings (the dev stack) instead of calling
// os.Setenv, which every other part of the process would then see too.
func Environ() map[string]string {
	env := make(map[string]string)
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// With is a copy of env with key set to value; env is left as it was.
func With(env map[string]string, key, value string) map[string]string {
	out := maps.Clone(env)
	if out == nil {
		out = map[string]string{}
	}
	out[key] = value
	return out
}
