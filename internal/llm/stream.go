package llm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// Streamer is a model that can hand out its answer as it is written.
type Streamer interface {
	Stream(ctx context.Context, req Request, onDelta func(delta string)) (Response, error)
}

// errStreamCut is a stream that ended before the model finished its answer.
// It wraps io.ErrUnexpectedEOF, what a connection dropped mid-body gives, so
// it is transient and retried like one.
var errStreamCut = fmt.Errorf("openai: the stream ended before the answer was finished (no finish_reason): %w", io.ErrUnexpectedEOF)

// Stream calls the streaming chat completions API; onDelta gets each piece
// of text as it arrives, and the whole answer is returned at the end.
//
// An answer is whole only if the model said it finished (a finish_reason).
// go-openai returns the same io.EOF for "data: [DONE]" and for a body that
// just ends (a proxy closing its response cleanly when its upstream died,
// an HTTP/1.0-style body ended by close), so io.EOF alone proves nothing.
// finish_reason rather than [DONE], because it is in the data go-openai
// decodes (no second parser of the SSE bytes, and no wrapping of a
// transport a caller may replace), it is required on the last choice chunk
// by the API, and it is what "the answer is complete" means; whereas [DONE]
// is left out by some compatible servers (the official SDKs tolerate that).
// What finish_reason cannot see is a cut after it and before the usage
// chunk: the text is whole then, only its token count is missing.
func (o *OpenAI) Stream(ctx context.Context, req Request, onDelta func(string)) (Response, error) {
	msgs := make([]openai.ChatCompletionMessage, 0, len(req.Messages))
	for _, m := range req.Messages {
		msgs = append(msgs, openai.ChatCompletionMessage{Role: m.Role, Content: m.Content})
	}
	st, err := o.client.CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
		Model: o.model, Messages: msgs, Stream: true,
		StreamOptions: &openai.StreamOptions{IncludeUsage: true},
	})
	if err != nil {
		return Response{}, o.fail(err)
	}
	defer st.Close()
	var b strings.Builder
	resp := Response{Model: o.model}
	finished := false
	for {
		chunk, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Response{}, o.fail(err)
		}
		if chunk.Model != "" {
			resp.Model = chunk.Model
		}
		if chunk.Usage != nil {
			resp.PromptTokens, resp.CompletionTokens = chunk.Usage.PromptTokens, chunk.Usage.CompletionTokens
		}
		for _, c := range chunk.Choices {
			if d := c.Delta.Content; d != "" {
				b.WriteString(d)
				onDelta(d)
			}
			finished = finished || c.FinishReason != ""
		}
	}
	if !finished {
		return Response{}, errStreamCut
	}
	resp.Content = b.String()
	return resp, nil
}

// Stream hands out the offline answer a word at a time, so a client asking
// for streaming sees it stream.
func (o Offline) Stream(ctx context.Context, req Request, onDelta func(string)) (Response, error) {
	resp, err := o.Complete(ctx, req)
	if err != nil {
		return resp, err
	}
	words := strings.SplitAfter(resp.Content, " ")
	for _, w := range words {
		onDelta(w)
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return Response{}, ctx.Err()
		case <-t.C:
		}
	}
	return resp, nil
}

// Stream is Complete with the answer streamed: the same breaker and budget;
// retries only while nothing was streamed yet (a retry after that would
// repeat text the client already shows). A model that cannot stream
// answers in one piece.
func (r *Resilient) Stream(ctx context.Context, req Request, onDelta func(string)) (Response, error) {
	st, ok := r.next.(Streamer)
	if !ok {
		resp, err := r.Complete(ctx, req)
		if err == nil {
			onDelta(resp.Content)
		}
		return resp, err
	}
	streamed := false
	emit := func(d string) { streamed = true; onDelta(d) }
	return r.call(ctx, func(actx context.Context) (Response, error) {
		resp, err := st.Stream(actx, req, emit)
		if err != nil && streamed {
			return Response{}, fmt.Errorf("%w: stream broke after it started: %w", ErrPermanent, err)
		}
		return resp, err
	})
}
