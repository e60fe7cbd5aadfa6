#!/usr/bin/env bash
# Builds llama-cpp-python for a portable x86-64 baseline and installs it into the given interpreter.
#
# Why this exists: llama.cpp's default GGML_NATIVE=ON compiles with -march=native, which on a VM whose
# CPU advertises AMX (or AVX-512) emits instructions another machine of the same kind faults on with
# SIGILL. pip's wheel cache ignores CMAKE_ARGS, so a native wheel once built would be reused even after
# the flags change: the wheel is built with --no-cache-dir into a folder keyed by (version, flags) and
# installed from there, so a flag change always means a new build.
#
# This file is the one place that names the flags; the Makefile, .ci/run and the Dockerfile call it.
set -euo pipefail
PY=${1:?usage: build-llama.sh PYTHON}
LLAMA_CPP_VERSION=0.3.36
# AVX2 + FMA + F16C: every x86-64 server CPU since 2013 (Haswell, Zen 1) has them; nothing newer is used.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"

if [ "${1:-}" = "--print-args" ]; then echo "$LLAMA_CMAKE_ARGS"; exit 0; fi

key=$(printf '%s|%s' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-16)
wheels=${RAG_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ollama-rag/wheels}/llama-cpp-python-$LLAMA_CPP_VERSION-$key

if ! compgen -G "$wheels/llama_cpp_python-*.whl" >/dev/null; then
  echo "== building llama-cpp-python $LLAMA_CPP_VERSION (portable: AVX2/FMA/F16C, no AVX-512, no AMX); 6-11 min on 2 cores"
  rm -rf "$wheels.tmp"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" FORCE_CMAKE=1 "$PY" -m pip wheel --no-cache-dir --no-deps \
    --no-binary llama-cpp-python -w "$wheels.tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
  mv "$wheels.tmp" "$wheels"
else
  echo "== llama-cpp-python $LLAMA_CPP_VERSION: reusing the portable wheel in $wheels"
fi
# --force-reinstall: replace whatever build the venv had (a native one from an older install).
"$PY" -m pip install --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl
