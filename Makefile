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
	$(PY) -m pip install -e ".[engine,dev]"

demo: install
	bash scripts/demo.sh

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

bench:
	$(PY) bench/engine_bench.py
	$(PY) bench/retrieval_bench.py
	$(PY) bench/judge_variants.py
	$(PY) bench/eval_topk.py

lint:
	$(VENV)/bin/ruff check rag ingest tests bench
	$(VENV)/bin/mypy

engine:
	$(VENV)/bin/rag engine

serve:
	$(VENV)/bin/rag serve

clean:
	rm -rf storage/chroma storage/manifest-*.json storage/rag.lock
