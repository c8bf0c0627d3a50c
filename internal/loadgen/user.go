package loadgen

import (
	"encoding/json"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// serverFrame is the part of a server frame the accounting needs.
type serverFrame struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	ReplyTo  string `json:"reply_to"`
	ClientID string `json:"client_id"`
	Message  string `json:"message"`
	Cursor   string `json:"cursor"`
}

// pend is a message sent and not answered yet.
type pend struct {
	sent  time.Time
	acked bool
}

// user is one simulated client: at most one socket at a time, and the
// bookkeeping that matches answers to the messages it sent.
type user struct {
	r     *runner
	idx   int // global index: the user id is prefix + idx
	id    string
	ep    *endpoint
	local *net.TCPAddr
	p     *poller

	mu           sync.Mutex
	conn         *wsConn
	reconnecting bool
	seq          uint32
	pending      map[uint32]pend      // by client sequence number
	acks         map[uint64]uint32    // hash of the server message id → sequence
	orphans      map[uint64]time.Time // answers whose message is not known yet (hash of reply_to → arrival)
	awaitAck     map[uint32]time.Time // answered before their ack arrived: sequence → send time
	answered     []uint64             // bitset by sequence number
	lastResp     string               // resume cursor: cursor of the last answer seen (its id if the server sends none)
}

func hashID(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return h.Sum64()
}

func (u *user) isAnswered(seq uint32) bool {
	i := int(seq / 64)
	return i < len(u.answered) && u.answered[i]&(1<<(seq%64)) != 0
}

func (u *user) setAnswered(seq uint32) {
	i := int(seq / 64)
	for len(u.answered) <= i {
		u.answered = append(u.answered, 0)
	}
	u.answered[i] |= 1 << (seq % 64)
}

// clientID is the id a message is sent with: the run id keeps answers to an
// earlier run (same user ids) from matching this one's messages.
func (r *runner) clientID(seq uint32) string {
	return r.runID + "-" + strconv.FormatUint(uint64(seq), 10)
}

func (r *runner) parseClientID(s string) (uint32, bool) {
	rest, ok := strings.CutPrefix(s, r.runID+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(rest, 10, 32)
	return uint32(n), err == nil && n > 0
}

// lookupLocked finds the message an answer is for: by reply_to through the
// acks seen, else by the client id the server echoes.
func (u *user) lookupLocked(replyTo, clientID string) (uint32, bool) {
	if replyTo != "" {
		if seq, ok := u.acks[hashID(replyTo)]; ok {
			return seq, true
		}
	}
	if clientID != "" {
		return u.r.parseClientID(clientID)
	}
	return 0, false
}

// resolveLocked records the answer to message seq received at at.
func (u *user) resolveLocked(seq uint32, at time.Time, response bool) {
	r := u.r
	if p, ok := u.pending[seq]; ok {
		delete(u.pending, seq)
		u.setAnswered(seq)
		r.pendingTotal.Add(-1)
		if !p.acked {
			// The answer overtook the ack; the ack latency is still wanted.
			if u.awaitAck == nil {
				u.awaitAck = map[uint32]time.Time{}
			}
			u.awaitAck[seq] = p.sent
		}
		if response {
			r.answered.Add(1)
			r.latency.record(at.Sub(p.sent))
		} else {
			r.errored.Add(1)
		}
		return
	}
	if u.isAnswered(seq) {
		r.duplicated.Add(1)
		return
	}
	r.unmatched.Add(1)
}

// onMessage handles one server frame (poller goroutine).
func (u *user) onMessage(_ *wsConn, data []byte, at time.Time) {
	r := u.r
	var f serverFrame
	if err := json.Unmarshal(data, &f); err != nil {
		r.errorsByMsg.add("<server sent invalid JSON>")
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if f.Cursor != "" && (f.Type == "response" || f.Type == "error" || f.Type == "ready") {
		u.lastResp = f.Cursor
	}
	switch f.Type {
	case "ready": // the connection's starting cursor, kept above
	case "status": // news that an answer is late; the answer follows
	case "ack":
		r.acked.Add(1)
		seq, ok := r.parseClientID(f.ClientID)
		if !ok {
			return
		}
		if p, ok := u.pending[seq]; ok && !p.acked {
			p.acked = true
			u.pending[seq] = p
			r.ackLatency.record(at.Sub(p.sent))
		} else if sent, ok := u.awaitAck[seq]; ok {
			delete(u.awaitAck, seq)
			r.ackLatency.record(at.Sub(sent))
		}
		if f.ID != "" {
			h := hashID(f.ID)
			if u.acks == nil {
				u.acks = map[uint64]uint32{}
			}
			u.acks[h] = seq
			if t, ok := u.orphans[h]; ok {
				delete(u.orphans, h)
				u.resolveLocked(seq, t, true)
			}
		}
	case "response":
		if f.ID != "" && f.Cursor == "" {
			u.lastResp = f.ID
		}
		seq, ok := u.lookupLocked(f.ReplyTo, f.ClientID)
		if ok {
			u.resolveLocked(seq, at, true)
			return
		}
		if f.ReplyTo == "" {
			r.unmatched.Add(1)
			return
		}
		// The answer overtook its ack: keep it until the ack names it.
		h := hashID(f.ReplyTo)
		if _, seen := u.orphans[h]; seen {
			r.duplicated.Add(1)
			return
		}
		if u.orphans == nil {
			u.orphans = map[uint64]time.Time{}
		}
		u.orphans[h] = at
	case "error":
		r.errorFrames.Add(1)
		r.errorsByMsg.add(f.Message)
		if seq, ok := u.lookupLocked(f.ReplyTo, f.ClientID); ok {
			u.resolveLocked(seq, at, false)
		}
	default:
		r.errorsByMsg.add("<unexpected frame type " + strconv.Quote(f.Type) + ">")
	}
}

// onClosed is told that the user's socket closed (any goroutine).
func (u *user) onClosed(c *wsConn, reason string) {
	r := u.r
	u.mu.Lock()
	mine := u.conn == c
	if mine {
		u.conn = nil
	}
	u.mu.Unlock()
	if !mine {
		return
	}
	r.open.Add(-1)
	if r.closing.Load() {
		return
	}
	r.disconnects.add(reason)
	if r.cfg.Reconnect {
		u.startReconnect()
	}
}

// startReconnect reconnects the user in the background with backoff until
// it succeeds or the run ends.
func (u *user) startReconnect() {
	r := u.r
	u.mu.Lock()
	if u.reconnecting || u.conn != nil {
		u.mu.Unlock()
		return
	}
	u.reconnecting = true
	u.mu.Unlock()
	r.bgMu.Lock()
	if r.closing.Load() {
		r.bgMu.Unlock()
		return
	}
	r.bg.Add(1)
	r.bgMu.Unlock()
	go func() {
		defer r.bg.Done()
		backoff := 200 * time.Millisecond
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			t.Reset(backoff/2 + rand.N(backoff))
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
			// connect clears u.reconnecting when it attaches a socket.
			if _, err := r.connect(u, true); err == nil {
				r.reconnects.Add(1)
				return
			} else if r.closing.Load() {
				return
			} else {
				r.reconnectFailures.add(dialReason(err))
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
}

// send sends the user's next message, scheduled for due.
func (u *user) send(due time.Time, buf []byte) []byte {
	r := u.r
	u.mu.Lock()
	c := u.conn
	if c == nil {
		u.mu.Unlock()
		r.skipped.Add(1)
		return buf
	}
	u.seq++
	seq := u.seq
	now := time.Now()
	if u.pending == nil {
		u.pending = map[uint32]pend{}
	}
	u.pending[seq] = pend{sent: now}
	r.pendingTotal.Add(1)
	u.mu.Unlock()

	r.lag.record(now.Sub(due))
	buf = r.appendMessage(buf[:0], u, seq)
	if err := c.writeText(buf); err != nil {
		u.mu.Lock()
		if _, ok := u.pending[seq]; ok {
			delete(u.pending, seq)
			r.pendingTotal.Add(-1)
		}
		u.mu.Unlock()
		r.sendErrors.Add(1)
		c.close("write_error")
		return buf
	}
	r.sent.Add(1)
	return buf
}

const filler = "the quick brown fox jumps over the lazy dog "

// appendMessage appends the message frame: content of exactly -message-size
// bytes, made of characters that need no JSON escaping.
func (r *runner) appendMessage(b []byte, u *user, seq uint32) []byte {
	cid := r.clientID(seq)
	b = append(b, `{"type":"message","content":"`...)
	start := len(b)
	b = append(b, "load "...)
	b = append(b, u.id...)
	b = append(b, " #"...)
	b = strconv.AppendUint(b, uint64(seq), 10)
	b = append(b, ' ')
	size := r.cfg.MessageSize
	if len(b)-start > size {
		b = b[:start+size]
	}
	for len(b)-start < size {
		n := min(size-(len(b)-start), len(filler))
		b = append(b, filler[:n]...)
	}
	if b[len(b)-1] == ' ' {
		b[len(b)-1] = '.'
	}
	b = append(b, `","userid":"`...)
	b = append(b, u.id...)
	b = append(b, `","id":"`...)
	b = append(b, cid...)
	b = append(b, `"}`...)
	return b
}
