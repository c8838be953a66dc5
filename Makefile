# `make dev` installs everything and starts dagster dev; `make test` installs and tests.
# Everything is installed from uv.lock, the exact set CI tests. `make lock` re-resolves it to the
# newest releases that fit pyproject.toml's ranges; upgrading is that, plus `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv itself comes from PyPI through pip, into a folder of its own, at a pinned version.
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
EXTRAS := --extra dev --extra postgres --extra celery
# Never download a Python: use the one that runs make.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install dev test lint format typecheck docs pytest bench lock upgrade test-latest clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

# Runs every time (a no-op in about 50 ms when .venv already matches the lock).
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set (as on CI), nothing would cache
# the .pyc files, and every process would compile dagster and mlflow again (seconds each).
install: $(UV)
	@$(UV) sync --quiet --locked --compile-bytecode $(EXTRAS) --python $(PYTHON) || { \
		echo >&2; \
		echo "make: could not install from uv.lock (see uv's message above)." >&2; \
		echo "      If pyproject.toml changed, run 'make lock' and commit uv.lock." >&2; \
		exit 1; }

lock: $(UV)
	$(UV) lock --python $(PYTHON)

# Re-resolve every package to its newest release within pyproject.toml's ranges.
upgrade: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

# The suite against the newest releases within pyproject.toml's ranges, in a throwaway copy of
# the checkout (uv.lock and .venv untouched). Run it before `make upgrade`, and weekly; CI does not.
test-latest: $(UV)
	UV=$(UV) PYTHON=$(PYTHON) ./scripts/test_latest.sh $(PYTEST_ARGS)

dev: install
	./scripts/dev.sh

lint: install
	$(BIN)/ruff check src tests shop
	$(BIN)/ruff format --check src tests shop

format: install
	$(BIN)/ruff format src tests shop
	$(BIN)/ruff check --fix src tests shop

typecheck: install
	$(BIN)/mypy

# Three workers (pytest-xdist) on two cores: much of the suite's time is spent waiting on
# subprocesses, servers and simulated LLM latency, and with two workers the suite's last
# minutes left a core idle. Tests that start many processes at once share the xdist_group
# "concurrency" and run one at a time.
pytest: install
	$(BIN)/python -m pytest -n 3 --dist loadgroup

# The documentation site (mkdocs.yml, docs/), with warnings as errors: a broken link, a
# missing anchor or a YAML reference that lags the schema fails it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck docs pytest

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(TOOLS) storage history schedules logs .logs_queue .nux .telemetry mlflow.db mlflow.db.lock mlruns \
		.pytest_cache .mypy_cache .ruff_cache site
