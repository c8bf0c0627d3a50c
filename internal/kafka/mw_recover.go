package kafka

import (
	"context"
	"fmt"
	"runtime/debug"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Recover turns a panic in a handler into a permanent error: a record that
// panics once will panic again, so it belongs in the dead-letter topic, and
// the process must keep serving the other users.
func Recover() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, r *kgo.Record) (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = Permanent(fmt.Errorf("panic while handling record: %v\n%s", p, debug.Stack()))
				}
			}()
			return next(ctx, r)
		}
	}
}
