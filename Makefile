# Set-up and entry points. Every target creates .venv/ and installs the pinned requirements first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# N sets the number of generated invoices; each target has its own default.

.PHONY: install demo up test lint bench bench-latency bench-faults bench-validation clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or newer"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/invoice-delivery demo --invoices $(or $(N),1000)

up: $(STAMP)
	$(BIN)/invoice-delivery up

test: $(STAMP)
	$(BIN)/ruff check dags plugins tests benchmarks
	$(BIN)/pytest

# The latency measurement feeds invoices for ten minutes per schedule, so it has its own target.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench_scale --invoices $(or $(N),1000000) --latency-seconds 0

bench-latency: $(STAMP)
	$(BIN)/python -m benchmarks.latency --seconds 600 --schedules 5,1,30s --plots-dir docs

bench-faults: $(STAMP)
	$(BIN)/python -m benchmarks.bench_faults --invoices $(or $(N),10000)

bench-validation: $(STAMP)
	$(BIN)/python benchmarks/bench_validation.py $(or $(N),100000)

lint: $(STAMP)
	$(BIN)/ruff check dags plugins tests benchmarks

clean:
	rm -rf .data
