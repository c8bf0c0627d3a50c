package llm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	openai "github.com/sashabaranov/go-openai"
)

// OpenAIConfig configures the OpenAI-compatible client.
type OpenAIConfig struct {
	APIKey  string
	BaseURL string
	Model   string
	// Timeout bounds one HTTP request to the API.
	Timeout time.Duration
	// HTTPClient overrides the transport (tests, tracing).
	HTTPClient *http.Client
}

// OpenAI calls the chat completions API of any OpenAI-compatible server.
type OpenAI struct {
	client *openai.Client
	model  string
	key    string // only to keep it out of errors (hideKey)
}

// NewOpenAI builds the client.
func NewOpenAI(cfg OpenAIConfig) *OpenAI {
	c := openai.DefaultConfig(cfg.APIKey)
	if cfg.BaseURL != "" {
		c.BaseURL = cfg.BaseURL
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	cp := *hc
	if cfg.Timeout > 0 && cp.Timeout == 0 {
		cp.Timeout = cfg.Timeout
	}
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cp.Transport = retryAfterTransport{next: base}
	hc = &cp
	c.HTTPClient = hc
	return &OpenAI{client: openai.NewClientWithConfig(c), model: cfg.Model, key: cfg.APIKey}
}

// Name is the configured model.
func (o *OpenAI) Name() string { return o.model }

// Complete calls chat completions once; retrying is the caller's decision,
// guided by IsPermanent.
func (o *OpenAI) Complete(ctx context.Context, req Request) (Response, error) {
	msgs := make([]openai.ChatCompletionMessage, 0, len(req.Messages))
	for _, m := range req.Messages {
		msgs = append(msgs, openai.ChatCompletionMessage{Role: m.Role, Content: m.Content})
	}
	resp, err := o.client.CreateChatCompletion(ctx, openai.ChatCompletionRequest{Model: o.model, Messages: msgs})
	if err != nil {
		return Response{}, o.fail(err)
	}
	if len(resp.Choices) == 0 {
		return Response{}, fmt.Errorf("%w: the API returned no choices", ErrPermanent)
	}
	return Response{
		Content:          resp.Choices[0].Message.Content,
		Model:            resp.Model,
		PromptTokens:     resp.Usage.PromptTokens,
		CompletionTokens: resp.Usage.CompletionTokens,
	}, nil
}

// fail is the error of a failed call: classified, without the API key.
func (o *OpenAI) fail(err error) error { return hideKey(classify(err), o.key) }

// hideKey keeps the API key out of an error: an OpenAI-compatible server may
// quote the key it was sent in its error message or body (the real API shows
// only its ends). go-openai's errors are scrubbed in place, so the key is
// gone from the whole chain; anything else that still shows it is wrapped
// in an error whose text is scrubbed. Keys shorter than 8 bytes (tests) are
// left alone: replacing them would garble every message.
func hideKey(err error, key string) error {
	if err == nil || len(key) < 8 {
		return err
	}
	const masked = "sk-***"
	if apiErr, ok := errors.AsType[*openai.APIError](err); ok {
		apiErr.Message = strings.ReplaceAll(apiErr.Message, key, masked)
	}
	if reqErr, ok := errors.AsType[*openai.RequestError](err); ok {
		reqErr.Body = bytes.ReplaceAll(reqErr.Body, []byte(key), []byte(masked))
	}
	if msg := err.Error(); strings.Contains(msg, key) {
		return &keyHidden{err: err, msg: strings.ReplaceAll(msg, key, masked)}
	}
	return err
}

// keyHidden is an error whose text had the API key masked.
type keyHidden struct {
	err error
	msg string
}

func (e *keyHidden) Error() string { return e.msg }
func (e *keyHidden) Unwrap() error { return e.err }

// classify wraps API errors that retrying cannot fix with ErrPermanent.
func classify(err error) error {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.HTTPStatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity:
			return fmt.Errorf("%w: openai: %w", ErrPermanent, err)
		}
		return fmt.Errorf("openai: %w", err)
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		switch reqErr.HTTPStatusCode {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
			return fmt.Errorf("%w: openai: %w", ErrPermanent, err)
		}
	}
	return fmt.Errorf("openai: %w", err)
}

// ErrorClass is a bounded label for a model error, for metrics.
func ErrorClass(err error) string {
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, ErrUnavailable):
		return "circuit_open"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &apiErr):
		return statusClass(apiErr.HTTPStatusCode)
	case errors.As(err, &reqErr):
		return statusClass(reqErr.HTTPStatusCode)
	default:
		return "transport"
	}
}

func statusClass(code int) string {
	switch {
	case code == http.StatusTooManyRequests:
		return "rate_limited"
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return "auth"
	case code >= 500:
		return "server"
	case code >= 400:
		return "client"
	default:
		return "other"
	}
}
