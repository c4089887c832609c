# Two commands do all the set-up and the work on a fresh machine with Python 3.11:
#   make run    virtual environment + dlcli, then the built-in default experiment
#   make test   the same environment plus the dev extras, then the whole test suite (-n auto: cores + 1 workers, see tests/conftest.py)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test faults install dev clean

$(BIN)/dlcli: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(BIN)/dlcli

install: $(BIN)/dlcli

$(VENV)/.dev: $(BIN)/dlcli
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.dev

dev: $(VENV)/.dev

run: install
	$(BIN)/dlcli train --run-dir runs/default --overwrite

test: dev
	$(BIN)/python -m pytest -q -n auto --dist worksteal

faults: dev
	DLCLI_FAULT_MOMENTS=20 $(BIN)/python -m pytest -q -n auto tests/test_faults.py -k random_moment

clean:
	rm -rf $(VENV) runs .pytest_cache
