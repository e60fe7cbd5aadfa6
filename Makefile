# The one front door. `make demo` runs the main job; `make test` is what CI runs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

.PHONY: install demo test test-fast bench lint engine serve clean

$(PY):
	python3 -m venv $(VENV)

install: $(PY)
	$(PY) -m pip install --upgrade pip
	# torch first and pinned: a CPU wheel of 2.13.0 is on the machine; anything else pulls CUDA.
	$(PY) -m pip install "torch==2.13.0"
	# llama-cpp-python: a portable build, GGML_NATIVE=OFF with AVX2/FMA/F16C and no AVX-512 or AMX (the flags
	# live in scripts/build-llama.sh only), in a wheel keyed by its flags so no stale native wheel is reused;
	# scripts/check_portable.py then disassembles the installed library to prove it.
	bash scripts/build-llama.sh $(PY)
	$(PY) -m pip install -e ".[engine,dev,eval]"
	$(PY) scripts/check_portable.py
	# all-minilm as int8 ONNX from the packaged weights (no download); skipped when already up to date.
	$(PY) scripts/export_onnx.py

demo: install
	bash scripts/demo.sh

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

# LLAMA_COMPARE=/path/to/other/python adds another llama-cpp-python build (e.g. a native one) to the comparison.
bench:
	$(PY) bench/engine_bench.py
	$(PY) bench/llama_build_bench.py $(LLAMA_COMPARE)
	$(PY) bench/retrieval_bench.py
	$(PY) bench/judge_variants.py
	$(PY) bench/eval_topk.py

lint:
	$(VENV)/bin/ruff check rag ingest tests bench scripts
	$(VENV)/bin/mypy

engine:
	$(VENV)/bin/rag engine

serve:
	$(VENV)/bin/rag serve

clean:
	rm -rf storage/chroma storage/manifest-*.json storage/manifest-*.log storage/journal-*.log storage/keyword-* storage/rag.lock
