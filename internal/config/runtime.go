package config

// SysmonGODEBUG is the GODEBUG setting the shipped images run every service
// with (the Dockerfile's ENV; internal/deploycheck keeps the two equal), and
// so every service process a test starts (testinfra.Process) unless the test
// sets GODEBUG itself. It is read by the Go runtime at start, so it cannot
// be a default in code as the consumers' GOGC is (process.ConsumerGCPercent):
// a binary run outside the images needs it in its environment.
//
// Why: Go's system monitor (sysmon) sleeps deeply while all of a process's
// processors (Ps) are idle, and the next system call wakes it (a futex wake
// and a thread switch); it then polls every 20 µs for at least a
// millisecond before it backs off. A service that gets a message every few
// hundred microseconds goes idle and busy again around each one, so it pays
// that wake-up and those polls per message. Measured on the project's
// two-core machine at 1,000 msg/s (docs/performance.md, "the sixth round"):
// sysmon was 3.0% of all the machine's CPU in the gateways, 1.9% in the
// ai-consumer and 1.3% in the relay, and 0.15 / 0.09 / 0.09% with this
// setting; the gateways' CPU per message fell 9–23% (mean 14–16%) at 1,000
// and 2,000 msg/s, the consumers' 0–8%, and every service's about a fifth
// at 50 msg/s. (golang/go#18236 reports the same cost elsewhere.)
//
// How: with schedtrace set, sysmon never sleeps deeply — it must stay awake
// to print the scheduler trace (runtime/proc.go, sysmon) — and so backs off
// to its 10 ms poll and stays there while there is nothing to retake. The
// interval is the largest the runtime accepts, 2³¹−1 ms (24.8 days): the
// one-line trace goes to standard error, the logs' stream being standard
// output, once at start on a host up longer than that and then every 24.8
// days. An idle process pays about 2.5 ms of CPU a second more (sysmon
// polling at 10 ms instead of sleeping). And a goroutine blocked in a
// system call that does not go through the network poller (a log line
// written to a full pipe) keeps its P for up to about 10 ms before sysmon
// hands the P to another thread, not about 20 µs: with two or more Ps the
// others run on meanwhile; with one (what the deployments run,
// DeployedGOMAXPROCS) the process waits. The services make no such call per
// message.
const SysmonGODEBUG = "schedtrace=2147483647"

// DeployedGOMAXPROCS is how many Ps (threads running Go code at once) the
// shipped deployments run every service with: docker-compose.yml sets it,
// and the Helm chart sets each container's GOMAXPROCS to its CPU request
// rounded up, which is this with the chart's default requests
// (internal/deploycheck and internal/chartcheck keep the three equal). So
// every service process a test starts runs with it too (testinfra.Process),
// the performance harness's included — PERF_ENV="GOMAXPROCS=" measures
// without it (an empty value is Go's default).
//
// Why: without a CPU limit Go runs as many Ps as the host has cores, and a
// service that needs less than one core pays for the idle ones — each
// goroutine made ready while a P is idle wakes a thread to run it (a futex
// wake and a thread switch, several times dearer in a virtual machine than
// on bare metal). At the rates one host serves, each service needs well
// under one core (docs/scaling.md); more of them is more instances.
// Measured on the project's two-core machine, every service at 1 against
// 2 (docs/performance.md, "the eighth round"): each service's CPU per
// message 5–21% lower at 1,000 msg/s, about a tenth at 2,000 and 3,000,
// and 12–26% at 50 msg/s; the gateways' context switches per message 43%
// fewer at 1,000 msg/s; the median latency lower at 2,000 and 3,000 msg/s.
//
// What it gives up: the process runs Go code on one core at a time (more
// instances, or a larger CPU request in the chart, give more), and a
// goroutine blocked in a system call that does not go through the network
// poller holds that one P until sysmon retakes it (about 10 ms with
// SysmonGODEBUG). The services make no such call per message; the one
// they make per connection is a refusal's log line, which blocks only
// while the log's reader lets the pipe fill.
const DeployedGOMAXPROCS = "1"
