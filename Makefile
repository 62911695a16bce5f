# KPI Desk — developer tasks (GNU make).
# Everything runs inside a virtualenv at $(VENV), created on demand from requirements*.txt.

VENV ?= .venv
PY = $(VENV)/bin/python
PYTHON3 ?= python3
PORT ?= 8501
PYTEST_ARGS ?=
BENCH_ARGS ?=
SRC = kpi_store pages tests bench dashboard.py kpi_ui.py

STAMP = $(VENV)/.installed

.PHONY: help install run test lint fmt bench worker clean

help:
	@echo "KPI Desk make targets:"
	@echo "  make install   create $(VENV) and install requirements-dev.txt"
	@echo "  make run       load demo data, then start the dashboard on PORT=$(PORT)"
	@echo "  make test      run the test suite (PYTEST_ARGS='...' to pass options)"
	@echo "  make lint      ruff check + ruff format --check"
	@echo "  make fmt       ruff format + ruff check --fix"
	@echo "  make bench     run bench/run.py (BENCH_ARGS='...')"
	@echo "  make worker    run the background refresh worker"
	@echo "  make clean     remove $(VENV), data/ and caches"

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(PY) -m kpi_store demo
	$(PY) -m streamlit run dashboard.py --server.port $(PORT)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check $(SRC)
	$(PY) -m ruff format --check $(SRC)

fmt: $(STAMP)
	$(PY) -m ruff format $(SRC)
	$(PY) -m ruff check --fix $(SRC)

bench: $(STAMP)
	$(PY) bench/run.py $(BENCH_ARGS)

worker: $(STAMP)
	$(PY) -m kpi_store worker

clean:
	rm -rf $(VENV) data/ .pytest_cache .ruff_cache .hypothesis bench/out
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
