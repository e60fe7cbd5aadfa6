#!/usr/bin/env bash
# The main job end to end: engine (unless an Ollama answers), ingest data/docs, serve, ask over HTTP.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
OLLAMA_HOST="${OLLAMA_HOST:-127.0.0.1:11434}"
export OLLAMA_HOST
PORT="${RAG_PORT:-8080}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

ollama_url=$(python -c "from rag.config import Settings; print(Settings().ollama_url)")
if curl -fsS "$ollama_url/api/version" >/dev/null 2>&1; then
  echo "== using the Ollama already answering at $ollama_url"
else
  echo "== no Ollama at $ollama_url: starting the bundled local engine"
  rag engine > storage/engine.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 120); do curl -fsS "$ollama_url/" >/dev/null 2>&1 && break; sleep 1; done
fi

echo "== rag ingest data/docs"
rag ingest data/docs

echo "== rag serve on 127.0.0.1:$PORT"
rag serve --port "$PORT" > storage/serve.log 2>&1 &
pids+=($!)
for _ in $(seq 1 60); do curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break; sleep 1; done

question="${1:-At what time does the nightly snapshot of storage/ run?}"
echo "== POST /ask: $question"
rag ask --url "http://127.0.0.1:$PORT" "$question"
