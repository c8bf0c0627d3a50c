package kafka

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chatrelay/chat/internal/telemetry"
)

func TestCorrelation(t *testing.T) {
	tests := []struct{ header, want string }{{"corr-9", "corr-9"}, {"", ""}}
	for _, tc := range tests {
		t.Run(tc.header, func(t *testing.T) {
			r := &kgo.Record{}
			if tc.header != "" {
				SetHeader(r, HeaderCorrelationID, tc.header)
			}
			var got string
			_ = Correlation()(func(ctx context.Context, _ *kgo.Record) error {
				got = telemetry.CorrelationID(ctx)
				return nil
			})(context.Background(), r)
			if got != tc.want {
				t.Fatalf("got %q want %q", got, tc.want)
			}
		})
	}
}
