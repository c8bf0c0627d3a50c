package perf

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/process"
)

// traceSink stands in for the collector when PERF_TRACES is on: it takes
// the services' OTLP/HTTP trace exports, keeps of them only the times of
// each message's hop spans (stages_test.go), and discards them, so a run
// measures what exporting every span costs the services (batching,
// protobuf encoding, the HTTP requests) without a collector's or Tempo's
// CPU on the same two cores. It runs in the test process, whose CPU the
// tables show as the broker's.
type traceSink struct {
	srv      *httptest.Server
	requests atomic.Int64
	bytes    atomic.Int64
	refused  atomic.Int64 // anything but a POST to /v1/traces
	// undecoded counts exports whose spans could not be read for stages.
	undecoded atomic.Int64
	stages    *stages
}

func startTraceSink(t *testing.T) *traceSink {
	t.Helper()
	s := &traceSink{stages: newStages()}
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
	body, _ := io.ReadAll(r.Body)
	s.requests.Add(1)
	s.bytes.Add(int64(len(body)))
	if err := s.take(r.Header.Get("Content-Encoding"), body); err != nil {
		s.undecoded.Add(1)
	}
	// An empty ExportTraceServiceResponse: everything accepted.
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(http.StatusOK)
}

// take hands an export's spans to the stages.
func (s *traceSink) take(encoding string, body []byte) error {
	if encoding == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return err
		}
		if body, err = io.ReadAll(zr); err != nil {
			return err
		}
	}
	return s.stages.add(body)
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
	return fmt.Sprintf("traces exported to the sink: %d requests, %.1f MiB (%s per answered message), %d refused, %d not decoded", req, float64(b)/(1<<20), per, refused, s.undecoded.Load())
}

// The sink takes what the services' exporter sends — the real OTLP/HTTP
// exporter, as the services build it from OTEL_EXPORTER_OTLP_ENDPOINT —
// and answers so that the exporter reports no error; anything else is
// refused and counted.
func TestTraceSinkTakesOTLPExports(t *testing.T) {
	sink := startTraceSink(t)
	for _, kv := range sink.env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	// A gateway's chat.receive span, plain and gzip'd (the exporter's
	// OTEL_EXPORTER_OTLP_COMPRESSION): each reaches the stages.
	for i, opts := range [][]otlptracehttp.Option{nil, {otlptracehttp.WithCompression(otlptracehttp.GzipCompression)}} {
		exp, err := otlptracehttp.New(context.Background(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		span := tracetest.SpanStub{
			Name:        "chat.receive",
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{15: byte(i + 1)}, SpanID: trace.SpanID{7: 1}}),
			Resource:    resource.NewSchemaless(semconv.ServiceName(process.Gateway)),
		}.Snapshot()
		if err := exp.ExportSpans(context.Background(), []sdktrace.ReadOnlySpan{span}); err != nil {
			t.Fatalf("export to the sink: %v", err)
		}
		_ = exp.Shutdown(context.Background())
	}
	if sink.requests.Load() != 2 || sink.bytes.Load() == 0 || sink.undecoded.Load() != 0 {
		t.Fatalf("sink took %d requests, %d bytes, %d not decoded; want 2 requests with a body, all decoded",
			sink.requests.Load(), sink.bytes.Load(), sink.undecoded.Load())
	}
	if n := len(sink.stages.traces); n != 2 {
		t.Fatalf("the stages hold %d messages, want the 2 exported", n)
	}

	resp, err := http.Get(sink.srv.URL + "/v1/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || sink.refused.Load() != 1 {
		t.Fatalf("GET /v1/metrics: status %d, refused %d; want 404, 1", resp.StatusCode, sink.refused.Load())
	}
	if note := sink.note(1); !strings.Contains(note, "2 requests") || !strings.Contains(note, "1 refused") || !strings.Contains(note, "0 not decoded") {
		t.Fatalf("note %q", note)
	}
}
