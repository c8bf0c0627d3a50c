# syntax=docker/dockerfile:1
#
# One image for every service: the build stage compiles all binaries under
# services/ (websocket-server, ai-consumer, message-relay, devstack) and the
# final stage copies them to /usr/local/bin. The SERVICE build argument picks
# the entrypoint through the /usr/local/bin/app symlink:
#
#   docker build --build-arg SERVICE=ai-consumer -t chatrelay/ai-consumer .
#
# Every binary also answers `<binary> healthcheck`, so the image needs no
# curl; `/usr/local/bin/app healthcheck` checks whichever service it runs.

# The Go image is pinned to the patch release go.mod names: the official
# images set GOTOOLCHAIN=local, so a floating tag such as 1.26-bookworm that
# resolves to an older cached 1.26.x refuses to build a module that needs
# go 1.26.8 instead of fetching the newer toolchain. internal/deploycheck
# fails when this tag and go.mod's go line differ.
FROM golang:1.26.8-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOCACHE=/go-build-cache

# Dependencies first, so source edits keep the module download cached.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/go-build-cache \
    mkdir -p /out && \
    go build -trimpath -ldflags "-s -w" -o /out/ ./services/...

FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 chat \
    && useradd --system --uid 10001 --gid chat --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin chat

COPY --from=build /out/ /usr/local/bin/

ARG SERVICE=websocket-server
RUN test -x "/usr/local/bin/${SERVICE}" \
        || { echo "SERVICE=${SERVICE}: no such binary in /usr/local/bin" >&2; exit 1; } \
    && ln -s "${SERVICE}" /usr/local/bin/app
ENV SERVICE=${SERVICE} \
    HTTP_ADDR=:8080 \
    OPS_ADDR=:9090
# Keeps the Go runtime's system monitor from sleeping deeply and being
# woken by the next system call, which a service handling a message every
# few hundred microseconds paid per message: 9–23% of the gateways' CPU at
# 1,000–2,000 msg/s, less for the consumers (internal/config/runtime.go,
# docs/performance.md).
# The trace it names is printed to stderr at most every 24.8 days. Keep it
# when setting GODEBUG for anything else (comma-separated).
ENV GODEBUG=schedtrace=2147483647

USER 10001:10001
# 8080: websocket-server's public listener; 9090: /metrics /healthz /readyz.
EXPOSE 8080 9090

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/app", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/app"]
