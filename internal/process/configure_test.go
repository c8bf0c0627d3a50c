package process

import (
	"strings"
	"testing"
	"time"
)

// Configure loads what Build would, defaults applied, and Settings names
// exactly the variables of the services loaded, secrets masked.
func TestConfigure(t *testing.T) {
	env := map[string]string{"AUTH_SECRET": secret, "SHUTDOWN_TIMEOUT": "40s", "INSTANCE_ID": "gw-0"}
	s, err := Configure(env, Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ops.ShutdownTimeout != 40*time.Second || s.GatewayConfigs[0].Instance() != "gw-0" || s.GatewayConfigs[0].HTTPAddr != ":8080" {
		t.Errorf("loaded %+v, %+v", s.Ops, s.GatewayConfigs[0])
	}
	settings := s.Settings()
	for _, want := range []string{"AUTH_SECRET", "HTTP_ADDR", "SHUTDOWN_TIMEOUT", "KAFKA_LAG_GROUPS", "REDIS_URL", "LIMIT_INSTANCE_SOCKETS"} {
		if _, ok := settings[want]; !ok {
			t.Errorf("websocket-server's settings lack %s", want)
		}
	}
	if _, ok := settings["OPENAI_API_KEY"]; ok {
		t.Errorf("websocket-server's settings: %v", settings)
	}
	if settings["AUTH_SECRET"] != "*****" || settings["SHUTDOWN_TIMEOUT"] != "40s" {
		t.Errorf("AUTH_SECRET shows as %q, SHUTDOWN_TIMEOUT as %q", settings["AUTH_SECRET"], settings["SHUTDOWN_TIMEOUT"])
	}

	s, err = Configure(map[string]string{"LLM_OFFLINE": "true"}, AIConsumer, Relay)
	if err != nil {
		t.Fatal(err)
	}
	settings = s.Settings()
	_, key := settings["OPENAI_API_KEY"]
	_, group := settings["RELAY_GROUP"]
	_, addr := settings["HTTP_ADDR"]
	if !key || !group || addr {
		t.Errorf("ai-consumer and message-relay's settings: %v", settings)
	}

	if _, err := Configure(map[string]string{"SHUTDOWN_TIMEOUT": "soon"}, Relay); err == nil || !strings.Contains(err.Error(), "SHUTDOWN_TIMEOUT") {
		t.Errorf("a bad SHUTDOWN_TIMEOUT: %v", err)
	}
}
