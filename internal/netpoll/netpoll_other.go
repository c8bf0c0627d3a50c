//go:build !linux

package netpoll

// Poller is unavailable here; New always fails, and callers fall back to a
// goroutine per socket.
type Poller struct{}

// New reports ErrUnsupported.
func New(bool) (*Poller, error) { return nil, ErrUnsupported }

// Add is never reached: New fails.
func (p *Poller) Add(int, Handler) error { return ErrUnsupported }

// Rearm is never reached: New fails.
func (p *Poller) Rearm(int) error { return ErrUnsupported }

// Remove is never reached: New fails.
func (p *Poller) Remove(int, Handler) {}

// Len is always 0.
func (p *Poller) Len() int { return 0 }

// Close does nothing.
func (p *Poller) Close() error { return nil }
