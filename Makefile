# MetaHub: `make demo` runs the product on its embedded default; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench soak clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: install
	./scripts/install-system-deps.sh demo
	$(BIN)/metahub demo

test: install
	./scripts/install-system-deps.sh test
	$(BIN)/python -m pytest

# Unit, in-process and integration tests: no container runtime, none of the slow ones; two
# processes, one per core of the machines this project runs on (`make test` stays serial).
test-fast: install
	./scripts/install-system-deps.sh fast
	$(BIN)/python -m pytest -m "not e2e and not slow" -n 2

# Benchmarks, not tests: tables on stdout, JSON under benchmarks/results/ (committed for docs).
bench: install
	./scripts/install-system-deps.sh test
	$(BIN)/python -m benchmarks

# Ten minutes of mixed traffic while the upstream fails (benchmarks/soak.py); not in `test`.
soak: install
	./scripts/install-system-deps.sh test
	$(BIN)/python -m benchmarks.soak

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
