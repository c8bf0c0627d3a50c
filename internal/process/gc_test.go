package process

import (
	"runtime/debug"
	"testing"
)

func TestConsumersGetTheirGCDefaultUnlessGOGCIsSet(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	unset := func(string) string { return "" }
	for _, tc := range []struct {
		service string
		getenv  func(string) string
		want    int
	}{
		{AIConsumer, unset, ConsumerGCPercent},
		{Relay, unset, ConsumerGCPercent},
		{Gateway, unset, 100},
		{AIConsumer, func(k string) string {
			if k == "GOGC" {
				return "150"
			}
			return ""
		}, 100},
	} {
		debug.SetGCPercent(100)
		applyGCDefault(tc.service, tc.getenv)
		if got := debug.SetGCPercent(100); got != tc.want {
			t.Errorf("%s: GOGC %d, want %d", tc.service, got, tc.want)
		}
	}
}
