package config

import (
	"os"
	"strings"
	"testing"
)

// INSTANCE_ID defaults to the host name, which restarts keep; a value Kafka
// would refuse as a group instance id stops the process at start.
func TestKafkaInstanceID(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name here:", err)
	}
	var k Kafka
	if err := LoadFrom(&k, map[string]string{}); err != nil {
		t.Fatal(err)
	}
	if got := k.Instance(); got != host {
		t.Errorf("default instance %q, want the host name %q", got, host)
	}
	if err := LoadFrom(&k, map[string]string{"INSTANCE_ID": "ai-consumer-0"}); err != nil || k.Instance() != "ai-consumer-0" {
		t.Errorf("INSTANCE_ID=ai-consumer-0: instance %q, error %v", k.Instance(), err)
	}
	for _, bad := range []string{"two words", "a/b", strings.Repeat("x", 250)} {
		if err := LoadFrom(&k, map[string]string{"INSTANCE_ID": bad}); err == nil || !strings.Contains(err.Error(), "INSTANCE_ID") {
			t.Errorf("INSTANCE_ID=%q: error %v, want one naming INSTANCE_ID", bad, err)
		}
	}
}
