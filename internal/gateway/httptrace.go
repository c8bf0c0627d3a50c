package gateway

import (
	"slices"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/chatrelay/chat/internal/telemetry"
)

// httpTracing starts a server span per request, named by route pattern
// (never the raw path), continuing a caller's traceparent. Probe paths are
// left out so health checks do not flood the trace backend. (otelecho is
// deprecated for echo v4, hence this small middleware.)
func httpTracing(tracer trace.Tracer, skip ...string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if slices.Contains(skip, r.URL.Path) {
				return next(c)
			}
			ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			ctx, span := tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
				telemetry.CorrelationStart(ctx, semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPRoute(route),
					attribute.String("http.request_id", r.Header.Get("X-Request-ID"))))
			defer span.End()
			c.SetRequest(r.WithContext(ctx))
			err := next(c)
			status := c.Response().Status
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
			if err != nil || status >= 500 {
				span.SetStatus(codes.Error, "")
			}
			return err
		}
	}
}
