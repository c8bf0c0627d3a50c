package process

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/chatrelay/chat/internal/aiconsumer"
	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/testinfra"
)

const secret = "process-test-secret-0123456789"

// echoModel answers with the last message, so the test knows the answer
// came from the injected model.
type echoModel struct{}

func (echoModel) Name() string { return "echo" }
func (echoModel) Complete(_ context.Context, req llm.Request) (llm.Response, error) {
	return llm.Response{Content: "echo: " + req.Messages[len(req.Messages)-1].Content}, nil
}

// Everything wired from one environment map, on an in-process broker and
// Redis: a message goes in at one gateway and the injected model's answer
// comes back; /readyz runs every instance's checks.
func TestBuildWiresTheWholeSystem(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	rds := miniredis.RunT(t)
	opsAddr := freeAddr(t)
	tel := quietTelemetry()
	s, err := Build(context.Background(), Options{
		Env: map[string]string{
			"KAFKA_BOOTSTRAP_SERVERS": cluster.ListenAddrs()[0], "KAFKA_TOPIC_PARTITIONS": "2",
			"REDIS_URL": "redis://" + rds.Addr() + "/0", "AUTH_SECRET": secret,
			"HTTP_ADDR": "127.0.0.1:0", "OPS_ADDR": opsAddr, "INSTANCE_ID": "unit", "LLM_OFFLINE": "true",
		},
		Services: All(), Gateways: 2, Telemetry: tel,
		Model: func(aiconsumer.Config) llm.Model { return echoModel{} },
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := []string{s.GatewayConfigs[0].Instance(), s.GatewayConfigs[1].Instance()}; got[0] != "unit-1" || got[1] != "unit-2" {
		t.Fatalf("instance ids %v, want unit-1 and unit-2", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	c := testinfra.DialChat(t, "ws://"+s.Gateways[1].Addr(), secret, "alice")
	if err := c.Send("hello", ""); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.Expect(t, "response", 20*time.Second); r.Content != "echo: hello" {
		t.Fatalf("answer %q, want the injected model's", r.Content)
	}
	for _, want := range []string{"unit-1/gateway.redis", "unit-2/gateway.kafka", "ai-consumer.kafka", "relay.redis"} {
		if s.checks[want] == nil {
			t.Errorf("no readiness check %s", want)
		}
	}
	if code, body := get(t, "http://"+opsAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	if n := testutilCount(t, tel.Registry, "service", Gateway); n == 0 {
		t.Error("the first gateway's metrics are not in the registry")
	}
}

// A bad value fails before anything connects, naming the variable; so do
// an unknown or repeated service.
func TestBuildRefusesBadInput(t *testing.T) {
	tests := []struct {
		name     string
		services []string
		env      map[string]string
		want     string
	}{
		{"bad value", []string{Relay}, map[string]string{"KAFKA_TOPIC_PARTITIONS": "0"}, "KAFKA_TOPIC_PARTITIONS"},
		{"bad ops value", []string{Relay}, map[string]string{"OPS_ADDR": "nonsense"}, "OPS_ADDR"},
		{"unknown service", []string{"mailer"}, map[string]string{}, `unknown service "mailer"`},
		{"listed twice", []string{Relay, Relay}, map[string]string{}, "listed twice"},
		{"lag exporter blind to the group", []string{Relay}, map[string]string{"RELAY_GROUP": "relay-2"}, "KAFKA_LAG_GROUPS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(context.Background(), Options{Env: tc.env, Services: tc.services, Telemetry: quietTelemetry()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// testutilCount is how many series in reg carry label=value.
func testutilCount(t *testing.T, reg *prometheus.Registry, label, value string) int {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					n++
				}
			}
		}
	}
	return n
}
