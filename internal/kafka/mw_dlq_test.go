package kafka

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

type fakeProducer struct {
	got []*kgo.Record
	err error
}

func (f *fakeProducer) ProduceSync(_ context.Context, rs ...*kgo.Record) kgo.ProduceResults {
	var out kgo.ProduceResults
	for _, r := range rs {
		if f.err == nil {
			f.got = append(f.got, r)
		}
		out = append(out, kgo.ProduceResult{Record: r, Err: f.err})
	}
	return out
}

func TestDLQ(t *testing.T) {
	tests := []struct {
		name       string
		handlerErr error
		produceErr error
		wantErr    bool
		wantDLQ    bool
	}{
		{name: "success is untouched", handlerErr: nil},
		{name: "transient error is returned for retry", handlerErr: errors.New("timeout"), wantErr: true},
		{name: "permanent error goes to the DLQ", handlerErr: Permanent(errors.New("undecodable")), wantDLQ: true},
		{name: "failed DLQ write is returned", handlerErr: Permanent(errors.New("undecodable")), produceErr: errors.New("broker down"), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &fakeProducer{err: tc.produceErr}
			counter := NewDLQCounter(prometheus.NewRegistry())
			src := &kgo.Record{Topic: "responses", Partition: 2, Offset: 41, Key: []byte("u1"), Value: []byte("{oops"),
				Headers: []kgo.RecordHeader{{Key: HeaderCorrelationID, Value: []byte("c1")}}}
			ctx := context.WithValue(context.Background(), attemptKey{}, 3)
			err := DLQ(p, counter, nil)(func(context.Context, *kgo.Record) error { return tc.handlerErr })(ctx, src)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if !tc.wantDLQ {
				if len(p.got) != 0 {
					t.Fatal("unexpected DLQ record")
				}
				return
			}
			if len(p.got) != 1 {
				t.Fatalf("want one DLQ record, got %d", len(p.got))
			}
			d := p.got[0]
			want := map[string]string{
				HeaderDLQTopic: "responses", HeaderDLQPartition: "2", HeaderDLQOffset: "41", HeaderDLQAttempts: "3",
				HeaderDLQReason: "undecodable", HeaderCorrelationID: "c1",
			}
			for k, v := range want {
				if got := Header(d, k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if d.Topic != "responses.dlq" || string(d.Key) != "u1" || string(d.Value) != "{oops" {
				t.Fatalf("bad DLQ record %+v", d)
			}
			if testutil.ToFloat64(counter.WithLabelValues("responses")) != 1 {
				t.Fatal("DLQ counter not incremented")
			}
		})
	}
}
