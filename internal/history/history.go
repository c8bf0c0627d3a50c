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
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/rediskeys"
)

// Config bounds the history.
type Config struct {
	MaxLen int64         `env:"HISTORY_MAX_LEN" envDefault:"200"`
	TTL    time.Duration `env:"HISTORY_TTL" envDefault:"168h"`
}

// Validate checks the settings.
func (c Config) Validate() error {
	if c.MaxLen < 2 {
		return errors.New("HISTORY_MAX_LEN: must be at least 2")
	}
	if c.TTL < time.Minute {
		return errors.New("HISTORY_TTL: must be at least 1m")
	}
	return nil
}

// Keys of a user (their layout is rediskeys').
func streamKey(user string) string    { return rediskeys.History(user) }
func deliveredKey(user string) string { return rediskeys.Delivered(user) }

// Store reads and writes histories.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
}

// New returns a store on rdb.
func New(rdb redis.UniversalClient, cfg Config) *Store { return &Store{rdb: rdb, cfg: cfg} }

// appendScript appends the question (if any) and the answer once per
// response id: a redelivered answer gets back the cursor of its first
// append, so a history never holds an answer twice. The same turns go, in
// compact form, to the front of the user's memory list (see Turn). Given a
// channel it then publishes head .. cursor .. tail there — again for a
// redelivered answer, whose first publish may not have happened.
//
//	KEYS  history (the stream), appended (this answer's marker), memory (the list)
//	ARGV  the fields of appendArgs, in order (appendArgs.argv)
var appendScript = redis.NewScript(`
local maxlen, ttl, question, answer, question_turn, answer_turn, memory_len, channel, head, tail = unpack(ARGV)
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
  redis.call('PUBLISH', channel, head .. id .. tail)
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
}

// argv is the ARGV list, in the order the script unpacks it.
func (a appendArgs) argv() []any {
	return []any{a.MaxLen, a.TTLMillis, a.Question, a.Answer, a.QuestionTurn, a.AnswerTurn, a.MemoryLen, a.Channel, a.Head, a.Tail}
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
		MemoryLen:    MemoryEntries, Channel: channel, Head: head, Tail: tail,
	}
	keys := []string{rediskeys.History(answer.UserID), rediskeys.Appended(answer.UserID, answer.ID), rediskeys.Memory(answer.UserID)}
	id, err := appendScript.Run(ctx, s.rdb, keys, args.argv()...).Text()
	if err != nil {
		return "", fmt.Errorf("history append for %s: %w", answer.UserID, err)
	}
	return id, nil
}

// cursorRE is a Redis Stream entry id.
var cursorRE = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// ValidCursor reports whether c can be a resume cursor.
func ValidCursor(c string) bool { return cursorRE.MatchString(c) }

// Since returns up to limit answers (responses and errors) after cursor, in
// order, each with its Cursor set. An empty cursor means from the start.
func (s *Store) Since(ctx context.Context, user, cursor string, limit int64) ([]*envelope.Envelope, error) {
	start := "-"
	if cursor != "" {
		if !ValidCursor(cursor) {
			return nil, fmt.Errorf("invalid cursor %q", cursor)
		}
		start = "(" + cursor
	}
	msgs, err := s.rdb.XRangeN(ctx, streamKey(user), start, "+", limit).Result()
	if err != nil {
		return nil, fmt.Errorf("history read for %s: %w", user, err)
	}
	return answers(msgs), nil
}

// answers decodes the answers (responses and errors) among entries, each
// with its Cursor set; questions and undecodable entries are left out.
func answers(msgs []redis.XMessage) []*envelope.Envelope {
	var out []*envelope.Envelope
	for _, m := range msgs {
		e := decode(m)
		if e == nil || e.Type == envelope.TypeMessage {
			continue
		}
		e.Cursor = m.ID
		out = append(out, e)
	}
	return out
}

// sinceDeliveredScript reads the delivered marker and the answers after it
// in one round trip: a connect without a resume cursor needs both, and
// thousands of connects a second make the second trip count.
var sinceDeliveredScript = redis.NewScript(`
local c = redis.call('GET', KEYS[2])
local start = '-'
if c then start = '(' .. c end
return redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[1])
`)

// SinceDelivered is Since from the user's delivered marker (everything when
// there is none).
func (s *Store) SinceDelivered(ctx context.Context, user string, limit int64) ([]*envelope.Envelope, error) {
	res, err := sinceDeliveredScript.Run(ctx, s.rdb, []string{streamKey(user), deliveredKey(user)}, limit).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, nil // nothing after the marker
	}
	if err != nil {
		return nil, fmt.Errorf("history read for %s: %w", user, err)
	}
	msgs := make([]redis.XMessage, 0, len(res))
	for _, item := range res {
		if m, ok := scriptXMessage(item); ok {
			msgs = append(msgs, m)
		}
	}
	return answers(msgs), nil
}

// scriptXMessage is one XRANGE entry as a script returns it: [id, [field,
// value, …]].
func scriptXMessage(item any) (redis.XMessage, bool) {
	pair, ok := item.([]any)
	if !ok || len(pair) != 2 {
		return redis.XMessage{}, false
	}
	id, ok := pair[0].(string)
	if !ok {
		return redis.XMessage{}, false
	}
	fields, _ := pair[1].([]any)
	values := make(map[string]any, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		if k, ok := fields[i].(string); ok {
			values[k] = fields[i+1]
		}
	}
	return redis.XMessage{ID: id, Values: values}, true
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

// markScript moves the delivered marker forward only.
var markScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then
  local cm, cs = string.match(cur, '^(%d+)-(%d+)$')
  local nm, ns = string.match(ARGV[1], '^(%d+)-(%d+)$')
  if cm and nm then
    cm, cs, nm, ns = tonumber(cm), tonumber(cs), tonumber(nm), tonumber(ns)
    if nm < cm or (nm == cm and ns <= cs) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// MarkDelivered records that the user's answers up to cursor reached a
// socket, so a later connection without a cursor starts after it.
func (s *Store) MarkDelivered(ctx context.Context, user, cursor string) error {
	if err := markScript.Run(ctx, s.rdb, []string{deliveredKey(user)}, cursor, s.cfg.TTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("mark delivered for %s: %w", user, err)
	}
	return nil
}

// MarkDeliveredBatch records several users' markers in one round trip.
func (s *Store) MarkDeliveredBatch(ctx context.Context, marks map[string]string) error {
	if len(marks) == 0 {
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for user, cursor := range marks {
			// Eval, not Run: a pipeline cannot fall back from EVALSHA.
			markScript.Eval(ctx, p, []string{deliveredKey(user)}, cursor, s.cfg.TTL.Milliseconds())
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("mark delivered: %w", err)
	}
	return nil
}

// CompareCursors orders two stream ids (-1, 0, 1); "" sorts first.
func CompareCursors(a, b string) int {
	am, as := splitCursor(a)
	bm, bs := splitCursor(b)
	switch {
	case am != bm:
		return cmp(am, bm)
	default:
		return cmp(as, bs)
	}
}

func splitCursor(c string) (uint64, uint64) {
	for i := 0; i < len(c); i++ {
		if c[i] == '-' {
			ms, _ := strconv.ParseUint(c[:i], 10, 64)
			seq, _ := strconv.ParseUint(c[i+1:], 10, 64)
			return ms, seq
		}
	}
	return 0, 0
}

func cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
