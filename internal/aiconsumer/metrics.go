package aiconsumer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/telemetry"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  prometheus.Histogram
	tokens   *prometheus.CounterVec
	answers  *prometheus.CounterVec
	reused   prometheus.Counter
	retries  *prometheus.CounterVec
	breaker  *prometheus.GaugeVec
	inflight prometheus.Gauge
}

// Retry counts a model call retried after an error of class (llm.Observer).
func (m *metrics) Retry(class string) { m.retries.WithLabelValues(class).Inc() }

// BreakerState shows the breaker's state one-hot (llm.Observer).
func (m *metrics) BreakerState(state string) {
	for _, s := range breakerStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.breaker.WithLabelValues(s).Set(v)
	}
}

var breakerStates = []string{"closed", "half-open", "open"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "requests_total",
			Help: "Model calls by outcome: ok, or the error class (rate_limited, server, client, auth, timeout, transport, canceled).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "request_seconds",
			Help:    "Latency of one model call.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60},
		}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "tokens_total",
			Help: "Tokens used by model calls, by kind (prompt, completion).",
		}, []string{"kind"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "ai", Name: "answers_total",
			Help: "Answers produced to the responses topic, by type (response, error).",
		}, []string{"type"}),
	}
	m.reused = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "ai", Name: "answers_reused_total",
		Help: "Redelivered messages answered from the stored answer instead of calling the model again.",
	})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "llm", Name: "retries_total",
		Help: "Model calls retried, by the class of the error that caused the retry.",
	}, []string{"class"})
	m.breaker = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "llm", Name: "breaker_state",
		Help: "Circuit breaker state around model calls, one-hot (closed, half-open, open).",
	}, []string{"state"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "llm", Name: "in_flight",
		Help: "Model calls in flight in this instance.",
	})
	reg.MustRegister(m.requests, m.latency, m.tokens, m.answers, m.reused, m.retries, m.breaker, m.inflight)
	m.BreakerState("closed")
	for _, c := range []string{"rate_limited", "server", "timeout", "transport", "other"} {
		m.retries.WithLabelValues(c)
	}
	for _, v := range []string{"ok", "rate_limited", "server", "client", "auth", "timeout", "transport", "canceled", "circuit_open", "other"} {
		m.requests.WithLabelValues(v)
	}
	m.tokens.WithLabelValues("prompt")
	m.tokens.WithLabelValues("completion")
	m.answers.WithLabelValues("response")
	m.answers.WithLabelValues("error")
	return m
}
