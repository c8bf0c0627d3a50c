package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/auth"
	"github.com/chatrelay/chat/internal/protocol"
	"github.com/chatrelay/chat/internal/ratelimit"
	"github.com/chatrelay/chat/internal/telemetry"
)

// Why an answer was not written to a socket: the label values of
// chat_gateway_deliveries_dropped_total. A socket that closes for being
// slow or failing a write drops under its close reason.
const (
	dropClosed  = "closed"          // the socket was closing
	dropInvalid = "invalid_payload" // the published payload did not decode
)

var dropReasons = []string{dropClosed, protocol.SlowConsumer.Reason, protocol.WriteError.Reason, dropInvalid}

type metrics struct {
	open          prometheus.Gauge
	connects      *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	frames        *prometheus.CounterVec
	accepted      prometheus.Counter
	rejected      *prometheus.CounterVec
	produce       *prometheus.HistogramVec
	e2e           prometheus.Histogram
	dropped       *prometheus.CounterVec
	users         prometheus.GaugeFunc
	replayed      prometheus.Counter
	replayRetries prometheus.Counter
	duplicates    prometheus.Counter
	limited       *prometheus.CounterVec
	authRefusals  *prometheus.CounterVec
	limitErrors   *prometheus.CounterVec
}

// socketLimit is LIMIT_INSTANCE_SOCKETS, exported so the capacity alert
// divides by the configured limit instead of a number of its own.
func newMetrics(reg prometheus.Registerer, users func() float64, socketLimit int) *metrics {
	ns := telemetry.Namespace
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: "ws", Name: "connections",
			Help: "Open WebSocket connections on this instance."}),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "ws", Name: "connects_total",
			Help: protocol.Help(protocol.Connect, "Connection attempts by outcome")}, []string{"outcome"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "ws", Name: "disconnects_total",
			Help: protocol.Help(protocol.Disconnect, "Closed connections by reason")}, []string{"reason"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "ws", Name: "frames_total",
			Help: "Frames by direction (in, out) and type."}, []string{"direction", "type"}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "messages_accepted_total",
			Help: "Client messages acknowledged by the broker."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "messages_rejected_total",
			Help: protocol.Help(protocol.Frame, "Client frames refused with an error frame, by reason")}, []string{"reason"}),
		produce: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: "gateway", Name: "produce_seconds",
			Help:    "Time from accepting a frame to the broker's acknowledgement, by outcome (ok, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"outcome"}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "end_to_end_latency_seconds",
			Help:    "From accepting a message to writing its answer to the socket.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2, 3, 5, 10, 30, 60}}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "deliveries_dropped_total",
			Help: "Answers not written to a socket, by reason (closed, slow_consumer, write_error)."}, []string{"reason"}),
		users: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: "gateway", Name: "subscribed_users",
			Help: "Users with a live Redis subscription on this instance."}, users),
	}
	m.addDeliveryAndLimits()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Subsystem: "ws", Name: "connections_limit",
		Help: "Most WebSocket connections this instance accepts (LIMIT_INSTANCE_SOCKETS; 0: no limit)."}, func() float64 { return float64(socketLimit) }))
	reg.MustRegister(m.replayed, m.replayRetries, m.duplicates, m.limited, m.authRefusals, m.limitErrors)
	reg.MustRegister(m.open, m.connects, m.disconnects, m.frames, m.accepted, m.rejected, m.produce, m.e2e, m.dropped, m.users)
	m.zero()
	return m
}

// addDeliveryAndLimits makes the replay, duplicate and limit counters.
func (m *metrics) addDeliveryAndLimits() {
	ns := telemetry.Namespace
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "replayed_total",
		Help: "Answers sent from history on connect or resume (missed while away)."})
	m.replayRetries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "replay_retries_total",
		Help: "History reads of a replay that failed and were retried; when retries run out the socket closes with 1013 (replay_failed)."})
	m.duplicates = prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "duplicates_dropped_total",
		Help: "Answers not sent again on a connection that already had them (redelivery, resume overlap)."})
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "gateway", Name: "limited_total",
		Help: "Requests refused by an abuse limit, by limit."}, []string{"limit"})
	m.authRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "auth", Name: "refusals_total",
		Help: "Connection attempts refused for their token, by reason."}, []string{"reason"})
	m.limitErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: "ratelimit", Name: "errors_total",
		Help: "Limit checks that failed (Redis unreachable), by limit; message limits then let the message through."}, []string{"limit"})
}

// zero starts every known label value at zero, so rates and alerts work
// before the first event of each kind.
func (m *metrics) zero() {
	for _, l := range ratelimit.Names() {
		m.limited.WithLabelValues(l)
		m.limitErrors.WithLabelValues(l)
	}
	for _, r := range auth.Reasons() {
		m.authRefusals.WithLabelValues(r)
	}
	for _, v := range protocol.Labels(protocol.Connect) {
		m.connects.WithLabelValues(v)
	}
	for _, v := range protocol.Labels(protocol.Disconnect) {
		m.disconnects.WithLabelValues(v)
	}
	for _, v := range protocol.Labels(protocol.Frame) {
		m.rejected.WithLabelValues(v)
	}
	for _, v := range dropReasons {
		m.dropped.WithLabelValues(v)
	}
	for _, v := range [][2]string{{"in", "message"}, {"in", protocol.FrameInvalid.Reason}, {"out", "ack"}, {"out", "response"}, {"out", "error"}, {"out", "chunk"}, {"out", "status"}, {"out", "ready"}} {
		m.frames.WithLabelValues(v[0], v[1])
	}
	m.produce.WithLabelValues("ok")
	m.produce.WithLabelValues("error")
}
