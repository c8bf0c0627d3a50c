# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   ?= bin

# Debian packages the tests need: command → package.
TEST_DEPS := redis-server:redis-server nginx:nginx-light kcat:kcat \
             chromium:chromium

# Fuzz targets as Name:package; `make fuzz` runs each for FUZZTIME.
FUZZ_TARGETS := FuzzDecodeClientFrame:./internal/protocol/ FuzzUnmarshal:./internal/envelope/ \
                FuzzRecordEnvelope:./internal/envelope/ FuzzVerify:./internal/auth/ FuzzVerifyClaims:./internal/auth/
FUZZTIME ?= 2m

.PHONY: run test deps tools build vet token clean help fuzz fuzz-smoke

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

run: ## the whole system in one process: embedded broker and Redis, chat at http://localhost:8080
	$(GO) run ./services/devstack

test: deps tools vet ## install missing test servers, vet, run every test with -race, then fuzz-smoke
	$(GO) test -race -timeout 20m -count=1 ./...
	@$(MAKE) --no-print-directory fuzz-smoke

# The servers the tests run at the versions compose ships — Prometheus and
# promtool, Alertmanager and amtool, the OpenTelemetry Collector — Jaeger and
# Helm (the chart's lint and render), each built from its own module under
# tools/ (their dependencies clash with ours and with each other;
# tools/<tool>/go.mod is the one place naming its version) into the user
# cache, where the tests look for them (internal/testinfra/toolcache).
# Minutes on a fresh machine, once.
tools: ## build the test-only tools (Prometheus, Alertmanager, collector, Jaeger, Helm) when missing
	@$(GO) run ./internal/testinfra/toolcache/build

.PHONY: test-cluster
test-cluster: deps tools ## the end-to-end suite with every stack on a real Redis Cluster (3+3) instead of one redis-server
	E2E_REDIS=cluster $(GO) test -race -timeout 30m -count=1 ./internal/e2e/

# fuzz-smoke counts inputs instead of timing them: with a duration, Go 1.26's
# fuzz coordinator can fail a clean run with "context deadline exceeded" as
# the time runs out (golang/go#75804, fixed in Go 1.27); a count has no
# deadline to race. 20000 inputs take 2-8 s per target here.
fuzz-smoke: ## run each fuzz target for 20000 inputs, one at a time
	@$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

fuzz: ## run each fuzz target for FUZZTIME (default 2m), one at a time; a crasher is saved under testdata/fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  name=$${t%%:*}; pkg=$${t#*:}; \
	  echo "fuzz: $$name in $$pkg for $(FUZZTIME)"; \
	  $(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

deps: ## install the Debian packages the tests need, when missing
	@missing=""; \
	for pair in $(TEST_DEPS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  if ! command -v $$cmd >/dev/null 2>&1 && [ ! -x /usr/sbin/$$cmd ] && [ ! -x /usr/bin/$$cmd ]; then missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	  for svc in redis-server nginx; do $$SUDO service $$svc stop >/dev/null 2>&1 || true; done; \
	else echo "make deps: all test servers present"; fi

vet: ## go vet over everything
	$(GO) vet ./...

build: ## build every binary into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./services/...

token: ## mint a token for a user over AUTH_SECRET: make token U=alice [TTL=24h]
	@$(GO) run ./services/devstack token -user "$(or $(U),demo)" -ttl "$(or $(TTL),24h)"

clean:
	rm -rf $(BIN)

.PHONY: loadtest
loadtest: ## load generator (docs/performance.md): make loadtest ARGS="-url ws://127.0.0.1:8080 -users 1000 -rate 5000 -duration 60s"
	$(GO) build -o $(BIN)/ ./services/loadgen
	$(BIN)/loadgen $(ARGS)

# Where `make perf` writes its results (summary.md, loadgen JSON, profiles).
PERF_OUT ?= $(abspath $(BIN))/perf/$(shell date -u +%Y%m%d-%H%M%S)

.PHONY: perf
perf: deps ## performance scenarios on the multi-process topology: make perf SCENARIO=idle1|idle2|throughput|slow|overhead|ladder|all (comma list); PERF_* knobs in internal/perf/perf_test.go
	@if [ -z "$(SCENARIO)" ]; then echo "make perf: set SCENARIO=idle1, idle2, throughput, slow, overhead, ladder, smoke or all (comma-separated)"; exit 2; fi
	PERF_SCENARIO=$(SCENARIO) PERF_OUT=$(PERF_OUT) $(GO) test -count=1 -run TestPerf -timeout 60m -v ./internal/perf/
