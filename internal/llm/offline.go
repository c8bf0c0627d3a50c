package llm

import (
	"context"
	"time"
	"unicode"
)

// OfflineNotice starts every offline answer, so nobody mistakes it for a
// real model.
const OfflineNotice = "[offline model] "

// Offline is a stand-in model for running without an API key: it answers at
// once (or after Latency) by saying what it is and echoing the message.
type Offline struct {
	Latency time.Duration
}

// Name identifies the model in logs and spans.
func (Offline) Name() string { return "offline" }

// Complete answers the last user message.
func (o Offline) Complete(ctx context.Context, req Request) (Response, error) {
	if o.Latency > 0 {
		t := time.NewTimer(o.Latency)
		select {
		case <-ctx.Done():
			t.Stop()
			return Response{}, ctx.Err()
		case <-t.C:
		}
	}
	last := ""
	prompt := 0
	for _, m := range req.Messages {
		prompt += countWords(m.Content)
		if m.Role == RoleUser {
			last = m.Content
		}
	}
	answer := OfflineNotice + "This is the built-in offline model, not a real AI (set OPENAI_API_KEY to use one). You said: " + last
	return Response{Content: answer, Model: "offline", PromptTokens: prompt, CompletionTokens: countWords(answer)}, nil
}

// countWords is len(strings.Fields(s)) without building the slice: the
// offline model counts the words of the whole conversation for every
// message, and the slices were a tenth of the ai-consumer's CPU under load.
func countWords(s string) int {
	n, inWord := 0, false
	for _, r := range s {
		space := unicode.IsSpace(r)
		if !space && !inWord {
			n++
		}
		inWord = !space
	}
	return n
}
