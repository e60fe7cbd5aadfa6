"""The engine's start-up check: one real generation from a long prompt, in a runner, before it listens.

A llama.cpp build that does not match the CPU answers a short prompt and dies on the first batched matrix
multiply, which takes a prompt of a few hundred tokens: every RAG prompt. So the check uses 512+ tokens.
"""

from __future__ import annotations

import logging
import threading

from rag.engine.catalog import CATALOG
from rag.engine.config import EngineSettings
from rag.engine.protocol import Sampling
from rag.engine.runner import RunnerClient, RunnerCrashed, RunnerFailed

logger = logging.getLogger(__name__)

MIN_PROMPT_TOKENS = 512
_PASSAGE = (
    "The nightly snapshot of the storage folder runs at half past two in the morning and keeps seven copies. "
) * 40


class SelfCheckFailed(Exception):
    """The engine cannot generate on this machine; the message says why and what to do."""


def self_check(settings: EngineSettings) -> int:
    """Generate a few tokens from a prompt of at least 512 tokens; returns the prompt's token count."""
    spec = next(s for s in CATALOG.values() if s.kind == "chat")
    n_ctx = min(settings.context_length, spec.context_length)
    messages = [{"role": "user", "content": f"{_PASSAGE}\nWhen does the snapshot run?"}]
    try:
        runner = RunnerClient(settings, spec, n_ctx)
    except (RunnerCrashed, RunnerFailed) as exc:
        raise SelfCheckFailed(f"self-check: {exc}") from None
    try:
        prompt = runner.render(messages)
        stats = runner.generate(prompt, Sampling(num_predict=4, seed=0), None, threading.Event(), lambda _: None)
    except (RunnerCrashed, RunnerFailed) as exc:
        raise SelfCheckFailed(f"self-check: {exc}") from None
    finally:
        runner.close()
    if stats.prompt_eval_count < MIN_PROMPT_TOKENS:
        raise SelfCheckFailed(
            f"self-check: the prompt had {stats.prompt_eval_count} tokens, fewer than {MIN_PROMPT_TOKENS}; "
            "raise OLLAMA_CONTEXT_LENGTH"
        )
    logger.info("self-check passed: %s generated from a %s-token prompt", spec.name, stats.prompt_eval_count)
    return stats.prompt_eval_count
