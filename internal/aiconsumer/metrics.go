package aiconsumer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chat/internal/llm"
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
	// fallbacks counts calls passed on from one model to the next.
	fallbacks *prometheus.CounterVec
	delayed   *prometheus.CounterVec
}

// The model label is the router's target name (llm.Router): configured,
// so bounded.

// Retry counts a call to model retried after an error of class
// (llm.RouterObserver).
func (m *metrics) Retry(model, class string) { m.retries.WithLabelValues(class, model).Inc() }

// BreakerState shows model's breaker state one-hot (llm.RouterObserver).
func (m *metrics) BreakerState(model, state string) {
	for _, s := range breakerStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.breaker.WithLabelValues(s, model).Set(v)
	}
}

// Fallback counts a call passed on from model to the next after an error
// of class (llm.RouterObserver).
func (m *metrics) Fallback(model, class string) { m.fallbacks.WithLabelValues(model, class).Inc() }

// addModels creates the known series of each model (in the router's
// order) at zero, so rates and alerts work before the first event. The
// last model has no next one to fall back to.
func (m *metrics) addModels(models []string) {
	for i, model := range models {
		for _, c := range retryClasses {
			m.retries.WithLabelValues(c, model)
		}
		for _, v := range outcomes {
			m.requests.WithLabelValues(v, model)
			if i < len(models)-1 && v != "ok" && v != "canceled" {
				m.fallbacks.WithLabelValues(model, v)
			}
		}
	}
}

var (
	retryClasses  = []string{"rate_limited", "server", "timeout", "transport", "other"}
	outcomes      = []string{"ok", "rate_limited", "server", "client", "auth", "timeout", "transport", "canceled", "circuit_open", "other"}
	breakerStates = []string{"closed", "half-open", "open"}
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "requests_total",
			Help: "Model calls by outcome (ok, or the error class: rate_limited, server, client, auth, timeout, transport, canceled) and model (the target that answered, or whose error ended the call).",
		}, []string{"outcome", "model"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: telemetry.Namespace, Subsystem: "llm", Name: "request_seconds",
			Help:    "Latency of one request to the model (a retry is another request; waits between them are not counted).",
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
		Help: "Model calls retried, by the class of the error that caused the retry and model.",
	}, []string{"class", "model"})
	m.breaker = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "llm", Name: "breaker_state",
		Help: "Circuit breaker state around calls to each model, one-hot (closed, half-open, open).",
	}, []string{"state", "model"})
	m.inflight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: telemetry.Namespace, Subsystem: "llm", Name: "in_flight",
		Help: "Requests to the model in flight in this instance (a message waiting between requests holds none).",
	})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "llm", Name: "fallbacks_total",
		Help: "Model calls passed on to the next configured model (LLM_FALLBACKS), by the model left and the class of its error.",
	}, []string{"model", "class"})
	m.delayed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: telemetry.Namespace, Subsystem: "ai", Name: "answers_delayed_total",
		Help: "Status envelopes (delayed) produced: messages still waiting for the model ANSWER_DELAYED_AFTER after acceptance, by why it waited (rate_limited, failing, breaker_open).",
	}, []string{"reason"})
	for _, r := range []string{llm.WaitRateLimited, llm.WaitFailing, llm.WaitBreakerOpen} {
		m.delayed.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.latency, m.tokens, m.answers, m.reused, m.retries, m.breaker, m.inflight, m.fallbacks, m.delayed)
	m.tokens.WithLabelValues("prompt")
	m.tokens.WithLabelValues("completion")
	m.answers.WithLabelValues("response")
	m.answers.WithLabelValues("error")
	return m
}
