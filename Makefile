# KPI Desk — developer tasks (GNU make).
# Everything runs inside a virtualenv at $(VENV), created on demand from requirements*.txt
# by scripts/venv.sh (with uv when it can be had, else pip): `make run` installs the
# runtime set (requirements.txt), the other targets the development set.

VENV ?= .venv
PY = $(VENV)/bin/python
PYTHON3 ?= python3
PORT ?= 8501
PYTEST_ARGS ?=
BENCH_ARGS ?=
SRC = kpi_store pages tests bench dashboard.py $(wildcard kpi_ui kpi_ui.py)
# mypy: the application code (not the tests or the benchmark).
TYPED = kpi_store $(wildcard kpi_ui kpi_ui.py) dashboard.py pages

RUN_STAMP = $(VENV)/.installed-run
DEV_STAMP = $(VENV)/.installed

export PYTHON3

.PHONY: help install run test lint fmt typecheck bench worker clean

help:
	@echo "KPI Desk make targets:"
	@echo "  make install   create $(VENV) and install requirements-dev.txt"
	@echo "  make run       load demo data, then start the dashboard on PORT=$(PORT)"
	@echo "  make test      run the test suite (PYTEST_ARGS='...' to pass options); starts a"
	@echo "                 throw-away PostgreSQL when its binaries are installed and"
	@echo "                 KPI_TEST_POSTGRES_URL is unset"
	@echo "  make lint      ruff check + ruff format --check + mypy"
	@echo "  make fmt       ruff format + ruff check --fix"
	@echo "  make bench     run bench/run.py (BENCH_ARGS='...')"
	@echo "  make worker    run the background refresh worker"
	@echo "  make clean     remove $(VENV), data/ and caches"

$(RUN_STAMP): requirements.txt
	bash scripts/venv.sh $(VENV) requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt
	bash scripts/venv.sh $(VENV) requirements-dev.txt
	touch $(RUN_STAMP) $@

install: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(PY) -m kpi_store demo || echo "make run: the demo data was not loaded (see the message above); starting the dashboard anyway."
	$(PY) -m streamlit run dashboard.py --server.port $(PORT)

test: $(DEV_STAMP)
	PY=$(PY) bash scripts/run-tests.sh $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check $(SRC)
	$(PY) -m ruff format --check $(SRC)
	$(PY) -m mypy $(TYPED)

typecheck: $(DEV_STAMP)
	$(PY) -m mypy $(TYPED)

fmt: $(DEV_STAMP)
	$(PY) -m ruff format $(SRC)
	$(PY) -m ruff check --fix $(SRC)

bench: $(DEV_STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

worker: $(RUN_STAMP)
	$(PY) -m kpi_store worker

clean:
	rm -rf $(VENV) data/ .pytest_cache .ruff_cache .mypy_cache .hypothesis bench/out
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
