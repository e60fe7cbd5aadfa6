"""Evaluation: `rag eval` runs, datasets, the faithfulness judge and its check, metrics, reports."""
