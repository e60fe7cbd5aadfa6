# Multi-stage build of the RAG service. The model server is Ollama, reached at $OLLAMA_HOST
# (e.g. docker run -e OLLAMA_HOST=http://ollama:11434 ...). The bundled local engine is not in
# this image: in production a real Ollama serves the models.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, from pyproject.toml alone, so a source change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir rag ingest && touch rag/__init__.py ingest/__init__.py \
 && pip install . \
 && pip uninstall -y ollama-rag
COPY rag ./rag
COPY ingest ./ingest
RUN pip install --no-deps .

# Optional: the bundled local engine for a host with no Ollama: docker build --target engine -t rag-engine .
# llama-cpp-python is built by scripts/build-llama.sh, the one place naming its portable flags (no
# -march=native: an image built on one CPU must not die of SIGILL on another), then checked by disassembly.
FROM python:3.11-slim AS engine
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY scripts/build-llama.sh scripts/check_portable.py ./scripts/
# The CPU build of torch (PyPI's default wheel carries CUDA: gigabytes for nothing here).
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && bash scripts/build-llama.sh /opt/venv/bin/python && python scripts/check_portable.py
COPY pyproject.toml README.md ./
COPY rag ./rag
COPY ingest ./ingest
RUN pip install ".[engine]"
RUN useradd --create-home --uid 10001 rag
USER rag
# Other containers reach it as http://ollama:11434: that Host name is allowed, others are refused.
ENV OLLAMA_HOST=0.0.0.0:11434 RAG_ENGINE_ALLOWED_HOSTS=ollama
EXPOSE 11434
CMD ["rag", "engine"]

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    ANONYMIZED_TELEMETRY=False \
    HF_HUB_OFFLINE=1 \
    OLLAMA_HOST=http://host.docker.internal:11434 \
    RAG_STORAGE_DIR=/app/storage \
    RAG_DOCS_DIR=/app/docs \
    RAG_HOST=0.0.0.0 \
    RAG_PORT=8080
# No API key is built in: on 0.0.0.0, rag serve refuses to start until RAG_API_KEYS (or RAG_API_KEYS_FILE) is
# given, e.g. docker run -e RAG_API_KEYS=... ; so this image never serves an open API by default.
RUN useradd --create-home --uid 10001 rag
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
RUN mkdir -p /app/storage /app/docs && chown -R rag:rag /app
USER rag
VOLUME ["/app/storage"]
EXPOSE 8080
# Liveness, not /health or /readyz: an Ollama outage makes the service not ready, and restarting it fixes nothing.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=8)" || exit 1
# Ingest with: docker run --rm -v rag-storage:/app/storage -v "$PWD/docs:/app/docs:ro" IMAGE rag ingest /app/docs
CMD ["rag", "serve"]
