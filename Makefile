# Two set-up-free entry points (see README): `make quickstart` and `make test-all` (CI's); `make test` is the
# quick subset.
# Each creates or refreshes .venv itself: torch==2.13.0 first (the CPU wheel; any other torch spec pulls
# several GB of CUDA packages), then compressor with its dev extras. Re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_SPEC ?= torch==2.13.0

.PHONY: env quickstart test test-all clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/compress run recipes/quickstart.yaml --out runs/quickstart --overwrite

# The quick loop while editing: lint + the unit tests not marked slow (about 1.5 minutes here).
test: $(STAMP)
	$(VENV)/bin/ruff check compressor tests benchmarks scripts examples
	$(PY) -m pytest -q tests/unit -m "not slow"

# Everything, as CI runs it (.ci/run): unit, integration, slow (about 14 minutes here).
test-all: $(STAMP)
	$(VENV)/bin/ruff check compressor tests benchmarks scripts examples
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
