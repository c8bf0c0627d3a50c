// Package config loads a service's configuration struct from the environment.
//
// Fields are declared with `env:"NAME"` and `envDefault:"…"` tags (caarlos0/env);
// fields tagged `secret:"true"` are masked by Redact so a config dump can be
// logged. Errors always name the environment variable, never the Go field, so
// an operator can fix a bad deployment without reading the code.
package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/caarlos0/env/v11"
)

// Load fills dst (a pointer to a struct) from the process environment.
func Load(dst any) error {
	return LoadFrom(dst, nil)
}

// LoadFrom is Load with an explicit environment (nil means the process's).
func LoadFrom(dst any, environ map[string]string) error {
	opts := env.Options{Environment: environ}
	if err := env.ParseWithOptions(dst, opts); err != nil {
		return translate(dst, err)
	}
	if v, ok := dst.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	return nil
}

// translate rewrites caarlos0/env errors, which name Go fields, so that they
// name the environment variable instead.
func translate(dst any, err error) error {
	names := envNames(reflect.TypeOf(dst))
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("config: %w", err)
	}
	msgs := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			name := names[pe.Name]
			if name == "" {
				name = pe.Name
			}
			msgs = append(msgs, fmt.Sprintf("%s: invalid value: %v", name, unwrapAll(pe.Err)))
			continue
		}
		msgs = append(msgs, e.Error())
	}
	return fmt.Errorf("config: %s: %w", strings.Join(msgs, "; "), err)
}

func unwrapAll(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func envNames(t reflect.Type) map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if f.Type.Kind() == reflect.Struct && name == "" {
				walk(f.Type, prefix+f.Tag.Get("envPrefix"))
				continue
			}
			if name != "" {
				out[f.Name] = prefix + name
			}
		}
	}
	walk(t, "")
	return out
}

// Redact returns the configuration as NAME → value for logging, with every
// field tagged `secret:"true"` masked. An empty secret shows as "" so that an
// operator can still see that it is unset.
func Redact(cfg any) map[string]string {
	out := map[string]string{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return
			}
			v = v.Elem()
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if f.Type.Kind() == reflect.Struct && name == "" {
				walk(v.Field(i), prefix+f.Tag.Get("envPrefix"))
				continue
			}
			if name == "" {
				continue
			}
			val := fmt.Sprint(v.Field(i).Interface())
			if f.Tag.Get("secret") == "true" && val != "" {
				val = "*****"
			}
			val = maskURLPasswords(val)
			out[prefix+name] = val
		}
	}
	walk(reflect.ValueOf(cfg), "")
	return out
}

// maskURLPasswords masks the password of every URL in a value as Redact
// renders it (a list is comma- or space-separated), so that a setting not
// secret as a whole, such as an endpoint, does not show a password it
// carries. It works on the text rather than with url.Parse: a password with
// a '/' or '?' does not parse, and would be shown whole.
func maskURLPasswords(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || strings.IndexByte(", []", s[i]) >= 0 {
			b.WriteString(maskURLPassword(s[start:i]))
			if i < len(s) {
				b.WriteByte(s[i])
			}
			start = i + 1
		}
	}
	return b.String()
}

// maskURLPassword masks what lies between the first ':' after "scheme://"
// and the last '@'. In a URL whose query holds an '@' after a ':' it masks
// too much, which only costs a log line some detail.
func maskURLPassword(s string) string {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return s
	}
	return s[:len(s)-len(rest)] + user + ":xxxxx" + rest[at:]
}

// LogValue renders Redact's map as a stable, sorted list for slog.
func LogValue(cfg any) []any {
	m := Redact(cfg)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		out = append(out, k, m[k])
	}
	return out
}
