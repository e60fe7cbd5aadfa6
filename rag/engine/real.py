"""The real backend: SmolLM2 on llama.cpp; all-MiniLM-L6-v2 on ONNX Runtime (int8) or sentence-transformers."""

from __future__ import annotations

import codecs
import ctypes
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any, cast

import numpy as np

from rag.engine.catalog import ModelSpec, artifact_path
from rag.engine.config import EngineSettings
from rag.engine.generation import StopMatcher, fit_prompt, output_budget
from rag.engine.protocol import ContextExceeded, Embedded, Emit, GenerationStats, Sampling

logger = logging.getLogger(__name__)
# Prompts are evaluated in blocks (_prefill) that end where messages end and at fixed positions: 64, 128, 256,
# 512, then every 512. Message ends, so a shared system prompt or conversation is reused whatever its length;
# no fixed end below 64, since a block of a few tokens costs llama.cpp nearly as much as one of 16 (2 tokens
# 13 ms, 16 tokens 44 ms, 64 tokens 145 ms on 2 cores) and short prompts would pay for splits they rarely reuse.
FIRST_BLOCK, MAX_BLOCK = 64, 512


def block_ends(n: int, marks: Iterable[int] = ()) -> list[int]:
    """Where the evaluation blocks of a prompt body of n tokens end: the fixed positions below n, the `marks`
    (positions right after a message's end token) below n, and n itself."""
    ends, end = {n} if n else set(), FIRST_BLOCK
    while end < n:
        ends.add(end)
        end += min(end, MAX_BLOCK)
    ends.update(m for m in marks if 0 < m < n)
    return sorted(ends)


def _weights(spec: ModelSpec) -> Path:
    path = artifact_path(spec)
    if path is None:
        raise RuntimeError(f"the package {spec.package!r} holding {spec.name} is not installed")
    return path


class LlamaChat:
    """One llama.cpp context: a chat template from the GGUF, token-by-token generation."""

    def __init__(self, path: Path, n_ctx: int, threads: int) -> None:
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.n_ctx = n_ctx
        self.reused_tokens = 0  # prompt tokens the last generation found already evaluated
        self._prompt_ends: list[int] = []  # where the blocks that evaluated the cached prompt ended
        self._prompt_len = 0  # tokens of that prompt; each token after it was evaluated alone
        self.llm = Llama(str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self._end_ids = {eos, bos}
        vocab = self.llm._model.vocab
        self._turn_ends = np.array(
            [t for t in range(self.llm.n_vocab()) if t == eos or llama_cpp.llama_vocab_is_eog(vocab, t)], dtype=np.int64
        )
        self.formatter = Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"],
            eos_token=self.llm._model.token_get_text(eos),
            bos_token=self.llm._model.token_get_text(bos),
        )

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        return self.formatter(messages=cast(Any, list(messages))).prompt

    def prompt_tokens(self, prompt: str) -> int:
        return len(self.llm.tokenize(prompt.encode("utf-8"), special=True))

    def close(self) -> None:
        self.llm.close()

    def _is_end(self, token: int) -> bool:
        import llama_cpp

        return token in self._end_ids or llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token)

    def generate(
        self, prompt: str, sampling: Sampling, grammar: Any, cancel: threading.Event, emit: Emit
    ) -> GenerationStats:
        start = time.perf_counter_ns()
        tokens = self.llm.tokenize(prompt.encode("utf-8"), special=True)
        fitted = fit_prompt(tokens, self.n_ctx)
        if len(fitted) < len(tokens):
            logger.warning("prompt of %s tokens truncated to %s to fit num_ctx", len(tokens), len(fitted))
        stats = GenerationStats(prompt_eval_count=len(fitted), done_reason="length")
        budget = output_budget(len(fitted), self.n_ctx, sampling.num_predict)
        if budget == 0:
            return stats
        self.llm.set_seed(sampling.seed if sampling.seed is not None else random.randrange(2**31))
        steps = self._constrained(fitted, sampling, grammar) if grammar else self._free(fitted, sampling)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stopper = StopMatcher(sampling.stop)
        first = None
        try:
            for token in steps:
                first = first or time.perf_counter_ns()
                if self._is_end(token):
                    stats.done_reason = "stop"
                    break
                stats.eval_count += 1
                text, stopped = stopper.feed(decoder.decode(self.llm.detokenize([token])))
                if text:
                    emit(text)
                if stopped:
                    stats.done_reason = "stop"
                    break
                if cancel.is_set():
                    stats.done_reason = "cancelled"
                    break
                if stats.eval_count >= budget:
                    break
        finally:
            steps.close()
        if stats.done_reason != "stop" and (rest := stopper.flush() + decoder.decode(b"", final=True)):
            emit(rest)
        end = time.perf_counter_ns()
        first = first or end
        stats.prompt_eval_duration, stats.eval_duration = first - start, end - first
        return stats

    def _sampler_options(self, sampling: Sampling) -> dict[str, Any]:
        return {
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "min_p": sampling.min_p,
            "typical_p": sampling.typical_p,
            "temp": sampling.temperature,
            "repeat_penalty": sampling.repeat_penalty,
            "presence_penalty": sampling.presence_penalty,
            "frequency_penalty": sampling.frequency_penalty,
        }

    def _prefill(self, tokens: list[int]) -> None:
        """Evaluate the prompt, reusing what the context already holds of it; the first generated token is
        sampled from the logits of its last block.

        A prompt is always evaluated in the same blocks (block_ends), and a cached prefix is reused only up to
        a block end before which the cache was built in exactly those blocks; the last block is always
        evaluated afresh, so the logits are this prompt's. The numbers then do not depend on what the context
        held before: in this build a block split gives the bits of one batch, but the last token evaluated
        alone does not (logits up to 0.45 apart), so the last token is never split from its block (evaluating
        it alone also cost a decode of its own, ~5 ms). A shared system prompt or conversation is not
        evaluated again (evaluating every prompt afresh cost the engine ~10% of its tokens/s against
        in-process llama.cpp on short chats, where a prompt token costs about 2 ms on 2 cores).
        """
        prompt = np.asarray(tokens, dtype=np.int64)
        n = min(self.llm.n_tokens, len(prompt))
        differ = np.flatnonzero(self.llm.input_ids[:n] != prompt[:n])
        common = int(differ[0]) if differ.size else n
        ends = block_ends(len(prompt), (np.flatnonzero(np.isin(prompt, self._turn_ends)) + 1).tolist())
        built = {*self._prompt_ends, *range(self._prompt_len + 1, self.llm.n_tokens + 1)}
        keep = 0
        for end in ends[:-1]:
            if end > common or end not in built or any(keep < e < end for e in built):
                break
            keep = end
        self.llm.reset()
        self.llm.n_tokens = keep  # eval() drops whatever the cache holds beyond this
        self._prompt_ends, self._prompt_len = [e for e in ends if e <= keep], len(tokens)
        for start, end in zip([0, *ends], ends, strict=False):  # keep is 0 or an end: blocks resume there
            if end > keep:
                self.llm.eval(prompt[start:end].tolist())
                self._prompt_ends.append(end)  # recorded as it lands: a failed eval leaves the truth behind
        self.reused_tokens = keep

    def _free(self, tokens: list[int], sampling: Sampling) -> Generator[int, Any, None]:
        self._prefill(tokens)  # generate() then evaluates nothing before its first sample
        return self.llm.generate([], reset=False, **self._sampler_options(sampling))

    def _constrained(self, tokens: list[int], sampling: Sampling, grammar: Any) -> Generator[int, Any, None]:
        """Tokens under a grammar, the way llama.cpp's own sampler does it: sample as if free, check that one
        token against the grammar, and only when it is refused mask the whole vocabulary and sample again.
        Masking all 49k tokens at every step (llama-cpp-python's way) is several times slower."""
        self._prefill(tokens)
        sampler = _GrammarSampler(self.llm, self.llm._init_sampler(**self._sampler_options(sampling)), grammar)
        try:
            while True:
                token = sampler.pick()
                yield token
                self.llm.eval([token])
        finally:
            sampler.close()


class _GrammarSampler:
    def __init__(self, llm: Any, chain: Any, grammar: Any) -> None:
        import llama_cpp

        self.lib, self.llm, self.chain = llama_cpp, llm, chain  # chain: a LlamaSampler without the grammar
        vocab = llm._model.vocab
        self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
        self.n_vocab = llm.n_vocab()
        self.data = (llama_cpp.llama_token_data * self.n_vocab)()
        self.view = np.ctypeslib.as_array(self.data)
        self.ids = np.arange(self.n_vocab, dtype=np.int32)

    def _candidates(self, logits: Any) -> Any:
        self.view["id"], self.view["logit"], self.view["p"] = self.ids, logits, 0.0
        data = ctypes.cast(self.data, self.lib.llama_token_data_p)
        return self.lib.llama_token_data_array(data=data, size=self.n_vocab, selected=-1, sorted=False)

    def _allowed(self, token: int) -> bool:
        one = (self.lib.llama_token_data * 1)(self.lib.llama_token_data(token, 1.0, 0.0))
        single = self.lib.llama_token_data_array(
            data=ctypes.cast(one, self.lib.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(single))
        return bool(one[0].logit != float("-inf"))

    def pick(self) -> int:
        pointer = self.lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        candidates = self._candidates(logits)
        self.lib.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
        token = int(self.data[candidates.selected].id)
        if not self._allowed(token):
            candidates = self._candidates(logits)
            self.lib.llama_sampler_apply(self.grammar, ctypes.byref(candidates))
            self.lib.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates))
            token = int(self.data[candidates.selected].id)
        self.lib.llama_sampler_accept(self.grammar, token)
        self.lib.llama_sampler_accept(self.chain.sampler, token)
        return token

    def close(self) -> None:
        self.lib.llama_sampler_free(self.grammar)
        self.chain.close()


class SentenceEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers: mean pooling, L2-normalised, 256-token context."""

    batch_size = 32

    def __init__(self, path: Path, threads: int, context_length: int) -> None:
        # The weights are on disk; never let a cache miss turn into a download.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        torch.set_num_threads(threads)
        transformers_logging.disable_progress_bar()  # a server log is not a terminal
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.model.max_seq_length = self.context_length = context_length

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        ids = self.model.tokenizer(
            list(texts),
            add_special_tokens=True,
            truncation=False,
            verbose=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return [len(i) for i in ids]

    def embed(self, texts: Sequence[str], truncate: bool) -> Embedded:
        counts = self.count_tokens(texts)
        if not truncate and max(counts, default=0) > self.context_length:
            raise ContextExceeded("the input length exceeds the context length")
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return Embedded(vectors, [min(c, self.context_length) for c in counts])


def onnx_model_path() -> Path:
    """Where scripts/export_onnx.py (run by `make install`) writes all-MiniLM-L6-v2 as int8 ONNX: in the venv."""
    return Path(sys.prefix) / "share" / "ollama-rag" / "all-minilm-l6-v2-int8.onnx"


class OnnxEmbedder:
    """all-MiniLM-L6-v2 exported to ONNX with int8 weights: the same tokenizer, mean pooling and L2 norm as
    sentence-transformers, at several times the speed on CPU (bench/results/engine.txt).

    Texts are run shortest first in small groups, so a short text is not padded to the longest of 32.
    Each core runs whole groups on one ONNX thread, rather than every core sharing each operator: the
    cores never wait for each other at an operator's end, so when another process takes a core for a
    moment only that core's group waits (ingest's own work runs beside the model on the same cores).
    Against one group of 8 on all cores: 8% more model tokens/s alone (bench/results/engine.txt), and
    beside ingest the engine spends little more CPU than alone (before: up to 0.5 s; bench/results/ingest.md).
    """

    group = 4

    def __init__(self, path: Path, model: Path, threads: int, context_length: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.sep = int(self.tokenizer.token_to_id("[SEP]") or 102)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.context_length = context_length
        # A session runs concurrently from several threads; each run holds one core (ONNX releases the GIL).
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="onnx") if threads > 1 else None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in self.tokenizer.encode_batch(list(texts))]

    def embed(self, texts: Sequence[str], truncate: bool) -> Embedded:
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        counts = [len(i) for i in ids]
        if not truncate and max(counts, default=0) > self.context_length:
            raise ContextExceeded("the input length exceeds the context length")
        ids = [i if len(i) <= self.context_length else [*i[: self.context_length - 1], self.sep] for i in ids]
        order = sorted(range(len(ids)), key=lambda k: len(ids[k]))
        vectors = np.zeros((len(ids), 384), dtype=np.float32)
        groups = [order[start : start + self.group] for start in range(0, len(order), self.group)]

        def run(rows: list[int]) -> Any:
            return self._run([ids[k] for k in rows])

        for rows, pooled in zip(groups, self.pool.map(run, groups) if self.pool else map(run, groups), strict=True):
            vectors[rows] = pooled
        return Embedded(vectors, [min(c, self.context_length) for c in counts])

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, ids: list[list[int]]) -> Any:
        width = max(len(i) for i in ids)
        tokens = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)], mask[row, : len(seq)] = seq, 1
        (hidden,) = self.session.run(None, {"input_ids": tokens, "attention_mask": mask,
                                            "token_type_ids": np.zeros_like(tokens)})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class RealBackend:
    name = "real"

    def __init__(self, settings: EngineSettings) -> None:
        self.threads = settings.threads
        self.embed_runtime = settings.embed_runtime

    def load(self, spec: ModelSpec, n_ctx: int, slots: int) -> list[Any]:
        path = _weights(spec)
        if spec.kind == "embedding":
            # One model serves every slot: inference is thread-safe and shares the cores.
            return [self._embedder(path, spec.context_length)] * slots
        return [LlamaChat(path, n_ctx, self.threads) for _ in range(slots)]

    def _embedder(self, path: Path, context_length: int) -> OnnxEmbedder | SentenceEmbedder:
        onnx = onnx_model_path()
        if self.embed_runtime == "onnx" and onnx.exists():
            logger.info("all-minilm runs on ONNX Runtime, int8: %s", onnx)
            return OnnxEmbedder(path, onnx, self.threads, context_length)
        if self.embed_runtime == "onnx":
            logger.warning("the int8 ONNX model %s is missing; all-minilm falls back to torch (several times "
                           "slower). Convert it with: python scripts/export_onnx.py (make install does)", onnx)
        return SentenceEmbedder(path, self.threads, context_length)

    def compile_format(self, fmt: str | dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

        if fmt == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        try:
            return LlamaGrammar.from_json_schema(json.dumps(fmt), verbose=False)
        except Exception as exc:  # llama.cpp's converter raises assorted errors for schemas it cannot use
            raise ValueError(f"invalid JSON schema in format: {exc}") from exc

    def template(self, spec: ModelSpec) -> str:
        return _gguf_template(_weights(spec)) if spec.kind == "chat" else ""


@cache
def _gguf_template(path: Path) -> str:
    from llama_cpp import Llama

    return str(Llama(str(path), vocab_only=True, verbose=False).metadata.get("tokenizer.chat_template", ""))
