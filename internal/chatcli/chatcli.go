// Package chatcli is a terminal chat client: every line read is sent as a
// message, answers are printed as they come (streamed chunks as they
// arrive), and a dropped connection is re-established with exponential
// backoff and jitter, resuming from the cursor of the last answer seen so
// that nothing produced in between is lost.
package chatcli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/chatrelay/chat/internal/auth"
)

// Options configure Run.
type Options struct {
	// URL is the chat endpoint, e.g. ws://localhost:8080/ws.
	URL string
	// UserID is the user to chat as.
	UserID string
	// Token is the JWT; when empty one is minted with Mint or Secret.
	Token string
	// Mint makes a token for a user (e.g. auth.MintFromConfig).
	Mint func(user string) (string, error)
	// Secret is an HS256 AUTH_SECRET to mint a token with, when neither
	// Token nor Mint is set.
	Secret string
	// MinBackoff and MaxBackoff bound the reconnect delay (defaults 500ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// Dialer defaults to websocket.DefaultDialer.
	Dialer *websocket.Dialer
}

type frame struct {
	Type     string `json:"type"`
	ID       string `json:"id"`
	Content  string `json:"content"`
	Message  string `json:"message"`
	ReplyTo  string `json:"reply_to"`
	ClientID string `json:"client_id"`
	Cursor   string `json:"cursor"`
	Seq      int    `json:"seq"`
	Delta    string `json:"delta"`
}

type client struct {
	o       Options
	out     io.Writer
	lines   <-chan string
	eof     bool
	cursor  string
	seq     int
	pending map[string]string // client id -> text, sent but not acknowledged
	waiting map[string]bool   // server message id -> acknowledged, no answer yet
	partial map[string]string // reply_to -> streamed text printed so far
	seen    map[string]bool   // answer ids printed
}

// Run chats until in ends and every acknowledged message got its answer
// (then it returns nil), or until ctx ends (ctx.Err()).
func Run(ctx context.Context, in io.Reader, out io.Writer, o Options) error {
	if o.URL == "" || !auth.ValidUserID(o.UserID) {
		return errors.New("chat: a URL and a valid user id (1-64 of [A-Za-z0-9._:-]) are needed")
	}
	if o.Token == "" {
		mint := o.Mint
		if mint == nil && o.Secret != "" {
			mint = func(u string) (string, error) { return auth.Mint([]byte(o.Secret), u, 24*time.Hour) }
		}
		if mint == nil {
			return errors.New("chat: no token (set a token, or AUTH_SECRET to mint one)")
		}
		tok, err := mint(o.UserID)
		if err != nil {
			return fmt.Errorf("chat: mint token: %w", err)
		}
		o.Token = tok
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(30*time.Second, o.MinBackoff)
	}
	if o.Dialer == nil {
		o.Dialer = websocket.DefaultDialer
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	c := &client{o: o, out: out, lines: lines, pending: map[string]string{}, waiting: map[string]bool{},
		partial: map[string]string{}, seen: map[string]bool{}}
	return c.loop(ctx)
}

func (c *client) loop(ctx context.Context) error {
	attempt := 0
	for {
		conn, err := c.dial(ctx)
		if err == nil {
			attempt = 0
			fmt.Fprintf(c.out, "* connected as %s\n", c.o.UserID)
			var done bool
			done, err = c.session(ctx, conn)
			if done {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := c.backoff(attempt)
		attempt++
		fmt.Fprintf(c.out, "* disconnected (%v); reconnecting in %s\n", err, d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
	}
}

// backoff is exponential with jitter: a random delay in [cap/2, cap].
func (c *client) backoff(attempt int) time.Duration {
	d := c.o.MaxBackoff
	if attempt < 30 {
		d = min(c.o.MaxBackoff, c.o.MinBackoff<<attempt)
	}
	return d/2 + rand.N(d/2+1)
}

func (c *client) dial(ctx context.Context) (*websocket.Conn, error) {
	u, err := url.Parse(c.o.URL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("userid", c.o.UserID)
	q.Set("token", c.o.Token)
	if c.cursor != "" {
		q.Set("resume", c.cursor)
	}
	u.RawQuery = q.Encode()
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, resp, err := c.o.Dialer.DialContext(dctx, u.String(), nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("HTTP %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
		}
		return nil, err
	}
	return conn, nil
}

func (c *client) finished() bool {
	return c.eof && len(c.pending) == 0 && len(c.waiting) == 0
}

// session runs one connection; done means everything is answered.
func (c *client) session(ctx context.Context, conn *websocket.Conn) (done bool, err error) {
	frames := make(chan frame, 16)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				readErr <- err
				return
			}
			var f frame
			if json.Unmarshal(data, &f) == nil {
				select {
				case frames <- f:
				case <-stop:
					return
				}
			}
		}
	}()
	defer func() {
		_ = conn.Close()
		// Messages never acknowledged may or may not have been taken.
		for id, text := range c.pending {
			fmt.Fprintf(c.out, "* not confirmed, send it again if needed: %q\n", text)
			delete(c.pending, id)
		}
	}()
	lines := c.lines
	if c.eof {
		lines = nil
	}
	for {
		if c.finished() {
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			return true, nil
		}
		select {
		case <-ctx.Done():
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second))
			return false, ctx.Err()
		case err := <-readErr:
			// The reader queued every frame before the error: take them.
			for {
				select {
				case f := <-frames:
					c.handle(f)
					continue
				default:
				}
				break
			}
			return false, err
		case line, ok := <-lines:
			if !ok {
				c.eof, lines = true, nil
				continue
			}
			if strings.TrimSpace(line) == "" {
				continue
			}
			c.seq++
			id := fmt.Sprintf("cli-%d", c.seq)
			msg := map[string]any{"type": "message", "content": line, "userid": c.o.UserID, "id": id, "stream": true}
			_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := conn.WriteJSON(msg); err != nil {
				fmt.Fprintf(c.out, "* not sent, send it again: %q\n", line)
				return false, err
			}
			c.pending[id] = line
		case f := <-frames:
			c.handle(f)
		}
	}
}

func (c *client) handle(f frame) {
	switch f.Type {
	case "ready":
		// The connection's starting cursor: resume from it until an
		// answer brings a newer one.
		if f.Cursor != "" {
			c.cursor = f.Cursor
		}
	case "ack":
		delete(c.pending, f.ClientID)
		if f.ID != "" {
			c.waiting[f.ID] = true
		}
	case "status":
		// The answer is late but coming; say so once per news, on a line
		// of its own (no answer text has been written yet).
		if f.ReplyTo != "" && f.Message != "" {
			if _, started := c.partial[f.ReplyTo]; !started {
				fmt.Fprintf(c.out, "* %s\n", f.Message)
			}
		}
	case "chunk":
		if f.ReplyTo == "" || f.Delta == "" {
			return
		}
		p, started := c.partial[f.ReplyTo]
		if !started {
			fmt.Fprint(c.out, "bot: ")
		}
		fmt.Fprint(c.out, f.Delta)
		c.partial[f.ReplyTo] = p + f.Delta
	case "response", "error":
		if f.Cursor != "" {
			c.cursor = f.Cursor
		}
		if f.ID != "" && c.seen[f.ID] {
			return
		}
		if f.ID != "" {
			c.seen[f.ID] = true
		}
		if f.ReplyTo != "" {
			delete(c.waiting, f.ReplyTo)
		} else if f.Type == "error" {
			delete(c.pending, f.ClientID) // a refused frame
		}
		p, started := c.partial[f.ReplyTo]
		delete(c.partial, f.ReplyTo)
		if f.Type == "error" {
			if started {
				fmt.Fprintln(c.out)
			}
			fmt.Fprintf(c.out, "error: %s\n", f.Message)
			return
		}
		switch {
		case started && strings.HasPrefix(f.Content, p):
			fmt.Fprintln(c.out, f.Content[len(p):])
		case started:
			fmt.Fprintf(c.out, "\nbot: %s\n", f.Content)
		default:
			fmt.Fprintf(c.out, "bot: %s\n", f.Content)
		}
	}
}
