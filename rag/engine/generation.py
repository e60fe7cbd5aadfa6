"""Rules every chat model follows while generating: the output budget, prompt fitting, stop sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def output_budget(prompt_tokens: int, n_ctx: int, num_predict: int) -> int:
    """How many tokens may be generated: num_predict, capped by what is left of the context."""
    room = max(n_ctx - prompt_tokens, 0)
    return room if num_predict < 0 else min(num_predict, room)


def fit_prompt(tokens: list[Any], n_ctx: int) -> list[Any]:
    """Keep the end of a prompt longer than the context, leaving a quarter of it for the answer.

    Ollama truncates over-long prompts from the front too (and then shifts the context while generating).
    """
    keep = n_ctx - max(n_ctx // 4, 1)
    return tokens if len(tokens) <= keep else tokens[len(tokens) - keep :]


class StopMatcher:
    """Finds stop sequences in streamed text, holding back only what could still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop sequence was reached)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = max((self._overlap(s) for s in self.stops), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _overlap(self, stop: str) -> int:
        for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:k]):
                return k
        return 0
