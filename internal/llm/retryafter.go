package llm

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// go-openai's errors do not expose response headers, so a transport records
// the Retry-After of a failed response into a holder the caller put in the
// request's context.
type retryAfterKey struct{}

type retryAfterHolder struct{ d atomic.Int64 }

func withRetryAfter(ctx context.Context) (context.Context, *retryAfterHolder) {
	h := &retryAfterHolder{}
	return context.WithValue(ctx, retryAfterKey{}, h), h
}

func (h *retryAfterHolder) get() time.Duration { return time.Duration(h.d.Load()) }

type retryAfterTransport struct{ next http.RoundTripper }

func (t retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) {
		if h, ok := req.Context().Value(retryAfterKey{}).(*retryAfterHolder); ok {
			h.d.Store(int64(parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())))
		}
	}
	return resp, err
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 when absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
