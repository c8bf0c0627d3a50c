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
