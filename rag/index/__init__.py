"""The index: what ingest writes and serving reads (Chroma, the BM25 keyword index, tokens, the store lock)."""
