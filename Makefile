# icetime: `make demo` and `make test` are the two commands a new machine needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SPEED  ?= 1
RACE   ?= beijing2023_w1000a
CONFIG ?= deploy/venue.example.toml
WORKERS ?= 4

.PHONY: install demo run test bench bench-node lint clean

$(BIN)/icetime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/icetime

demo: install
	$(BIN)/icetime demo --race $(RACE) --speed $(SPEED)

run: install
	$(BIN)/icetime run --config $(CONFIG)

# Four workers on two cores (the tests mostly wait on replays, Redis and Chromium: four
# took 3:05 where two took 5:30 and three 4:10; six were slower than four), handing out
# tests by work stealing (a worker that is done takes queued tests from a busy one:
# 4:17 where plain load balancing took 4:43), then the tests marked `alone` (latency
# against their own baseline) with nothing beside them.
# Exit code 5 is "no test selected", e.g. PYTEST_ARGS naming a file with none marked.
# Bytecode is cached even where the environment says PYTHONDONTWRITEBYTECODE (this
# machine's does): otherwise every pytest worker rewrites and compiles every test module
# (4.5 s of CPU each) and every service process the tests start compiles icetime anew.
test: export PYTHONDONTWRITEBYTECODE :=
test: install
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist worksteal -m "not alone" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -q -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

bench: install
	$(BIN)/python -m bench

# The Node.js `ws` server bench/fanout_scale.py compares the fan-out with (the bench
# runs this itself when bench/node/node_modules is missing, and skips Node without npm).
bench-node:
	cd bench/node && npm ci --no-audit --no-fund

# Style and complexity (ruff), types (mypy --strict on icetime and services), dead
# code (vulture); each reads its settings from pyproject.toml.
lint: install
	$(BIN)/ruff check icetime services tests bench vulture_whitelist.py
	$(BIN)/mypy
	$(BIN)/vulture

clean:
	rm -rf $(VENV) .icetime .pytest_cache
