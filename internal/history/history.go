// Package history keeps each user's conversation in a capped Redis Stream:
// the relay appends every question and answer there before publishing, the
// gateway replays it to reconnecting clients (resume), and the ai-consumer
// reads it as the model's conversation memory.
//
// A stream entry id is the resume cursor. Every key of a user shares the
// {userid} hash tag, so the scripts below touch one Cluster slot.
package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/redisbatch"
	"github.com/chatrelay/chat/internal/redisbus"
	"github.com/chatrelay/chat/internal/rediskeys"
)

// Config bounds the history.
type Config struct {
	MaxLen int64         `env:"HISTORY_MAX_LEN" envDefault:"200"`
	TTL    time.Duration `env:"HISTORY_TTL" envDefault:"168h"`
	// WaitReplicas is how many replicas must hold an appended answer
	// before the append counts as done (and the relay commits its
	// record): Redis replicates asynchronously, so a master that dies
	// right after acknowledging a write may take it along, and the
	// replica promoted in its place never had it. -1 (the default) is 1
	// on a Redis Cluster, where every master is expected to have a
	// replica, and 0 elsewhere (a single server has none; with Sentinel,
	// set it). An answer that does not reach them within WaitTimeout is
	// retried: answers wait while a shard has no live replica, rather
	// than being at the mercy of the next failover.
	WaitReplicas int           `env:"HISTORY_WAIT_REPLICAS" envDefault:"-1"`
	WaitTimeout  time.Duration `env:"HISTORY_WAIT_TIMEOUT" envDefault:"2s"`
}

// Validate checks the settings.
func (c Config) Validate() error {
	if c.MaxLen < 2 {
		return errors.New("HISTORY_MAX_LEN: must be at least 2")
	}
	if c.TTL < time.Minute {
		return errors.New("HISTORY_TTL: must be at least 1m")
	}
	if c.WaitReplicas < -1 {
		return errors.New("HISTORY_WAIT_REPLICAS: must be -1 (1 on a cluster, else 0) or a number of replicas")
	}
	if c.WaitTimeout <= 0 {
		return errors.New("HISTORY_WAIT_TIMEOUT: must be positive")
	}
	return nil
}

// Keys of a user (their layout is rediskeys').
func streamKey(user string) string    { return rediskeys.History(user) }
func deliveredKey(user string) string { return rediskeys.Delivered(user) }

// Store reads and writes histories.
type Store struct {
	rdb redis.UniversalClient
	// batch carries the appends: concurrent ones share pipelines
	// (redisbatch), one round trip for many records under load.
	batch   redisbatch.Pipeliner
	cfg     Config
	publish string // PUBLISH, or SPUBLISH on a cluster (redisbus.PublishCommand)
	// replicas is how many replicas an append waits for (cfg.WaitReplicas
	// resolved); 0: none, and the append publishes in the same round trip.
	replicas int
	// nodes are the batchers of the cluster's masters (masterBatch).
	nodesMu sync.Mutex
	nodes   map[*redis.Client]*redisbatch.Batcher
}

// New returns a store on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Store {
	s := &Store{rdb: rdb, batch: redisbatch.New(rdb, redisbatch.Defaults), cfg: cfg, publish: redisbus.PublishCommand(rdb), replicas: cfg.WaitReplicas,
		nodes: map[*redis.Client]*redisbatch.Batcher{}}
	if s.replicas < 0 {
		s.replicas = 0
		if redisbus.Clustered(rdb) {
			s.replicas = 1
		}
	}
	return s
}

// appendScript appends the question (if any) and the answer once per
// response id: a redelivered answer gets back the cursor of its first
// append, so a history never holds an answer twice. The same turns go, in
// compact form, to the front of the user's memory list (see Turn). Given a
// channel it then publishes head .. cursor .. tail there — again for a
// redelivered answer, whose first publish may not have happened — with the
// publish command it is given: SPUBLISH on a cluster, where the channel
// carries the keys' {userid} hash tag and so lives on the script's slot.
//
//	KEYS  history (the stream), appended (this answer's marker), memory (the list)
//	ARGV  the fields of appendArgs, in order (appendArgs.argv)
var appendScript = redis.NewScript(`
local maxlen, ttl, question, answer, question_turn, answer_turn, memory_len, channel, head, tail, publish = unpack(ARGV)
local history, appended, memory = KEYS[1], KEYS[2], KEYS[3]
local id = redis.call('GET', appended)
if not id then
  if question ~= '' then
    redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'e', question)
    redis.call('LPUSH', memory, question_turn)
  end
  id = redis.call('XADD', history, 'MAXLEN', '~', maxlen, '*', 'e', answer)
  redis.call('LPUSH', memory, answer_turn)
  redis.call('LTRIM', memory, 0, memory_len - 1)
  redis.call('PEXPIRE', history, ttl)
  redis.call('PEXPIRE', memory, ttl)
  redis.call('SET', appended, id, 'PX', ttl)
end
if channel ~= '' then
  redis.call(publish, channel, head .. id .. tail)
end
return id
`)

// appendArgs are appendScript's arguments by name.
type appendArgs struct {
	MaxLen       int64  // the stream's cap (XADD MAXLEN ~)
	TTLMillis    int64  // expiry of the stream, the memory list and the marker
	Question     string // the question's envelope; "" when the answer carries none
	Answer       string // the answer's envelope as stored (no cursor, no trace)
	QuestionTurn string // the question as a memory turn (Turn.compact)
	AnswerTurn   string // the answer as a memory turn
	MemoryLen    int    // how many turns the memory list keeps
	Channel      string // where to publish; "" for no publish
	Head, Tail   string // the published payload before and after the cursor
	Publish      string // PUBLISH or SPUBLISH
}

// argv is the ARGV list, in the order the script unpacks it.
func (a appendArgs) argv() []any {
	return []any{a.MaxLen, a.TTLMillis, a.Question, a.Answer, a.QuestionTurn, a.AnswerTurn, a.MemoryLen, a.Channel, a.Head, a.Tail, a.Publish}
}

// MemoryEntries is how many of a user's latest entries (questions and
// answers) the memory list keeps: the ai-consumer's conversation memory
// reads at most this many from it, more from the history stream.
const MemoryEntries = 64

// Turn is a history entry as the conversation memory needs it. Besides the
// stream, each user has a list of their latest turns as "type\ncontent"
// strings, newest first, which the ai-consumer reads for every message:
// decoding twenty whole envelopes from the stream for each one was the
// largest part of its CPU time.
type Turn struct {
	Type    string `json:"type"`
	Content string `json:"content"`
}

func (t Turn) compact() string { return t.Type + "\n" + t.Content }

func parseTurn(s string) (Turn, bool) {
	typ, content, ok := strings.Cut(s, "\n")
	return Turn{Type: typ, Content: content}, ok && typ != ""
}

// Append stores answer (and the question it carries) in the user's history
// and returns the answer's cursor.
func (s *Store) Append(ctx context.Context, answer *envelope.Envelope) (string, error) {
	return s.appendAndPublish(ctx, answer, "", "", "")
}

// AppendPublish is Append and then PUBLISH of payload on channel, with the
// answer's cursor written where placeholder is, in one round trip: the
// payload must carry the cursor, which only the append makes. placeholder
// must occur in payload exactly once (a fresh random id does).
func (s *Store) AppendPublish(ctx context.Context, answer *envelope.Envelope, channel string, payload []byte, placeholder string) (string, error) {
	i := bytes.Index(payload, []byte(placeholder))
	if channel == "" || placeholder == "" || i < 0 || bytes.Contains(payload[i+len(placeholder):], []byte(placeholder)) {
		return "", fmt.Errorf("history append for %s: need a channel and a payload holding the cursor placeholder once", answer.UserID)
	}
	return s.appendAndPublish(ctx, answer, channel, string(payload[:i]), string(payload[i+len(placeholder):]))
}

// appendAndPublish runs appendScript; channel "" appends without publishing.
func (s *Store) appendAndPublish(ctx context.Context, answer *envelope.Envelope, channel, head, tail string) (string, error) {
	question := ""
	if answer.Question != "" {
		q := &envelope.Envelope{
			Type: envelope.TypeMessage, ID: answer.ReplyTo, UserID: answer.UserID, Content: answer.Question,
			ClientID: answer.ClientID, CorrelationID: answer.CorrelationID, Timestamp: answer.AcceptedAt,
		}
		b, err := envelope.Marshal(q)
		if err != nil {
			return "", fmt.Errorf("history append for %s: %w", answer.UserID, err)
		}
		question = string(b)
	}
	stored := *answer
	stored.Question, stored.Cursor, stored.TraceParent, stored.TraceState = "", "", "", ""
	b, err := envelope.Marshal(&stored)
	if err != nil {
		return "", fmt.Errorf("history append for %s: %w", answer.UserID, err)
	}
	args := appendArgs{
		MaxLen: s.cfg.MaxLen, TTLMillis: s.cfg.TTL.Milliseconds(), Question: question, Answer: string(b),
		QuestionTurn: Turn{Type: envelope.TypeMessage, Content: answer.Question}.compact(),
		AnswerTurn:   Turn{Type: answer.Type, Content: answer.Content}.compact(),
		MemoryLen:    MemoryEntries, Channel: channel, Head: head, Tail: tail, Publish: s.publish,
	}
	keys := []string{rediskeys.History(answer.UserID), rediskeys.Appended(answer.UserID, answer.ID), rediskeys.Memory(answer.UserID)}
	if s.replicas > 0 {
		return s.appendReplicated(ctx, answer.UserID, keys, args)
	}
	id, err := redisbatch.RunScript(ctx, s.batch, s.rdb, appendScript, keys, args.argv()...).Text()
	if err != nil {
		return "", fmt.Errorf("history append for %s: %w", answer.UserID, err)
	}
	return id, nil
}

// appendReplicated appends and waits for s.replicas replicas to hold the
// append before anything is published, so an answer a client sees is one
// the next failover keeps. On the user's master, in one round trip: the
// script (without its publish), then WAIT — which has no key, so it must
// go to that master's own connection, not through the cluster client's
// routing (concurrent appends to one master share its pipelines, each
// with its WAIT). Then the publish, with the cursor the append made. Fewer
// replicas in time is an error: the caller retries, and the append, being
// idempotent per response id, is not repeated on a master that kept it
// (nor published twice live unless retried after a publish).
func (s *Store) appendReplicated(ctx context.Context, user string, keys []string, args appendArgs) (string, error) {
	channel, head, tail := args.Channel, args.Head, args.Tail
	args.Channel, args.Head, args.Tail = "", "", ""
	node, err := s.masterBatch(ctx, keys[0])
	if err != nil {
		return "", fmt.Errorf("history append for %s: %w", user, err)
	}
	run := func(eval bool) (script, wait *redis.Cmd, err error) {
		_, err = node.Pipelined(ctx, func(p redis.Pipeliner) error {
			if eval {
				script = appendScript.Eval(ctx, p, keys, args.argv()...)
			} else {
				script = appendScript.EvalSha(ctx, p, keys, args.argv()...)
			}
			wait = p.Do(ctx, "WAIT", s.replicas, s.cfg.WaitTimeout.Milliseconds())
			return nil
		})
		return script, wait, err
	}
	script, wait, err := run(false)
	// script is nil when the call gave up before its pipeline was sent.
	if script != nil && redis.HasErrorPrefix(script.Err(), "NOSCRIPT") {
		script, wait, err = run(true)
	}
	if err != nil {
		s.reload(ctx)
		return "", fmt.Errorf("history append for %s: %w", user, err)
	}
	id, err := script.Text()
	if err != nil {
		return "", fmt.Errorf("history append for %s: %w", user, err)
	}
	n, err := wait.Int64()
	switch {
	case err != nil:
		return "", fmt.Errorf("history append for %s: wait for replicas: %w", user, err)
	case n < int64(s.replicas):
		return "", fmt.Errorf("history append for %s: %w (%d of %d within %v)", user, ErrNotReplicated, n, s.replicas, s.cfg.WaitTimeout)
	case channel == "":
		return id, nil
	}
	publish := s.rdb.Publish
	if s.publish == "SPUBLISH" {
		publish = s.rdb.SPublish
	}
	if err := publish(ctx, channel, head+id+tail).Err(); err != nil {
		return "", fmt.Errorf("history publish for %s: %w", user, err)
	}
	return id, nil
}

// ErrNotReplicated is the error of an append that too few replicas
// confirmed in time: it is retried, not committed.
var ErrNotReplicated = errors.New("the append did not reach enough replicas")

// masterBatch is the pipeliner of the node that serves key: a batcher on
// the master of its slot on a cluster (one per master client go-redis
// hands out), the store's own elsewhere.
func (s *Store) masterBatch(ctx context.Context, key string) (redisbatch.Pipeliner, error) {
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return s.batch, nil
	}
	m, err := c.MasterForKey(ctx, key)
	if err != nil {
		s.reload(ctx)
		return nil, fmt.Errorf("master for %s: %w", key, err)
	}
	s.nodesMu.Lock()
	defer s.nodesMu.Unlock()
	b, ok := s.nodes[m]
	if !ok {
		b = redisbatch.New(m, redisbatch.Defaults)
		s.nodes[m] = b
	}
	return b, nil
}

// reload asks a cluster client to read its slot map again: a command on
// one node's own connection bypasses the cluster client (and its reload on
// failures, redisbus.NewClient).
func (s *Store) reload(ctx context.Context) {
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		c.ReloadState(ctx)
	}
}

// turnsOldestFirst decodes XREVRANGE entries into turns, oldest first
// (only the type and the text), for memories longer than the list keeps or
// histories older than it.
func turnsOldestFirst(msgs []redis.XMessage) []Turn {
	out := make([]Turn, 0, len(msgs))
	for i := len(msgs) - 1; i >= 0; i-- {
		raw, _ := msgs[i].Values["e"].(string)
		var t Turn
		if err := json.Unmarshal([]byte(raw), &t); err != nil || t.Type == "" {
			continue // not an entry this version wrote; the memory does without it
		}
		out = append(out, t)
	}
	return out
}

func decode(m redis.XMessage) *envelope.Envelope {
	raw, _ := m.Values["e"].(string)
	e, err := envelope.Unmarshal([]byte(raw))
	if err != nil {
		return nil
	}
	return e
}
