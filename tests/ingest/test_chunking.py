"""Chunking: exact offsets, token budgets, sentence-aligned ends (English and Chinese), overlap,
stable ids, and splitting a chunk the embedding server refused."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from pathlib import Path

import pytest

from ingest.chunking import Chunk, chunk_document, chunk_id, count_tokens, split_chunk, split_sentences
from ingest.loaders import LoadedDocument, LoadLimits, Page, load

ENGLISH = (
    "The cooling pump runs at 40 degrees. Check the oil level every week, e.g. on Mondays. "
    "Version 3.14 of the controller fixed the pressure bug! Does the valve leak? Replace the seal "
    "with part PN-4471-B, which fits pump two. Dr. Smith wrote the original manual in 2019.\n\n"
    "- Turn off the power.\n- Drain the tank.\n- Open the cover.\n\n"
)
CHINESE = (
    "检索增强生成把信息检索和文本生成结合起来。系统先从文档库中找到相关段落！"
    "然后让语言模型根据这些段落回答问题？通常效果更好；但也取决于检索质量。"
    "他说：“这个方法很好。”我们同意。"
)
MIXED = "我们使用 Ollama 运行 all-MiniLM-L6-v2 模型。chunk_size 默认是 200 个 token！PDF 文件由 pypdf 解析。"
RUN_ON_ENGLISH = " ".join(f"word{i} and another phrase" for i in range(400))  # no sentence ends
RUN_ON_CHINESE = "这是一段没有任何标点符号的很长的中文文本" * 40
LONG_CLAUSES_CHINESE = "，".join(["这个句子有很多分句"] * 60) + "。短句。"
NO_SPACES = "x" * 3000 + " tail."

SAMPLES = {
    "english": ENGLISH * 6,
    "chinese": CHINESE * 6,
    "mixed": (MIXED + "\n" + ENGLISH + CHINESE) * 3,
    "run-on-english": RUN_ON_ENGLISH,
    "run-on-chinese": RUN_ON_CHINESE,
    "long-clauses": LONG_CLAUSES_CHINESE,
    "no-spaces": NO_SPACES,
}
CHINESE_ENDS = "。！？；"


def doc(*texts: str, source: str = "docs/file.txt", pdf: bool = False) -> LoadedDocument:
    pages = [Page(i + 1 if pdf else None, text) for i, text in enumerate(texts)]
    return LoadedDocument(Path(source), source, pages)


def page_text(document: LoadedDocument, chunk: Chunk) -> str:
    return next(page.text for page in document.pages if page.number == chunk.page)


def assert_invariants(document: LoadedDocument, chunks: list[Chunk], chunk_size: int) -> None:
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        text = page_text(document, c)
        assert text[c.start : c.end] == c.text
        assert c.text
        assert c.text == c.text.strip()
        assert c.tokens == count_tokens(c.text) <= chunk_size
        assert c.content_hash == hashlib.sha256(c.text.encode("utf-8")).hexdigest()
        assert c.id == chunk_id(c.source, c.position, c.content_hash)
        assert c.part == ""
    for page in document.pages:
        on_page = [c for c in chunks if c.page == page.number]
        assert all(a.start < b.start and a.end < b.end for a, b in itertools.pairwise(on_page))
        covered = set().union(*(range(c.start, c.end) for c in on_page)) if on_page else set()
        missing = [i for i, ch in enumerate(page.text) if not ch.isspace() and i not in covered]
        assert missing == []  # no text is lost between chunks


# -- token estimate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("   \n\t", 0),
        ("你好。", 3),  # every CJK character and mark is a token of its own
        ("the", 1),
        ("quick", 2),  # letter runs count ceil(len / 4)
        ("3.14", 3),  # "3", ".", "14"
        ("20240101", 3),  # digit runs count ceil(len / 3)
        ("all-MiniLM-L6-v2", 10),
        ("café ok", 2),
    ],
)
def test_count_tokens(text: str, expected: int) -> None:
    assert count_tokens(text) == expected


def test_count_tokens_is_the_run_by_run_count_on_random_text() -> None:
    """The count is the sum over the text's runs, read left to right: letters ceil(len/4), digits ceil(len/3),
    any other non-space character 1; also for unusual spaces (NBSP, U+3000, U+2028, U+001C)."""
    runs = re.compile(r"([A-Za-z\u00C0-\u024F]+)|([0-9]+)|\S")

    def by_runs(text: str) -> int:
        return sum(-(-len(m[1]) // 4) if m[1] else -(-len(m[2]) // 3) if m[2] else 1 for m in runs.finditer(text))

    rnd = random.Random(7)
    alphabet = "aZé9 \t\n\u3000\xa0\u2028\x1c中。,!ǅ0_-Ω"
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        assert count_tokens(text) == by_runs(text), repr(text)


def test_count_tokens_errs_high_on_english() -> None:
    # all-MiniLM's own tokenizer gives these 10 and 26 tokens (without [CLS]/[SEP]).
    assert count_tokens("The quick brown fox jumps over the lazy dog.") >= 10
    assert count_tokens("Beautiful is better than ugly. Explicit is better than implicit. " * 2) >= 26


# -- sentences ---------------------------------------------------------------------------------------


def sentences(text: str) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text)]


def test_english_sentences_keep_decimals_and_abbreviations() -> None:
    assert sentences("Version 3.14 works, e.g. here. Dr. Smith agrees! Really? Yes.") == [
        "Version 3.14 works, e.g. here.",
        "Dr. Smith agrees!",
        "Really?",
        "Yes.",
    ]


def test_chinese_sentences_include_closing_quotes() -> None:
    assert sentences("他说：“这个方法很好。”我们同意！真的吗？是的；好。「完」") == [
        "他说：“这个方法很好。”",
        "我们同意！",
        "真的吗？",
        "是的；",
        "好。",
        "「完」",
    ]


def test_blank_lines_list_items_and_headings_end_sentences() -> None:
    text = "# Setup\nInstall it\nwith pip\n\nThen run it\n- first step\n- second step\n1. numbered"
    assert sentences(text) == [
        "# Setup",
        "Install it\nwith pip",  # a wrapped line is not a sentence end
        "Then run it",
        "- first step",
        "- second step",
        "1. numbered",
    ]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sentence_spans_cover_everything_but_whitespace(name: str) -> None:
    text = SAMPLES[name]
    spans = split_sentences(text)
    rebuilt, previous = [], 0
    for start, end in spans:
        assert previous <= start < end
        assert text[previous:start].strip() == ""
        rebuilt.append(text[start:end])
        previous = end
    assert text[previous:].strip() == ""
    assert re.sub(r"\s", "", "".join(rebuilt)) == re.sub(r"\s", "", text)


# -- chunking ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize(("chunk_size", "overlap"), [(16, 0), (40, 10), (200, 30), (64, 63)])
def test_chunk_invariants(name: str, chunk_size: int, overlap: int) -> None:
    document = doc(SAMPLES[name], SAMPLES[name][: len(SAMPLES[name]) // 3], pdf=True)
    chunks = chunk_document(document, chunk_size, overlap)
    assert chunks
    assert_invariants(document, chunks, chunk_size)


def test_chunks_never_cross_pages_and_positions_run_across_pages() -> None:
    document = doc(ENGLISH, CHINESE, "", "Last page.", pdf=True)
    chunks = chunk_document(document, 30, 5)
    assert {c.page for c in chunks} == {1, 2, 4}
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].text == "Last page."
    assert_invariants(document, chunks, 30)


def test_chinese_chunks_end_at_sentence_ends() -> None:
    document = doc(CHINESE * 8)
    chunks = chunk_document(document, 40, 10)
    assert len(chunks) > 5
    for c in chunks:
        assert c.text.rstrip("”」』）")[-1] in CHINESE_ENDS, c.text


def test_english_chunks_end_at_sentence_ends() -> None:
    chunks = chunk_document(doc(ENGLISH * 4), 50, 0)
    assert len(chunks) > 4
    assert all(c.text[-1] in ".!?" for c in chunks)


def test_long_chinese_sentence_is_cut_at_clauses() -> None:
    chunks = chunk_document(doc(LONG_CLAUSES_CHINESE), 30, 0)
    assert len(chunks) > 5
    assert all(c.text[-1] in "，。" for c in chunks)
    assert chunks[-1].text.endswith("短句。")


def test_text_without_spaces_or_punctuation_is_hard_split() -> None:
    chunks = chunk_document(doc(RUN_ON_CHINESE), 50, 0)
    assert [len(c.text) for c in chunks[:-1]] == [50] * (len(chunks) - 1)
    assert "".join(c.text for c in chunks) == RUN_ON_CHINESE


def test_overlap_repeats_whole_trailing_sentences() -> None:
    text = " ".join(f"Sentence number {n} is here." for n in range(30))  # 7 tokens each
    chunks = chunk_document(doc(text), 30, 10)
    for previous, current in itertools.pairwise(chunks):
        shared = text[current.start : previous.end]
        assert current.start < previous.end  # overlapping
        assert current.start > previous.start  # and always advancing
        assert shared.startswith("Sentence number ")
        assert shared.endswith(".")
        assert count_tokens(shared) <= 10


def test_no_overlap_when_zero() -> None:
    text = " ".join(f"Sentence number {n} is here." for n in range(30))
    chunks = chunk_document(doc(text), 30, 0)
    assert all(b.start > a.end for a, b in itertools.pairwise(chunks))


def test_overlap_never_repeats_a_whole_chunk() -> None:
    # 8-token sentences, one per chunk: even the largest overlap must not repeat a chunk or stall.
    text = " ".join(f"Sentence number {n} is here." for n in range(10))
    chunks = chunk_document(doc(text), 10, 9)
    assert len(chunks) == 10
    assert [c.text for c in chunks] == [f"Sentence number {n} is here." for n in range(10)]


def test_chunk_ids_are_deterministic_and_local() -> None:
    first = chunk_document(doc(ENGLISH * 3), 40, 10)
    assert first == chunk_document(doc(ENGLISH * 3), 40, 10)
    assert len({c.id for c in first}) == len(first)
    moved = chunk_document(doc(ENGLISH * 3, source="other/file.txt"), 40, 10)
    assert {c.id for c in moved}.isdisjoint(c.id for c in first)
    edited = chunk_document(doc(ENGLISH * 3 + "One more sentence at the end."), 40, 10)
    assert [c.id for c in edited[: len(first) - 1]] == [c.id for c in first[:-1]]


def test_empty_document_and_blank_pages_give_no_chunks() -> None:
    assert chunk_document(doc(), 50, 10) == []
    assert chunk_document(doc("  \n\n "), 50, 10) == []


@pytest.mark.parametrize(("chunk_size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_bad_settings_are_refused(chunk_size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="overlap < chunk_size"):
        chunk_document(doc(ENGLISH), chunk_size, overlap)


def test_chunks_of_loaded_files_match_the_stored_text(tmp_path: Path) -> None:
    (tmp_path / "zh.txt").write_text(CHINESE * 5, encoding="utf-8")
    (tmp_path / "en.md").write_bytes((ENGLISH * 3).replace("\n", "\r\n").encode("utf-8"))
    for name in ("zh.txt", "en.md"):
        document = load(tmp_path / name, tmp_path, LoadLimits())
        chunks = chunk_document(document, 40, 8)
        assert_invariants(document, chunks, 40)


# -- splitting a refused chunk -----------------------------------------------------------------------


def test_split_chunk_prefers_a_sentence_end_near_the_middle() -> None:
    text = "First short one. " + "Then a much longer sentence sits in the middle here. " * 2 + "End."
    [chunk] = chunk_document(doc(text), 200, 0)
    left, right = split_chunk(chunk, text)
    assert left.text == "First short one. Then a much longer sentence sits in the middle here."
    assert right.text == "Then a much longer sentence sits in the middle here. End."


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_split_chunk_invariants(name: str) -> None:
    text = SAMPLES[name]
    for chunk in chunk_document(doc(text), 64, 8):
        pieces = split_chunk(chunk, text)
        assert len(pieces) == 2
        assert [p.part for p in pieces] == ["0", "1"]
        for index, piece in enumerate(pieces):
            assert text[piece.start : piece.end] == piece.text
            assert chunk.start <= piece.start < piece.end <= chunk.end
            assert piece.tokens == count_tokens(piece.text) <= chunk.tokens
            assert (piece.source, piece.page, piece.position) == (chunk.source, chunk.page, chunk.position)
            seed = f"{chunk.id}\x00{index}\x00{piece.content_hash}"
            assert piece.id == hashlib.sha256(seed.encode()).hexdigest()[:32]
        assert pieces[0].end <= pieces[1].start
        assert text[pieces[0].end : pieces[1].start].strip() == ""
        assert pieces == split_chunk(chunk, text)


def test_split_chunk_nested_parts_and_ids() -> None:
    text = "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu."
    [chunk] = chunk_document(doc(text), 100, 0)
    left, right = split_chunk(chunk, text)
    assert (left.text, right.text) == (
        "Alpha beta gamma. Delta epsilon zeta.",
        "Eta theta iota. Kappa lambda mu.",
    )
    inner = split_chunk(right, text)
    assert [p.part for p in inner] == ["1.0", "1.1"]
    assert [p.text for p in inner] == ["Eta theta iota.", "Kappa lambda mu."]
    assert len({chunk.id, left.id, right.id, *(p.id for p in inner)}) == 5


def test_split_chunk_without_boundaries_cuts_in_the_middle() -> None:
    text = "abcdefghij"
    [chunk] = chunk_document(doc(text), 100, 0)
    assert [p.text for p in split_chunk(chunk, text)] == ["abcde", "fghij"]


def test_split_chunk_of_one_character_returns_it() -> None:
    [chunk] = chunk_document(doc("x"), 10, 0)
    assert split_chunk(chunk, "x") == [chunk]


def test_split_chunk_refuses_the_wrong_page_text() -> None:
    [chunk] = chunk_document(doc("Some text here."), 10, 0)
    with pytest.raises(ValueError, match="does not match"):
        split_chunk(chunk, "Other text here.")
