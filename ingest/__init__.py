"""Ingest: find documents under a folder, extract their text, and cut it into citable chunks."""
