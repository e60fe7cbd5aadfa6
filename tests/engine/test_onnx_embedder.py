"""The int8 ONNX all-minilm against the torch one it replaces: same tokens, vectors within cosine 0.99."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from rag.engine import real
from rag.engine.catalog import ALL_MINILM, artifact_path
from rag.engine.config import EngineSettings
from rag.engine.protocol import ContextExceeded
from tests.support.helpers import CHINESE, ENGLISH

pytestmark = pytest.mark.slow


def mixed_texts() -> list[str]:
    """Chinese, English and mixed text of many lengths up to about 200 tokens, and a few odd ones (seeded)."""
    rng = random.Random(16)
    words, hanzi = ENGLISH.split(), list(CHINESE)
    texts = [" ".join(rng.choices(words, k=rng.randint(1, 120))) for _ in range(60)]
    texts += ["".join(rng.choices(hanzi, k=rng.randint(2, 200))) for _ in range(60)]
    texts += [" ".join(rng.choice(words) + "".join(rng.choices(hanzi, k=3)) for _ in range(rng.randint(1, 40)))
              for _ in range(20)]
    return [*texts, "Valve 7 检查 every Tuesday。", "x", "12345 67.8%", "  spaced   out  "]


@pytest.fixture(scope="module")
def embedders() -> tuple[real.OnnxEmbedder, real.SentenceEmbedder]:
    path = artifact_path(ALL_MINILM)
    assert path is not None
    model = real.onnx_model_path()
    assert model.exists(), f"{model} is missing: run `make install` (scripts/export_onnx.py)"
    return real.OnnxEmbedder(path, model, 2, 256), real.SentenceEmbedder(path, 2, 256)


def test_onnx_vectors_match_torch_within_cosine_099(embedders):
    onnx, torch = embedders
    texts = mixed_texts()
    assert len(texts) > 100
    a, b = onnx.embed(texts, truncate=False), torch.embed(texts, truncate=False)
    assert a.token_counts == b.token_counts
    assert np.asarray(a.vectors).shape == np.asarray(b.vectors).shape == (len(texts), 384)
    cosines = (np.asarray(a.vectors) * np.asarray(b.vectors)).sum(axis=1)
    # Text of a sentence or more stays within 0.99; a word or two alone (3-5 tokens with [CLS] and [SEP])
    # loses a little more to int8 activations: about 0.98 ("ok", "x").
    sentences = np.asarray(b.token_counts) >= 10
    assert cosines[sentences].min() >= 0.99, (cosines.min(), texts[int(cosines.argmin())])
    assert cosines.min() >= 0.975
    assert cosines.mean() >= 0.99
    assert np.allclose(np.linalg.norm(a.vectors, axis=1), 1.0, atol=1e-4)


def test_onnx_refuses_or_truncates_what_is_too_long_as_torch_does(embedders):
    onnx, torch = embedders
    long = ENGLISH * 20
    with pytest.raises(ContextExceeded):
        onnx.embed([long], truncate=False)
    a, b = onnx.embed([long, "short"], truncate=True), torch.embed([long, "short"], truncate=True)
    assert a.token_counts == b.token_counts == [256, 3]
    assert (np.asarray(a.vectors) * np.asarray(b.vectors)).sum(axis=1).min() >= 0.99


def test_a_missing_onnx_model_falls_back_to_torch_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(real, "onnx_model_path", lambda: tmp_path / "missing.onnx")
    backend = real.RealBackend(EngineSettings(_env_file=None, threads=2))  # type: ignore[call-arg]
    path = artifact_path(ALL_MINILM)
    assert path is not None
    with caplog.at_level(logging.WARNING, logger="rag.engine.real"):
        embedder = backend._embedder(path, 256)
    assert isinstance(embedder, real.SentenceEmbedder)
    assert "missing.onnx is missing; all-minilm falls back to torch" in caplog.text
    torch_only = real.RealBackend(EngineSettings(_env_file=None, threads=2, embed_runtime="torch"))  # type: ignore[call-arg]
    assert isinstance(torch_only._embedder(path, 256), real.SentenceEmbedder)


def test_groups_run_on_every_core_give_the_vectors_of_one_core_in_the_input_order(embedders):
    """Two cores run groups side by side; each vector still lands in its text's row."""
    onnx, _ = embedders
    path = artifact_path(ALL_MINILM)
    assert path is not None
    assert onnx.pool is not None
    one_core = real.OnnxEmbedder(path, real.onnx_model_path(), 1, 256)
    texts = mixed_texts()
    a, b = onnx.embed(texts, truncate=False), one_core.embed(texts, truncate=False)
    assert a.token_counts == b.token_counts
    assert np.allclose(np.asarray(a.vectors), np.asarray(b.vectors), atol=1e-5)
    # Reversed, texts of equal length fall into other groups: int8 activations are scaled per group, so
    # vectors move a little, but each must still be its own text's (the closest other text is at 0.965).
    reversed_ = np.asarray(onnx.embed(list(reversed(texts)), truncate=False).vectors)[::-1]
    assert (reversed_ * np.asarray(b.vectors)).sum(axis=1).min() >= 0.995
    onnx.close()
    one_core.close()
