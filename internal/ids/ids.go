// Package ids makes and checks the identifiers that travel with a message:
// message and response ids (sortable ULIDs) and correlation ids.
package ids

import (
	"crypto/rand"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

var (
	mu      sync.Mutex
	entropy = ulid.Monotonic(rand.Reader, 0)
)

// New returns a new ULID: 26 characters, lexically sortable by creation time,
// so ids made by one instance sort in the order they were made.
func New() string {
	mu.Lock()
	id := ulid.MustNew(ulid.Timestamp(time.Now()), entropy)
	mu.Unlock()
	return id.String()
}

// MaxCorrelationIDLen bounds a client-supplied correlation id; longer ones
// are replaced, not truncated, so an id never silently changes meaning.
const MaxCorrelationIDLen = 64

// ValidCorrelationID reports whether s may be used as a correlation id as
// given: 1–64 characters from [A-Za-z0-9._:-]. The set is chosen so the id is
// safe in log lines, HTTP headers, Kafka headers and TraceQL queries without
// escaping.
func ValidCorrelationID(s string) bool {
	if len(s) == 0 || len(s) > MaxCorrelationIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// CorrelationID keeps a valid client-supplied id and otherwise makes one.
func CorrelationID(fromClient string) string {
	if ValidCorrelationID(fromClient) {
		return fromClient
	}
	return New()
}
