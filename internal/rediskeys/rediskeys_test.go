package rediskeys

import (
	"strings"
	"testing"
	"time"
)

// The formats are a contract with data already in Redis (a rolling deploy
// reads what the previous version wrote) and with the docs' table: a change
// here must be deliberate.
func TestLayout(t *testing.T) {
	day := time.Date(2026, 5, 1, 23, 30, 0, 0, time.FixedZone("east", 3600*5))
	for _, c := range []struct{ got, want string }{
		{Live("u1"), "chat:{u1}:live"},
		{History("u1"), "chat:{u1}:history"},
		{Memory("u1"), "chat:{u1}:memory"},
		{Appended("u1", "r1"), "chat:{u1}:appended:r1"},
		{Delivered("u1"), "chat:{u1}:delivered"},
		{Answer("u1", "m1"), "chat:{u1}:answer:m1"},
		{DailyTokens("u1", day), "chat:{u1}:tokens:2026-05-01"},
		{UserSockets("u1"), "chat:{u1}:sockets"},
		{UserMessages("u1"), "rate:chat:{u1}:msgrate"},
		{IPConnects("203.0.113.9"), "chat:ip:{203.0.113.9}:connects"},
		{ModelRequests(), "chat:{llm-global}:rpm"},
		{ModelTokens(), "chat:{llm-global}:tpm"},
		{UserSockets(ModelTag), "chat:{llm-global}:sockets"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

// Every per-user key hashes to the user's slot on a Cluster.
func TestUserKeysShareTheHashTag(t *testing.T) {
	const user = "a.b:c-1"
	for _, k := range []string{Live(user), History(user), Memory(user), Appended(user, "x"), Delivered(user),
		Answer(user, "x"), DailyTokens(user, time.Now()), UserSockets(user), UserMessages(user)} {
		if !strings.Contains(k, "{"+user+"}") {
			t.Errorf("%q lacks the {%s} hash tag", k, user)
		}
	}
}

func TestUserFromLive(t *testing.T) {
	if u, ok := UserFromLive(Live("u-1")); !ok || u != "u-1" {
		t.Fatalf("got %q %v", u, ok)
	}
	for _, ch := range []string{"other", "chat:{u1}:history", "chat:u1}:live", "chat:{u1:live"} {
		if u, ok := UserFromLive(ch); ok {
			t.Errorf("%q read as the channel of %q", ch, u)
		}
	}
}
