// Package perf holds the performance harness (perf_test.go): the real
// multi-process topology on loopback — redis-server, a kfake broker in the
// test process, N websocket-server processes behind nginx, one ai-consumer
// and one message-relay — driven by the load generator (bin/loadgen) in the
// scenarios of docs/performance.md, collecting the load generator's results,
// CPU and heap profiles of the services and the CPU time of every process.
//
// Without PERF_SCENARIO the test runs a few-second smoke through the whole
// topology (part of `make test`); `make perf SCENARIO=throughput` runs a
// real scenario. See perf_test.go for the knobs.
package perf
