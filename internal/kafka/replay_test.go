package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestReplayDLQ(t *testing.T) {
	brokers := startBroker(t, 2, "responses", "responses.dlq")
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for i := 0; i < 3; i++ {
		r := &kgo.Record{Topic: "responses.dlq", Key: []byte("u1"), Value: []byte{byte('a' + i)}}
		SetHeader(r, HeaderCorrelationID, "c1")
		SetHeader(r, HeaderDLQTopic, "responses")
		SetHeader(r, HeaderDLQReason, "bad")
		recs = append(recs, r)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	if n, err := ReplayDLQ(ctx, brokers, "responses.dlq", "dlq-replay", true, nil); err != nil || n != 3 {
		t.Fatalf("dry run: %d %v", n, err)
	}
	if n, err := ReplayDLQ(ctx, brokers, "responses.dlq", "dlq-replay", false, nil); err != nil || n != 3 {
		t.Fatalf("replay: %d %v", n, err)
	}
	if n, err := ReplayDLQ(ctx, brokers, "responses.dlq", "dlq-replay", false, nil); err != nil || n != 0 {
		t.Fatalf("second replay must find nothing new: %d %v", n, err)
	}
	if _, err := ReplayDLQ(ctx, brokers, "responses", "g", false, nil); err == nil {
		t.Fatal("replaying a non-DLQ topic must be refused")
	}

	rd, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("responses"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer rd.Close()
	got := 0
	for got < 3 && ctx.Err() == nil {
		rd.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			got++
			if Header(r, HeaderDLQReason) != "" || Header(r, HeaderCorrelationID) != "c1" || string(r.Key) != "u1" {
				t.Errorf("replayed record headers %v", r.Headers)
			}
		})
	}
	if got != 3 {
		t.Fatalf("%d records back on the source topic", got)
	}
}
