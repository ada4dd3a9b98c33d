# The two set-up commands: `make demo` (the pipeline on built-in data) and `make test` (the test suite).
# Both create .venv and install the package on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-interop lint format clean docs chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,dev,docs]"
	# the CPU wheel of PyTorch for the torch-backend tests (skipped when it cannot be installed)
	$(BIN)/python -m pip install -q torch==2.13.0 || echo "torch not installed: torch backend tests will be skipped"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spatialmultiomics demo --output demo_results --overwrite

# Debian's Chromium for the browser test of report.html (skipped with a message when it cannot be installed).
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: the browser test of report.html will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# SpatialData / squidpy interop in a venv of its own: spatialdata pins older dask and python-dateutil than the
# main venv has. Run by .ci/run after `make test`; in the main venv these tests are skipped. The extra asks for
# spatialdata>=0.7.3: pip otherwise settles on 0.7.0 + the newest dask, a pair that cannot write images or labels.
IVENV  := .venv-interop
IBIN   := $(IVENV)/bin
ISTAMP := $(IVENV)/.installed-stamp

$(ISTAMP): pyproject.toml
	test -x $(IBIN)/python || $(PYTHON) -m venv $(IVENV)
	$(IBIN)/python -m pip install -q --upgrade pip
	$(IBIN)/python -m pip install -q -e ".[test,interop]"
	touch $(ISTAMP)

test-interop: $(ISTAMP)
	$(IBIN)/python -m pytest -q -m interop tests/io/test_spatialdata.py tests/cli/test_export.py tests/spatial/test_squidpy_parity.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) $(IVENV) demo_results .pytest_cache .ruff_cache
