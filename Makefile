# likeboard's everyday commands. CI runs `make test` (see .ci/run).
#
#   make run          build and serve on http://127.0.0.1:8080 (in-memory store)
#   make test         install what the tests need, then fmt, clippy and every test suite
#   make bench        the load benchmark; `make bench-quick` for a short run;
#                     ONLY=storm (or another phase) runs one phase
#
# Pass flags to the server with ARGS, e.g. `make run ARGS="--seed-routes"`.
# Set REDIS_URL (or ARGS="--redis-url ...") to run against Redis.

# Recipes use bash (ulimit -Hn, `command -v`); every Debian has it.
SHELL := /bin/bash
CARGO ?= cargo
ARGS ?=

# Debian packages the test suites use, installed by `make test-deps` when the
# program is not on PATH. The tests start their own redis-server on free ports
# (or use $LIKEBOARD_TEST_REDIS_SERVER); the browser tests drive chromium;
# tests/deploy.rs checks deploy/ with systemd-analyze (package systemd) and
# nginx; tests/ops.rs parses /metrics with Python's prometheus_client.
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build run test test-deps fmt-check lint bench bench-quick

all: test

build:
	$(CARGO) build --release --locked

# `cargo run` finds the binary wherever the target directory is. REDIS_URL is
# left alone: unset means the in-memory store; the server prints its URL.
run: build
	$(CARGO) run --release --locked --quiet -- $(ARGS)

# The tests open thousands of connections at once: raise the soft open-files
# limit to the hard limit in the same shell that runs them.
test: test-deps fmt-check lint
	@hard=$$(ulimit -Hn); \
	ulimit -n "$$hard" 2>/dev/null || echo "make: could not raise the open-files limit to $$hard"; \
	echo "make: running cargo test with an open-files limit of $$(ulimit -n)"; \
	$(CARGO) test --locked

# Finds redis-server and chromium, installs whichever is missing with apt-get
# (one update, one install), and says what it found and what it did.
test-deps:
	@missing=""; \
	if [ -n "$${LIKEBOARD_TEST_REDIS_SERVER:-}" ] && [ -x "$$LIKEBOARD_TEST_REDIS_SERVER" ]; then \
		echo "make: found redis-server at $$LIKEBOARD_TEST_REDIS_SERVER (LIKEBOARD_TEST_REDIS_SERVER)"; \
	elif command -v redis-server >/dev/null 2>&1; then \
		echo "make: found $$(command -v redis-server): $$(redis-server --version)"; \
	else \
		echo "make: redis-server is not on PATH"; missing="$$missing redis-server"; \
	fi; \
	if command -v chromium >/dev/null 2>&1; then \
		echo "make: found $$(command -v chromium)"; \
	else \
		echo "make: chromium is not on PATH"; missing="$$missing chromium"; \
	fi; \
	for tool in systemd-analyze:systemd nginx:nginx ss:iproute2; do \
		if PATH="$$PATH:/usr/sbin:/sbin" command -v "$${tool%%:*}" >/dev/null 2>&1; then \
			echo "make: found $$(PATH="$$PATH:/usr/sbin:/sbin" command -v $${tool%%:*})"; \
		else \
			echo "make: $${tool%%:*} is not on PATH"; missing="$$missing $${tool#*:}"; \
		fi; \
	done; \
	for tool in fmt:rustfmt clippy:clippy; do \
		if ! $(CARGO) $${tool%%:*} --version >/dev/null 2>&1; then \
			echo "make: cargo $${tool%%:*} is missing; adding the $${tool#*:} component with rustup"; \
			rustup component add "$${tool#*:}" || exit 1; \
		fi; \
	done; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "make: please install:$$missing (no apt-get on this machine)" >&2; exit 1; \
		fi; \
		echo "make: installing the Debian package(s)$$missing with apt-get"; \
		$(SUDO) $(APT_GET) update -q && \
		$(SUDO) $(APT_GET) install -y -q $$missing || exit 1; \
		for program in $$missing; do \
			[ "$$program" = systemd ] && program=systemd-analyze; \
			[ "$$program" = iproute2 ] && program=ss; \
			PATH="$$PATH:/usr/sbin:/sbin" command -v "$$program" >/dev/null 2>&1 \
				|| { echo "make: $$program is still not on PATH after installing" >&2; exit 1; }; \
			echo "make: installed $$(PATH="$$PATH:/usr/sbin:/sbin" command -v $$program)"; \
		done; \
	fi; \
	if python3 -c 'import prometheus_client' >/dev/null 2>&1; then \
		echo "make: found Python's prometheus_client"; \
	else \
		echo "make: installing Python's prometheus_client (tests/ops.rs parses /metrics with it)"; \
		python3 -m pip install --quiet prometheus_client \
			|| $(SUDO) $(APT_GET) install -y -q python3-prometheus-client || exit 1; \
		python3 -c 'import prometheus_client' \
			|| { echo "make: python3 still cannot import prometheus_client" >&2; exit 1; }; \
	fi

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --all-targets --locked -- -D warnings

# ONLY=PHASE runs one phase (burst, ceiling, likes, fan-out, storm, capacity,
# restart) into target/bench-only.md, e.g. `make bench ONLY=storm`.
BENCH_ONLY = $(if $(ONLY),--only $(ONLY))

bench:
	$(CARGO) bench --bench load -- $(BENCH_ONLY)

bench-quick:
	$(CARGO) bench --bench load -- --quick $(BENCH_ONLY)
