package process

import "runtime/debug"

// ConsumerGCPercent is the garbage collector's GOGC for the ai-consumer and
// the message-relay when the environment does not set GOGC. Their live heap
// is small (5–20 MiB at 3,000 msg/s) and almost all of what they allocate
// dies with the record, so at Go's default of 100 the collector ran every
// few megabytes and took 13–25% of their CPU under load; at 400 it took
// 7–16%, for a few MiB more heap (docs/performance.md). The gateways keep
// Go's default: their memory per socket is what bounds them. The value in
// effect is the go_gc_gogc_percent metric.
const ConsumerGCPercent = 400

// applyGCDefault sets ConsumerGCPercent for a standalone consumer process
// unless GOGC is set (the operator's choice, read by the runtime itself).
func applyGCDefault(service string, getenv func(string) string) {
	if getenv("GOGC") != "" {
		return
	}
	switch service {
	case AIConsumer, Relay:
		debug.SetGCPercent(ConsumerGCPercent)
	}
}
