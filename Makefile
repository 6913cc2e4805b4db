# One command each: demo, test, lint, bench. Every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Ray 2.60 turns token auth on by default; the CLI, tests and benchmarks all use the same mode.
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
ML100K ?= ../shared/data/ml-100k

.PHONY: venv demo test lint format schema bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# HAProxy fronts `recserve serve`'s replicas (Ray's Python proxy without it: slower).
	@command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy \
	  || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null 2>&1 \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null 2>&1; } \
	  || echo "note: haproxy is not installed (apt-get install haproxy): recserve serve will use Ray's slower Python proxy"
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recserve demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# schema.graphql, the printed SDL a test compares with the live schema.
schema: $(STAMP)
	$(BIN)/recserve schema

bench: $(STAMP)
	$(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.scale --sizes 100k,1m --movielens $(ML100K) --json bench-scale.json
	$(BIN)/python -m benchmarks.quality --data $(ML100K) --json bench-quality.json
	$(BIN)/python -m benchmarks.api_quality --data $(ML100K) --serve --json bench-api-quality.json
	$(BIN)/python -m benchmarks.hybrid_shapes --data $(ML100K) --json bench-hybrid-shapes.json
	$(BIN)/python -m benchmarks.serve --json bench-serve.json
	$(BIN)/python -m benchmarks.train --data $(ML100K) --json bench-train.json
	$(BIN)/python -m benchmarks.cache
	$(BIN)/python -m benchmarks.realtime
	$(BIN)/python -m benchmarks.observability
	$(BIN)/python -m benchmarks.faults --json bench-faults.json
	$(BIN)/python -m benchmarks.online --data $(ML100K) --postgres --json bench-online.json
	$(BIN)/python -m benchmarks.soak --minutes 30 --json bench-soak-embedded.json
	$(BIN)/python -m benchmarks.soak --minutes 30 --backends services --json bench-soak-services.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
