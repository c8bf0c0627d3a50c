package kafka

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestRecover(t *testing.T) {
	tests := []struct {
		name      string
		h         Handler
		wantErr   bool
		permanent bool
	}{
		{"ok", func(context.Context, *kgo.Record) error { return nil }, false, false},
		{"error passes through", func(context.Context, *kgo.Record) error { return errors.New("x") }, true, false},
		{"panic becomes permanent", func(context.Context, *kgo.Record) error { panic("boom") }, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Recover()(tc.h)(context.Background(), &kgo.Record{})
			if (err != nil) != tc.wantErr || IsPermanent(err) != tc.permanent {
				t.Fatalf("err=%v permanent=%v", err, IsPermanent(err))
			}
		})
	}
}
