// Package rediskeys is the one place that spells the system's Redis keys and
// channels. Every other package asks here, so a key's format is written once
// and the table below is the whole layout.
//
// Every key of a user carries the {userid} hash tag: on a Redis Cluster a
// user's keys hash to one slot, so the scripts that touch several of them
// (the relay's append-and-publish, the replay's marker-and-range) run there,
// and sharded pub/sub keeps a user's channel on the same node.
//
//	key / channel                       function         type        written by        what
//	chat:{u1}:live                      Live             channel     message-relay     live answers for the user's sockets (pub/sub)
//	chat:{u1}:history                   History          stream      message-relay     questions and answers; entry ids are resume cursors
//	chat:{u1}:memory                    Memory           list        message-relay     latest turns, "type\ncontent", newest first
//	chat:{u1}:appended:<response id>    Appended         string      message-relay     the cursor of an answer already appended (idempotency)
//	chat:{u1}:delivered                 Delivered        string      websocket-server  cursor of the last answer a socket of the user got
//	chat:{u1}:answer:<message id>       Answer           string      ai-consumer       the answer to a message (the model is asked once)
//	chat:{u1}:tokens:2026-05-01         DailyTokens      integer     ai-consumer       model tokens used (and reserved) that UTC day
//	chat:{u1}:sockets                   UserSockets      sorted set  websocket-server  the user's socket slots, scored by expiry
//	rate:chat:{u1}:msgrate              UserMessages     GCRA        websocket-server  message rate (redis_rate's format)
//	rate:chat:ip:{203.0.113.9}:connects IPConnects       GCRA        websocket-server  connection attempts per address (or IPv6 /64)
//	rate:chat:{llm-global}:rpm          ModelRequests    GCRA        ai-consumer       model requests per minute, all instances
//	rate:chat:{llm-global}:tpm          ModelTokens      GCRA        ai-consumer       model tokens per minute, all instances
//	chat:{llm-global}:sockets           UserSockets(ModelTag)  sorted set  ai-consumer  model calls in flight, all instances
//
// The model quota is one account-wide pseudo-user, ModelTag: its keys share
// one slot like a user's do. Its call slots are the same expiring-slot set
// the user sockets use, so they carry that name.
package rediskeys

import (
	"strings"
	"time"
)

// ModelTag is the hash tag of the shared model quota's keys.
const ModelTag = "llm-global"

const (
	userPrefix  = "chat:{"
	liveSuffix  = "}:live"
	tagSuffix   = "}:"
	ipKeyPrefix = "chat:ip:{"
)

// userKey is a key of user's: its {userid} hash tag, then what it holds.
func userKey(user, what string) string { return userPrefix + user + tagSuffix + what }

// Live is the pub/sub channel of a user's live traffic.
func Live(user string) string { return userPrefix + user + liveSuffix }

// UserFromLive inverts Live: the user whose channel ch is.
func UserFromLive(ch string) (string, bool) {
	if !strings.HasPrefix(ch, userPrefix) || !strings.HasSuffix(ch, liveSuffix) {
		return "", false
	}
	return ch[len(userPrefix) : len(ch)-len(liveSuffix)], true
}

// History is the user's history stream.
func History(user string) string { return userKey(user, "history") }

// Memory is the user's list of latest turns, the model's conversation memory.
func Memory(user string) string { return userKey(user, "memory") }

// Appended marks an answer as appended to the history and holds its cursor.
func Appended(user, responseID string) string { return userKey(user, "appended:"+responseID) }

// Delivered is the user-wide marker of the last answer delivered.
func Delivered(user string) string { return userKey(user, "delivered") }

// Answer holds the answer to the user's message messageID.
func Answer(user, messageID string) string { return userKey(user, "answer:"+messageID) }

// DailyTokens is the user's token counter for the UTC day of t.
func DailyTokens(user string, t time.Time) string {
	return userKey(user, "tokens:"+t.UTC().Format(time.DateOnly))
}

// UserSockets is the sorted set of the user's socket slots.
func UserSockets(user string) string { return userKey(user, "sockets") }

// UserMessages is the user's message-rate key. Its "rate:" prefix is
// redis_rate's, which kept this key before ratelimit's own script did (the
// script keeps its name and value, so versions can run side by side).
func UserMessages(user string) string { return "rate:" + userKey(user, "msgrate") }

// IPConnects is the connection-attempt key of a client address bucket (see
// ratelimit.IPBucket), as given to redis_rate.
func IPConnects(bucket string) string { return ipKeyPrefix + bucket + "}:connects" }

// ModelRequests is the shared model requests-per-minute key (redis_rate).
func ModelRequests() string { return userKey(ModelTag, "rpm") }

// ModelTokens is the shared model tokens-per-minute key (redis_rate).
func ModelTokens() string { return userKey(ModelTag, "tpm") }
