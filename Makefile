# Quick start: `make demo` (prune the bundled trained model end to end) and `make test`.
# Both create .venv and install what they need on first use. torch is pinned to the CPU wheel here
# (fast, on this machine's disk); the package itself accepts any torch >= 2.4 so GPU users keep theirs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIN)
	$(BIN)/python -m pip install -q -e ".[dev,eval,esd,zoo]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hf-prune demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check hf_prune tests benchmarks examples
	$(BIN)/ruff format --check hf_prune tests benchmarks examples

clean:
	rm -rf $(VENV) demo_out .pytest_cache
