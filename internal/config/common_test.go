package config

import (
	"os"
	"strings"
	"testing"
	"time"
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

// The fetch settings default to answering at once; a value the client would
// refuse, or one no fetch could reach, stops the process naming the variable.
func TestKafkaFetch(t *testing.T) {
	var f KafkaFetch
	if err := LoadFrom(&f, map[string]string{}); err != nil || f.MinBytes != 1 || f.MaxWait != 50*time.Millisecond {
		t.Fatalf("defaults %+v, error %v; want 1 byte and 50ms", f, err)
	}
	good := map[string]string{"KAFKA_FETCH_MIN_BYTES": "65536", "KAFKA_FETCH_MAX_WAIT": "10ms"}
	if err := LoadFrom(&f, good); err != nil || f.MinBytes != 65536 || f.MaxWait != 10*time.Millisecond {
		t.Errorf("%v: %+v, error %v", good, f, err)
	}
	for name, bad := range map[string][]string{
		"KAFKA_FETCH_MIN_BYTES": {"0", "-1", "52428801", "many"},
		"KAFKA_FETCH_MAX_WAIT":  {"5ms", "0", "31s", "soon"},
	} {
		for _, v := range bad {
			err := LoadFrom(&f, map[string]string{name: v})
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("%s=%s: error %v, want one naming %s", name, v, err, name)
			}
		}
	}
}
