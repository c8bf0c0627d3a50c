package gateway

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/delivery"
	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/history"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/telemetry"
)

// The connection as delivery's Output: what the stream decides to send
// becomes frames on the socket, in the stream's order.

// Ready tells the client where its connection starts (delivery.Output).
func (c *conn) Ready(position string) {
	c.enqueue(outFrame{typ: protocol.TypeReady, data: protocol.Encode(protocol.ServerFrame{
		Type: protocol.TypeReady, UserID: c.userID, Cursor: position, Timestamp: protocol.FormatTime(time.Now()),
	})}, false)
}

// Answer queues an answer (delivery.Output). A response or error continues
// the message's trace in a delivery span; a chunk is a preview with no span
// of its own. Once written, a cursor moves the user's delivered marker.
func (c *conn) Answer(e *envelope.Envelope, replayed bool) {
	if e.Type == envelope.TypeChunk || e.Type == envelope.TypeStatus {
		// Live news of an answer on its way: no cursor, no history, no
		// span of its own; the answer follows.
		c.enqueue(outFrame{typ: e.Type, data: protocol.Encode(newsFrame(e))}, true)
		return
	}
	if replayed {
		c.g.m.replayed.Inc()
	}
	f := outFrame{typ: e.Type, data: protocol.Encode(answerFrame(e)), span: c.deliverySpan(e, replayed)}
	if !replayed {
		f.acceptedAt = e.AcceptedAt // replayed answers are not a live latency
	}
	f.cursor = e.Cursor
	c.enqueue(f, !replayed)
}

// written (socketOwner) moves the user's delivered marker once an answer
// reached the kernel: a later connection without a cursor starts after it.
func (c *conn) written(cursor string) { c.g.marks.mark(c.userID, cursor) }

// Gap closes the socket: answers may be missing and could not be read
// (delivery.Output); the client resumes from its cursor.
func (c *conn) Gap(err error) {
	c.g.log.Warn("closing a socket: its missing answers could not be read", "error", err)
	c.terminate(&protocol.ReplayFailed)
}

// newsFrame is a chunk (a piece of the answer being written) or a status
// (the answer is late, with a reason for a person).
func newsFrame(e *envelope.Envelope) protocol.ServerFrame {
	f := protocol.ServerFrame{
		Type: e.Type, ID: e.ID, UserID: e.UserID, ReplyTo: e.ReplyTo, ClientID: e.ClientID,
		CorrelationID: e.CorrelationID, Timestamp: protocol.FormatTime(e.Timestamp),
	}
	if e.Type == envelope.TypeStatus {
		f.State, f.Message = e.State, e.Content
	} else {
		f.Seq, f.Delta = e.Seq, e.Content
	}
	return f
}

func answerFrame(e *envelope.Envelope) protocol.ServerFrame {
	f := protocol.ServerFrame{
		Type: e.Type, ID: e.ID, UserID: e.UserID, Timestamp: protocol.FormatTime(e.Timestamp),
		ReplyTo: e.ReplyTo, ClientID: e.ClientID, CorrelationID: e.CorrelationID, Cursor: e.Cursor, Model: e.Model,
	}
	if e.Type == envelope.TypeError {
		f.Message = e.Content
	} else {
		f.Content = e.Content
	}
	return f
}

func (c *conn) deliverySpan(e *envelope.Envelope, replayed bool) trace.Span {
	// The span starts with the correlation id; nothing runs in its context,
	// so the id is not put there (telemetry.OwnScopePrefix).
	parent := otel.GetTextMapPropagator().Extract(c.g.base, envelope.Carrier{E: e})
	_, span := c.g.tracer.Start(parent, "chat.deliver", trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(telemetry.CorrelationAttr.String(e.CorrelationID),
			attribute.String("messaging.message.id", e.ID), attribute.String("chat.reply_to", e.ReplyTo),
			attribute.String("chat.instance", c.g.instance), attribute.Bool("chat.replayed", replayed)))
	return span
}

// replayReader is the history as connections read it, with a bound on the
// reads in flight: after a Redis resubscription every socket of the
// instance replays at once, and unbounded they would exhaust the client's
// pool and time out together. Waiting for a turn counts in the read's own
// timeout.
type replayReader struct {
	store *history.Store
	turns chan struct{}
}

var _ delivery.History = (*replayReader)(nil)

func newReplayReader(store *history.Store, concurrent int) *replayReader {
	return &replayReader{store: store, turns: make(chan struct{}, concurrent)}
}

// read runs one read in its turn.
func (r *replayReader) read(ctx context.Context, read func() (history.Page, error)) (history.Page, error) {
	select {
	case r.turns <- struct{}{}:
		defer func() { <-r.turns }()
		return read()
	case <-ctx.Done():
		return history.Page{}, ctx.Err()
	}
}

func (r *replayReader) After(ctx context.Context, user, position string, limit int64) (history.Page, error) {
	return r.read(ctx, func() (history.Page, error) { return r.store.After(ctx, user, position, limit) })
}

func (r *replayReader) FromDelivered(ctx context.Context, user string, limit int64) (history.Page, error) {
	return r.read(ctx, func() (history.Page, error) { return r.store.FromDelivered(ctx, user, limit) })
}
