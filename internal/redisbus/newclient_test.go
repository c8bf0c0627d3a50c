package redisbus

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestNewClientErrorsHideThePassword: REDIS_URL errors name the variable and
// say what is wrong, and never show the password, whole or in part, however
// the URL is broken. A '/' in a password ends the host early for a URL
// parser, so a bad "port" or "database number" may be a piece of it.
func TestNewClientErrorsHideThePassword(t *testing.T) {
	const pw = "Zq9xW2vPk7Lm"
	for _, tc := range []struct{ name, url string }{
		{"bad port", "redis://user:" + pw + "@localhost:port/0"},
		{"'/' in the password", "redis://user:Zq9xW2/vPk7Lm@localhost:6379/0"},
		{"'/' after a numeric start", "redis://user:123456/Zq9xW2vPk7Lm@localhost:6379/0"},
		{"'?' in the password", "redis://:Zq9xW2?vPk7Lm@localhost:6379/0"},
		{"'#' in the password", "redis://:Zq9xW2#vPk7Lm@localhost:6379/0"},
		{"bad escape", "redis://user:Zq9xW2%zzvPk7Lm@localhost:6379/0"},
		{"space in the password", "redis://user:Zq9xW2 vPk7Lm@localhost:6379/0"},
		{"space in the host", "redis://user:" + pw + "@local host:6379/0"},
		{"control character", "redis://user:" + pw + "@localhost:6379/0\n"},
		{"no scheme separator", "redis:user:" + pw + "@localhost:6379"},
		{"bad database", "redis://user:" + pw + "@localhost:6379/x" + pw},
		{"unknown option", "redis://user:" + pw + "@localhost:6379/0?" + pw + "=1"},
		{"bad cluster addr", "redis+cluster://user:" + pw + "@localhost:6379?addr=" + pw},
		{"sentinel password in the query", "redis+sentinel://localhost:26379?master_name=m&password=" + pw + "&db=" + pw},
		{"unknown topology", "redis+bogus://user:" + pw + "@localhost:6379"},
		{"other scheme", "http://user:" + pw + "@localhost:6379"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url)
			if err == nil {
				_ = c.Close()
				t.Fatalf("%q accepted", tc.url)
			}
			msg := err.Error()
			if !strings.Contains(msg, "REDIS_URL") {
				t.Fatalf("the error does not name REDIS_URL: %s", msg)
			}
			for i := 0; i+5 <= len(pw); i++ {
				if strings.Contains(msg, pw[i:i+5]) {
					t.Fatalf("the error shows %q of the password: %s", pw[i:i+5], msg)
				}
			}
		})
	}
}

// TestNewClientEncodedPassword: the advice the errors give works: a password
// with '/', '?', '#', '@' and '%' percent-encoded reaches go-redis intact.
func TestNewClientEncodedPassword(t *testing.T) {
	c, err := NewClient("redis://:p%2Fa%3Fs%23s%40w%25d@localhost:6379/1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.(*redis.Client).Options().Password; got != "p/a?s#s@w%d" {
		t.Fatalf("password %q", got)
	}
}
