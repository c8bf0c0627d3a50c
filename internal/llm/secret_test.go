package llm

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestAPIKeyNeverInErrors: an OpenAI-compatible server may quote the key it
// was sent in its error (a JSON error message, or a plain body go-openai
// keeps whole); the errors the services log and put on spans must not.
func TestAPIKeyNeverInErrors(t *testing.T) {
	const key = "sk-Zq9xW2vPk7LmRt5yHn3b"
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		permanent               bool
	}{
		{"JSON error", "application/json", `{"error":{"message":"Incorrect API key provided: ` + key + `","type":"invalid_request_error"}}`, http.StatusUnauthorized, true},
		{"plain body", "text/plain", "bad gateway for key " + key, http.StatusBadGateway, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			m := NewOpenAI(OpenAIConfig{APIKey: key, BaseURL: srv.URL + "/v1", Model: "m", Timeout: 5 * time.Second})
			_, cerr := m.Complete(context.Background(), streamReq)
			_, serr := m.Stream(context.Background(), streamReq, func(string) {})
			for _, err := range []error{cerr, serr} {
				if err == nil {
					t.Fatal("no error")
				}
				if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), key[3:]) {
					t.Fatalf("the error shows the API key: %v", err)
				}
				if IsPermanent(err) != tc.permanent || ErrorClass(err) != statusClass(tc.status) {
					t.Fatalf("classification lost: permanent %v, class %s: %v", IsPermanent(err), ErrorClass(err), err)
				}
			}
		})
	}
}
