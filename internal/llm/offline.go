package llm

import (
	"context"
	"strings"
	"time"
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
		prompt += len(strings.Fields(m.Content))
		if m.Role == RoleUser {
			last = m.Content
		}
	}
	answer := OfflineNotice + "This is the built-in offline model, not a real AI (set OPENAI_API_KEY to use one). You said: " + last
	return Response{Content: answer, Model: "offline", PromptTokens: prompt, CompletionTokens: len(strings.Fields(answer))}, nil
}
