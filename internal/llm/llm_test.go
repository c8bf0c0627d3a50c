package llm

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatrelay/chat/internal/fakeopenai"
)

func TestOpenAIAgainstFakeServer(t *testing.T) {
	srv := fakeopenai.Start(t, fakeopenai.WithAPIKey("k"))
	m := NewOpenAI(OpenAIConfig{APIKey: "k", BaseURL: srv.BaseURL(), Model: "m1", Timeout: 2 * time.Second})
	req := Request{Messages: []Message{{RoleSystem, "be brief"}, {RoleUser, "hi there"}}}

	tests := []struct {
		name      string
		setup     func()
		wantErr   bool
		permanent bool
		class     string
	}{
		{name: "answer", setup: func() {}},
		{name: "400 is permanent", setup: func() { srv.FailNext(1, http.StatusBadRequest, "") }, wantErr: true, permanent: true, class: "client"},
		{name: "404 is permanent", setup: func() { srv.FailNext(1, http.StatusNotFound, "") }, wantErr: true, permanent: true, class: "client"},
		{name: "429 is transient", setup: func() { srv.FailNext(1, http.StatusTooManyRequests, "1") }, wantErr: true, class: "rate_limited"},
		{name: "500 is transient", setup: func() { srv.FailNext(1, http.StatusInternalServerError, "") }, wantErr: true, class: "server"},
		{name: "down is transient", setup: func() { srv.SetDown(true) }, wantErr: true, class: "transport"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv.Reset()
			tc.setup()
			defer srv.SetDown(false)
			resp, err := m.Complete(context.Background(), req)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tc.wantErr {
				if resp.Content != "echo: hi there" || resp.PromptTokens == 0 || resp.CompletionTokens == 0 {
					t.Fatalf("bad response %+v", resp)
				}
				return
			}
			if IsPermanent(err) != tc.permanent || ErrorClass(err) != tc.class {
				t.Fatalf("permanent=%v class=%s for %v", IsPermanent(err), ErrorClass(err), err)
			}
		})
	}
	t.Run("wrong key is permanent", func(t *testing.T) {
		bad := NewOpenAI(OpenAIConfig{APIKey: "wrong", BaseURL: srv.BaseURL(), Model: "m1"})
		_, err := bad.Complete(context.Background(), req)
		if !IsPermanent(err) || ErrorClass(err) != "auth" {
			t.Fatalf("err = %v class %s", err, ErrorClass(err))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		srv.Reset()
		srv.SetHang(true)
		defer srv.SetHang(false)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := m.Complete(ctx, req)
		if err == nil || IsPermanent(err) || ErrorClass(err) != "timeout" {
			t.Fatalf("err = %v class %s", err, ErrorClass(err))
		}
	})
}

func TestOffline(t *testing.T) {
	r, err := Offline{}.Complete(context.Background(), Request{Messages: []Message{{RoleUser, "ping"}}})
	if err != nil || !strings.HasPrefix(r.Content, OfflineNotice) || !strings.Contains(r.Content, "ping") {
		t.Fatalf("%+v %v", r, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (Offline{Latency: time.Hour}).Complete(ctx, Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("slow offline model ignores cancellation: %v", err)
	}
}
