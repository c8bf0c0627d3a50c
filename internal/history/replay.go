package history

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/chatrelay/chat/internal/cursor"
	"github.com/chatrelay/chat/internal/envelope"
)

// The gateway's side of the history: reading a user's answers after a
// position (a connection's replay) and the user-wide delivered marker.
//
// The marker is only where a connection that brings no cursor starts: it
// says "answers up to here were written to one of the user's sockets". A
// connection never resyncs from it, because any socket of the user moves it
// (see internal/delivery).

// Since returns up to limit answers (responses and errors) after position
// (exclusive), in order, each with its Cursor set. An empty position means
// from the start.
func (s *Store) Since(ctx context.Context, user, position string, limit int64) ([]*envelope.Envelope, error) {
	start := "-"
	if position != "" {
		if !cursor.Valid(position) {
			return nil, fmt.Errorf("history read for %s: invalid cursor %q", user, position)
		}
		start = "(" + position
	}
	msgs, err := s.rdb.XRangeN(ctx, streamKey(user), start, "+", limit).Result()
	if err != nil {
		return nil, fmt.Errorf("history read for %s: %w", user, err)
	}
	return answers(msgs), nil
}

// Page is one read of a user's history: the answers after From, and Last,
// the cursor of the last entry read (questions included), which is where
// the next page starts. Full says the read hit its limit, so more may follow.
type Page struct {
	From    string
	Answers []*envelope.Envelope
	Last    string
	Full    bool
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

// pageOf builds a Page from the entries read after from.
func pageOf(from string, msgs []redis.XMessage, limit int64) Page {
	p := Page{From: from, Answers: answers(msgs), Last: from, Full: limit > 0 && int64(len(msgs)) >= limit}
	if len(msgs) > 0 {
		p.Last = msgs[len(msgs)-1].ID
	}
	return p
}

// After reads the page of user's history after position (a valid cursor).
func (s *Store) After(ctx context.Context, user, position string, limit int64) (Page, error) {
	if !cursor.Valid(position) {
		return Page{}, fmt.Errorf("history read for %s: invalid cursor %q", user, position)
	}
	msgs, err := s.rdb.XRangeN(ctx, streamKey(user), "("+position, "+", limit).Result()
	if err != nil {
		return Page{}, fmt.Errorf("history read for %s: %w", user, err)
	}
	return pageOf(position, msgs, limit), nil
}

// fromDeliveredScript reads the delivered marker and the entries after it
// in one round trip: a connect without a cursor needs both, and thousands
// of connects a second make the second trip count. It returns {marker or
// false, entries}.
var fromDeliveredScript = redis.NewScript(`
local c = redis.call('GET', KEYS[2])
local start = '-'
if c then start = '(' .. c end
return {c, redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[1])}
`)

// FromDelivered reads the first page of a connection that brings no
// cursor: From is the user's delivered marker (cursor.Start when there is
// none), which becomes the connection's own position.
func (s *Store) FromDelivered(ctx context.Context, user string, limit int64) (Page, error) {
	res, err := fromDeliveredScript.Run(ctx, s.rdb, []string{streamKey(user), deliveredKey(user)}, limit).Slice()
	if err != nil {
		return Page{}, fmt.Errorf("history read for %s: %w", user, err)
	}
	from := cursor.Start
	if len(res) > 0 {
		if m, ok := res[0].(string); ok && cursor.Valid(m) {
			from = m
		}
	}
	var msgs []redis.XMessage
	if len(res) > 1 {
		items, _ := res[1].([]any)
		msgs = make([]redis.XMessage, 0, len(items))
		for _, item := range items {
			if m, ok := scriptXMessage(item); ok {
				msgs = append(msgs, m)
			}
		}
	}
	return pageOf(from, msgs, limit), nil
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

// markScript moves the delivered marker forward only. Its comparison is
// cursor.Compare's, in Lua (TestMarkOrderIsCursorOrder checks they agree).
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

// MarkDelivered records that the user's answers up to c reached a socket,
// so a later connection without a cursor starts after it.
func (s *Store) MarkDelivered(ctx context.Context, user, c string) error {
	if err := markScript.Run(ctx, s.rdb, []string{deliveredKey(user)}, c, s.cfg.TTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("mark delivered for %s: %w", user, err)
	}
	return nil
}

// MarkDeliveredBatch records several users' markers in one round trip.
func (s *Store) MarkDeliveredBatch(ctx context.Context, marks map[string]string) error {
	if len(marks) == 0 {
		return nil
	}
	_, err := s.batch.Pipelined(ctx, func(p redis.Pipeliner) error {
		for user, c := range marks {
			// Eval, not Run: a pipeline cannot fall back from EVALSHA.
			markScript.Eval(ctx, p, []string{deliveredKey(user)}, c, s.cfg.TTL.Milliseconds())
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("mark delivered: %w", err)
	}
	return nil
}
