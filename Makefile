# Journeys: every target creates .venv and installs the project first when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

LOG    ?= var/sample/segment.jsonl
SOURCE ?= segment
SQL    ?= SELECT channel, count() AS touchpoints FROM journeys.touchpoints FINAL GROUP BY channel ORDER BY touchpoints DESC

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-integration lint format demo run broker worker sink \
        migrate replay replay-sample generate query up down logs bench bench-queries clean \
        status clean-data

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-17s %s\n",$$1,$$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Journeys with its test tools

test: $(STAMP) ## run every test (unit, then integration on a real broker and ClickHouse engine)
	$(BIN)/pytest

test-unit: $(STAMP) ## tests that need no broker
	$(BIN)/pytest tests/unit

test-integration: $(STAMP) ## tests on the real local broker and chDB
	$(BIN)/pytest tests/integration

lint: $(STAMP) ## ruff, ruff-format and mypy: the one quality gate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: $(STAMP) ## the main job on the embedded default: sample data through the whole stack
	$(BIN)/journeys demo

run: $(STAMP) ## broker + worker + sink in the foreground (Ctrl-C stops all)
	$(BIN)/journeys run

broker: $(STAMP) ## only the embedded broker
	$(BIN)/journeys broker

worker: $(STAMP) ## only a stream worker
	$(BIN)/journeys worker

sink: $(STAMP) ## only the ClickHouse sink
	$(BIN)/journeys sink

migrate: $(STAMP) ## apply the ClickHouse DDL
	$(BIN)/journeys migrate

generate: $(STAMP) ## write sample logs to var/sample
	$(BIN)/journeys generate --out var/sample

replay: $(STAMP) ## publish a log: make replay LOG=path SOURCE=segment
	$(BIN)/journeys replay $(LOG) --source $(SOURCE)

# replay-sample: the generated files hold a few malformed records on purpose, so the
# replay exits 1 after publishing them as dead letters; the `-` prefix lets make go on.
# --source auto merges the seven sources in event time, as they happened.
replay-sample: generate ## generate the sample logs and replay all sources (needs `make run` elsewhere)
	-$(BIN)/journeys replay --source auto var/sample/segment.jsonl var/sample/sendgrid.jsonl \
		var/sample/twilio.jsonl var/sample/shopify.jsonl var/sample/interactions.jsonl \
		var/sample/pos.csv var/sample/ads.csv

query: $(STAMP) ## run SQL: make query SQL="SELECT ..."
	$(BIN)/journeys query "$(SQL)"

COMPOSE ?= docker compose

up: ## production-like stack in Docker: Kafka (KRaft), Schema Registry, ClickHouse, Journeys
	$(COMPOSE) up -d --build --wait --wait-timeout 300
	@echo "Kafka localhost:9094  Schema Registry http://localhost:8081  ClickHouse http://localhost:8123  collector http://localhost:8088"

down: ## stop the Docker stack (the data stays in its volumes; `docker compose down -v` erases it)
	$(COMPOSE) down

logs: ## follow the Docker stack's logs (make logs SERVICE=worker for one service)
	$(COMPOSE) logs -f --tail=200 $(SERVICE)

# bench: installs the optional `bench` extra (ChannelAttribution, py-spy...) when missing;
# if it cannot be installed, the benchmark still runs and records why. BENCH_ARGS is
# passed on, e.g. make bench BENCH_ARGS="--events 40000 --only bare_pipe".
bench: $(STAMP) ## throughput vs the bare pipe, latency, attribution, memory -> bench/results.json
	-@$(BIN)/python -c "import ChannelAttribution, pandas" >/dev/null 2>&1 && test -x $(BIN)/py-spy \
		|| $(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

status: $(STAMP) ## where the local data lives, its size, and what runs
	$(BIN)/journeys status

clean-data: $(STAMP) ## remove all local data (broker topics, worker state, ClickHouse, demo) for good
	$(BIN)/journeys reset --yes

# bench-queries: a year of data generated in-engine (10M touchpoints; TOUCHPOINTS=1000000
# for a quicker run), each analyst query's query time and `journeys query` time.
TOUCHPOINTS ?= 10000000
bench-queries: $(STAMP) ## analysts' queries at a year of data, query and CLI time -> bench/results.json
	$(BIN)/python -m bench.queries --touchpoints $(TOUCHPOINTS) $(BENCH_QUERIES_ARGS)

clean: ## remove local state (var/) and caches, keep .venv
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis
