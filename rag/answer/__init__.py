"""Answering: sources, prompts, fusion of the two retrieval sides, the pipeline, and ways to ask."""
