package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Addr    string        `env:"SAMPLE_ADDR" envDefault:":8080"`
	Count   int           `env:"SAMPLE_COUNT" envDefault:"3"`
	Timeout time.Duration `env:"SAMPLE_TIMEOUT" envDefault:"1s"`
	Secret  string        `env:"SAMPLE_SECRET" secret:"true"`
	Nested  nested
}

type nested struct {
	Level string `env:"SAMPLE_LEVEL" envDefault:"info"`
}

func (s sample) Validate() error {
	if s.Count < 1 {
		return errors.New("SAMPLE_COUNT: must be at least 1")
	}
	return nil
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, s sample)
	}{
		{name: "defaults", env: map[string]string{}, check: func(t *testing.T, s sample) {
			if s.Addr != ":8080" || s.Count != 3 || s.Timeout != time.Second || s.Nested.Level != "info" {
				t.Fatalf("defaults not applied: %+v", s)
			}
		}},
		{name: "override", env: map[string]string{"SAMPLE_COUNT": "7", "SAMPLE_LEVEL": "debug"}, check: func(t *testing.T, s sample) {
			if s.Count != 7 || s.Nested.Level != "debug" {
				t.Fatalf("override not applied: %+v", s)
			}
		}},
		{name: "bad int names the variable", env: map[string]string{"SAMPLE_COUNT": "many"}, wantErr: "SAMPLE_COUNT"},
		{name: "bad duration names the variable", env: map[string]string{"SAMPLE_TIMEOUT": "soon"}, wantErr: "SAMPLE_TIMEOUT"},
		{name: "validation names the variable", env: map[string]string{"SAMPLE_COUNT": "0"}, wantErr: "SAMPLE_COUNT: must be at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s sample
			err := LoadFrom(&s, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want error naming %q, got %v", tc.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestRedactMasksSecrets(t *testing.T) {
	s := sample{Addr: ":1", Secret: "hunter2"}
	m := Redact(s)
	if m["SAMPLE_SECRET"] != "*****" {
		t.Fatalf("secret not masked: %q", m["SAMPLE_SECRET"])
	}
	if m["SAMPLE_ADDR"] != ":1" || m["SAMPLE_LEVEL"] != "" {
		t.Fatalf("unexpected dump: %v", m)
	}
	for _, v := range LogValue(&s) {
		if v == "hunter2" {
			t.Fatal("LogValue leaked the secret")
		}
	}
	if Redact(sample{})["SAMPLE_SECRET"] != "" {
		t.Fatal("an unset secret should show as empty")
	}
}

// TestRedactMasksURLPasswords: a setting that is not secret as a whole (an
// endpoint such as OPENAI_BASE_URL) may still carry a password in its URL;
// the configuration logged at start must not show it, even in a URL that
// does not parse (a '/' in the password).
func TestRedactMasksURLPasswords(t *testing.T) {
	type endpoint struct {
		URL string `env:"SAMPLE_URL"`
	}
	for in, want := range map[string]string{
		"https://user:Zq9xW2vPk7Lm@proxy.example/v1":        "https://user:xxxxx@proxy.example/v1",
		"https://user:Zq9x/W2vP?k7Lm@proxy.example:8443/v1": "https://user:xxxxx@proxy.example:8443/v1",
		"a://u:Zq9xW2vPk7Lm@h1,b://Zq9xW2vPk7Lm:p2@h2":      "a://u:xxxxx@h1,b://Zq9xW2vPk7Lm:xxxxx@h2",
		"https://user@proxy.example/v1":                     "https://user@proxy.example/v1",
		"https://proxy.example/v1?to=me@example.com":        "https://proxy.example/v1?to=me@example.com",
		"[https://u:Zq9xW2vPk7Lm@h1 https://h2]":            "[https://u:xxxxx@h1 https://h2]",
		"localhost:9092,kafka:9092":                         "localhost:9092,kafka:9092",
	} {
		got := Redact(endpoint{in})["SAMPLE_URL"]
		if got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
		if strings.Contains(got, "Zq9x/W2vP?k7Lm") || strings.Contains(got, ":Zq9xW2vPk7Lm@") {
			t.Errorf("Redact(%q) shows the password: %q", in, got)
		}
	}
}
