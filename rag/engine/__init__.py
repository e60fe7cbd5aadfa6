"""The local engine: an Ollama-compatible HTTP server running the bundled models (or a fast stand-in)."""
