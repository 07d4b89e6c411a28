# Set-up and entry points. Every target creates .venv/ and installs the pinned requirements first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
N ?= 1000

.PHONY: install demo up test lint clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/invoice-delivery demo --invoices $(N)

up: $(STAMP)
	$(BIN)/invoice-delivery up

test: $(STAMP)
	$(BIN)/ruff check dags plugins tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check dags plugins tests

clean:
	rm -rf .data
