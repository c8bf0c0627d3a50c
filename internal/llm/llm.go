// Package llm talks to the chat model: an OpenAI-compatible API through
// go-openai, or the built-in offline model for running without a key.
package llm

import (
	"context"
	"errors"
)

// Roles of a conversation turn.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one turn of the conversation sent to the model.
type Message struct {
	Role    string
	Content string
}

// Request is one completion request.
type Request struct {
	Messages []Message
}

// Response is the model's answer.
type Response struct {
	Content string
	// Model is the model that answered, as the API reported it.
	Model string
	// Target names the configured target that answered (a Router's: the
	// model name, or model@host when one model is configured at two
	// endpoints). Bounded, for metric labels; empty without a Router.
	Target           string
	PromptTokens     int
	CompletionTokens int
}

// Model answers a conversation.
type Model interface {
	Complete(ctx context.Context, req Request) (Response, error)
	Name() string
}

// ErrPermanent marks a failure that retrying the same request cannot fix
// (bad request, authentication, unknown model, context too long).
var ErrPermanent = errors.New("permanent model error")

// IsPermanent reports whether err must not be retried.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }
