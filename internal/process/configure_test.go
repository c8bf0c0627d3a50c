package process

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// Configure loads what Build would, defaults applied, and EnvNames names
// exactly the variables of the services loaded.
func TestConfigure(t *testing.T) {
	env := map[string]string{"AUTH_SECRET": secret, "SHUTDOWN_TIMEOUT": "40s", "INSTANCE_ID": "gw-0"}
	s, err := Configure(env, Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ops.ShutdownTimeout != 40*time.Second || s.GatewayConfigs[0].Instance() != "gw-0" || s.GatewayConfigs[0].HTTPAddr != ":8080" {
		t.Errorf("loaded %+v, %+v", s.Ops, s.GatewayConfigs[0])
	}
	names := s.EnvNames()
	for _, want := range []string{"AUTH_SECRET", "HTTP_ADDR", "SHUTDOWN_TIMEOUT", "KAFKA_LAG_GROUPS", "REDIS_URL", "LIMIT_INSTANCE_SOCKETS"} {
		if !slices.Contains(names, want) {
			t.Errorf("websocket-server's names lack %s", want)
		}
	}
	if slices.Contains(names, "OPENAI_API_KEY") || !slices.IsSorted(names) {
		t.Errorf("websocket-server's names: %v", names)
	}

	s, err = Configure(map[string]string{"LLM_OFFLINE": "true"}, AIConsumer, Relay)
	if err != nil {
		t.Fatal(err)
	}
	names = s.EnvNames()
	if !slices.Contains(names, "OPENAI_API_KEY") || !slices.Contains(names, "RELAY_GROUP") || slices.Contains(names, "HTTP_ADDR") {
		t.Errorf("ai-consumer and message-relay's names: %v", names)
	}

	if _, err := Configure(map[string]string{"SHUTDOWN_TIMEOUT": "soon"}, Relay); err == nil || !strings.Contains(err.Error(), "SHUTDOWN_TIMEOUT") {
		t.Errorf("a bad SHUTDOWN_TIMEOUT: %v", err)
	}
}
