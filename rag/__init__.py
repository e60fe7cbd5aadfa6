"""Offline-first RAG question answering over a folder of documents, served by Ollama models."""
