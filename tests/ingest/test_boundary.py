"""The ingested folder is a boundary, and one bad entry never stops a run: `rag ingest` on real trees with
symbolic links (out, in, loops), names that are not UTF-8, 1,100 nested folders, folders that cannot be
listed, and Chinese text in GB18030, GBK, Big5 and UTF-16."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.loaders import walk
from rag.index.chroma import ChromaStore
from tests.support.helpers import CHINESE, ENGLISH, make_settings, nest_past_path_max, write
from tests.test_cli import rag

SECRET = "root:x:0:0:the secret line that must never be served"


def manifest_sources(tmp_path: Path) -> set[str]:
    data = json.loads((tmp_path / "storage" / "manifest-documents.json").read_text(encoding="utf-8"))
    return set(data["files"])


def stored_texts(tmp_path: Path, url: str) -> list[str]:
    return [r.text for r in ChromaStore.open(make_settings(tmp_path, url)).all_records()]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "good.md", ENGLISH)
    return root


@pytest.fixture
def deep(docs: Path) -> Iterator[Path]:
    """docs/d/d/.../d (1,100 levels) holding bottom.md; removed with rm, as shutil.rmtree recurses per level."""
    folder = docs
    for _ in range(1100):  # os.makedirs recurses once per level too
        folder = folder / "d"
        folder.mkdir()
    write(folder / "bottom.md", "The bottom of the tree holds the spare valve.")
    yield folder / "bottom.md"
    subprocess.run(["rm", "-rf", str(docs / "d")], check=True)


@pytest.mark.parametrize("flag", [[], ["--follow-symlinks"]])
def test_a_link_out_of_the_folder_is_named_and_never_read(tmp_path, docs, fast_engine, flag):
    write(tmp_path / "etc" / "passwd", SECRET)
    (docs / "passwd.txt").symlink_to(tmp_path / "etc" / "passwd")
    (docs / "etc").symlink_to(tmp_path / "etc", target_is_directory=True)
    result = rag(tmp_path, fast_engine, "ingest", *flag, str(docs))
    assert result.returncode == 1, result.stderr
    assert "passwd.txt: a symbolic link to" in result.stderr
    assert "etc: a symbolic link to" in result.stderr
    assert "outside the folder; not followed" in result.stderr
    assert "1 added" in result.stdout
    assert manifest_sources(tmp_path) == {"good.md"}
    assert not any("secret line" in text for text in stored_texts(tmp_path, fast_engine))


def test_links_inside_the_folder_are_followed_only_when_asked(tmp_path, docs, fast_engine):
    write(docs / ".drafts" / "plan.md", "The draft plan moves the pumps to building nine.")
    (docs / "plan.md").symlink_to(Path(".drafts") / "plan.md")
    plain = rag(tmp_path, fast_engine, "ingest", str(docs))
    assert plain.returncode == 0, plain.stderr
    assert manifest_sources(tmp_path) == {"good.md"}
    followed = rag(tmp_path, fast_engine, "ingest", "--follow-symlinks", str(docs))
    assert followed.returncode == 0, followed.stderr
    assert manifest_sources(tmp_path) == {"good.md", "plan.md"}


def test_a_symlink_loop_is_reported_and_the_rest_goes_in(tmp_path, docs, fast_engine):
    (docs / "loop.md").symlink_to("loop.md")
    (docs / "sub").mkdir()
    (docs / "sub" / "a").symlink_to("b")
    (docs / "sub" / "b").symlink_to("a")
    result = rag(tmp_path, fast_engine, "ingest", "--follow-symlinks", str(docs))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("loop.md", "sub/a", "sub/b"):
        assert f"failed: {name}: a symbolic link loop" in result.stderr, name
    assert manifest_sources(tmp_path) == {"good.md"}


def test_a_name_that_is_not_utf8_is_reported_and_the_rest_goes_in(tmp_path, docs, fast_engine):
    Path(os.fsdecode(os.fsencode(docs) + b"/caf\xe9.txt")).write_bytes(b"Latin-1 named file.")
    result = rag(tmp_path, fast_engine, "ingest", str(docs))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "failed: caf\\xe9.txt: the file name is not valid UTF-8; rename it" in result.stderr
    assert manifest_sources(tmp_path) == {"good.md"}


def test_1100_nested_folders_are_walked(tmp_path, docs, deep, fast_engine):
    assert len(walk(docs).files) == 2
    result = rag(tmp_path, fast_engine, "ingest", str(docs))
    assert result.returncode == 0, result.stderr
    assert manifest_sources(tmp_path) == {"good.md", "d/" * 1100 + "bottom.md"}


def test_a_folder_that_cannot_be_listed_is_reported_and_what_it_held_is_kept(tmp_path, docs, fast_engine):
    write(docs / "long" / "kept.md", "Kept while its folder cannot be listed.")
    assert rag(tmp_path, fast_engine, "ingest", str(docs)).returncode == 0
    nest_past_path_max(docs / "long")
    result = rag(tmp_path, fast_engine, "ingest", str(docs))
    assert result.returncode == 1, result.stderr
    assert "cannot list this folder (File name too long)" in result.stderr
    assert "2 unchanged" in result.stdout
    assert manifest_sources(tmp_path) == {"good.md", "long/kept.md"}


def test_chinese_in_legacy_and_wide_encodings_is_ingested_and_binary_is_still_refused(tmp_path, fast_engine):
    root = tmp_path / "docs"
    traditional = "資料中心的備份每天凌晨兩點開始。備份檔案保存三十天！"
    write(root / "gb18030.txt", CHINESE.encode("gb18030"))
    write(root / "gbk.md", ("# 说明\n\n" + CHINESE).encode("gbk"))
    write(root / "big5.txt", traditional.encode("big5"))
    write(root / "utf16.txt", CHINESE.encode("utf-16-le"))
    write(root / "binary.txt", bytes(range(256)) * 8)
    result = rag(tmp_path, fast_engine, "ingest", str(root))
    assert result.returncode == 1, result.stderr
    assert "failed: binary.txt: binary data, not text" in result.stderr
    assert "4 added" in result.stdout
    texts = "\n".join(stored_texts(tmp_path, fast_engine))
    assert CHINESE[:20] in texts
    assert traditional[:10] in texts
