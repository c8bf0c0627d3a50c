package perf

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// traceSink stands in for the collector when PERF_TRACES is on: it takes
// the services' OTLP/HTTP trace exports and discards them, so a run
// measures what exporting every span costs the services (batching,
// protobuf encoding, the HTTP requests) without a collector's or Tempo's
// CPU on the same two cores. It runs in the test process, whose CPU the
// tables show as the broker's.
type traceSink struct {
	srv      *httptest.Server
	requests atomic.Int64
	bytes    atomic.Int64
	refused  atomic.Int64 // anything but a POST to /v1/traces
}

func startTraceSink(t *testing.T) *traceSink {
	t.Helper()
	s := &traceSink{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *traceSink) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		s.refused.Add(1)
		http.Error(w, "only OTLP/HTTP traces here", http.StatusNotFound)
		return
	}
	n, _ := io.Copy(io.Discard, r.Body)
	s.requests.Add(1)
	s.bytes.Add(n)
	// An empty ExportTraceServiceResponse: everything accepted.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// env points every service's exporter at the sink.
func (s *traceSink) env() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + s.srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"}
}

// note is the run's line in the summary.
func (s *traceSink) note(answered int64) string {
	req, b, refused := s.requests.Load(), s.bytes.Load(), s.refused.Load()
	per := "–"
	if answered > 0 {
		per = fmt.Sprintf("%.0f B", float64(b)/float64(answered))
	}
	return fmt.Sprintf("traces exported to the sink: %d requests, %.1f MiB (%s per answered message), %d refused", req, float64(b)/(1<<20), per, refused)
}
