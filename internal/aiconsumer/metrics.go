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
}

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
	reg.MustRegister(m.requests, m.latency, m.tokens, m.answers, m.reused)
	for _, v := range []string{"ok", "rate_limited", "server", "client", "auth", "timeout", "transport", "canceled", "other"} {
		m.requests.WithLabelValues(v)
	}
	m.tokens.WithLabelValues("prompt")
	m.tokens.WithLabelValues("completion")
	m.answers.WithLabelValues("response")
	m.answers.WithLabelValues("error")
	return m
}
