"""Loaders on real files: PDFs written by fpdf2 (good, broken, encrypted, textless, pathological), text
in several encodings, HTML, Markdown, and folder walks with hidden and unsupported entries."""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import pytest
from fpdf import FPDF

from ingest.loaders import SUPPORTED_SUFFIXES, LoadError, LoadLimits, Page, load, walk
from tests.support.helpers import nest_past_path_max

LIMITS = LoadLimits()


def write_pdf(path: Path, pages: list[str], user_password: str | None = None, encrypt: bool = False) -> Path:
    """A real PDF, one string per page; an empty string makes a page with no text at all."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
    if encrypt:
        pdf.set_encryption(owner_password="owner-secret", user_password=user_password)
    pdf.output(str(path))
    return path


def raw_pdf(content: bytes) -> bytes:
    """A minimal valid one-page PDF whose page draws `content` (compressed, as real PDFs are)."""
    stream = zlib.compress(content, 9)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pathological_pdf(path: Path) -> Path:
    """12 KB on disk, but its one page holds 300,000 text operators: seconds and hundreds of MB in pypdf."""
    path.write_bytes(raw_pdf(b"BT /F1 12 Tf 10 10 Td (x) Tj ET\n" * 300_000))
    return path


def load_error(path: Path, root: Path, limits: LoadLimits = LIMITS) -> str:
    with pytest.raises(LoadError) as caught:
        load(path, root, limits)
    return str(caught.value)


# -- PDF ---------------------------------------------------------------------------------------------


def test_pdf_pages_keep_their_numbers_and_blank_pages_are_skipped(tmp_path: Path) -> None:
    path = write_pdf(
        tmp_path / "manual.pdf",
        ["Pump one runs at 40 degrees.", "Pump two needs oil.", "", "The end of the manual."],
    )
    doc = load(path, tmp_path, LIMITS)
    assert doc.source == "manual.pdf"
    assert [page.number for page in doc.pages] == [1, 2, 4]
    assert "Pump one runs at 40 degrees." in doc.pages[0].text
    assert "Pump two needs oil." in doc.pages[1].text
    assert "Pump one" not in doc.pages[1].text
    assert "The end of the manual." in doc.pages[2].text


def test_pdf_source_is_relative_posix_path(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    path = write_pdf(tmp_path / "a" / "b" / "spec.pdf", ["Hello."])
    assert load(path, tmp_path, LIMITS).source == "a/b/spec.pdf"


@pytest.mark.parametrize(
    "data",
    [b"this is not a PDF at all\n" * 20, b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog"],
    ids=["garbage", "truncated-header"],
)
def test_corrupt_pdf_says_pypdf_reason(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(data)
    message = load_error(path, tmp_path)
    assert message.startswith("broken.pdf: not a readable PDF (pypdf: ")
    assert "qpdf" in message


def test_truncated_real_pdf_is_a_load_error(tmp_path: Path) -> None:
    whole = write_pdf(tmp_path / "whole.pdf", ["Some text here."]).read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(whole[: len(whole) // 2])
    assert "not a readable PDF" in load_error(path, tmp_path)


def test_encrypted_pdf_with_user_password_asks_to_decrypt(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "secret.pdf", ["Top secret text."], user_password="hunter2", encrypt=True)
    message = load_error(path, tmp_path)
    assert message.startswith("secret.pdf: encrypted PDF; decrypt it first")
    assert "qpdf --decrypt" in message


def test_encrypted_pdf_with_empty_user_password_is_read(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "locked.pdf", ["Readable by anyone."], encrypt=True)
    assert b"/Encrypt" in path.read_bytes()  # really encrypted, only with the empty password
    doc = load(path, tmp_path, LIMITS)
    assert doc.pages[0].text.strip() == "Readable by anyone."


def test_pdf_without_text_suggests_ocr(tmp_path: Path) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")
    pdf.output(str(tmp_path / "scan.pdf"))
    message = load_error(tmp_path / "scan.pdf", tmp_path)
    assert message == ("scan.pdf: no extractable text (scanned images?); run OCR first, e.g. ocrmypdf in.pdf out.pdf")


def test_raw_pdf_helper_makes_a_readable_pdf(tmp_path: Path) -> None:
    path = tmp_path / "raw.pdf"
    path.write_bytes(raw_pdf(b"BT /F1 12 Tf 10 10 Td (hello raw) Tj ET\n"))
    assert load(path, tmp_path, LIMITS).pages == [Page(1, "hello raw")]


def test_pdf_extraction_timeout_stops_the_child(tmp_path: Path) -> None:
    path = pathological_pdf(tmp_path / "slow.pdf")
    started = time.monotonic()
    message = load_error(path, tmp_path, LoadLimits(timeout_s=1.0))
    assert time.monotonic() - started < 10
    assert message == (
        "slow.pdf: PDF text extraction took over 1 s and was stopped; if the file is just large, raise RAG_FILE_TIMEOUT"
    )


def test_pdf_extraction_memory_limit(tmp_path: Path) -> None:
    path = pathological_pdf(tmp_path / "huge.pdf")
    message = load_error(path, tmp_path, LoadLimits(memory_mb=128))
    assert "128 MB" in message
    assert "RAG_FILE_MEMORY_MB" in message


# -- text and Markdown -------------------------------------------------------------------------------


def test_markdown_is_kept_as_is(tmp_path: Path) -> None:
    text = "# Title\n\nSome *emphasis* and `code`.\n\n- item one\n- item two\n"
    (tmp_path / "readme.md").write_text(text, encoding="utf-8")
    assert load(tmp_path / "readme.md", tmp_path, LIMITS).pages == [Page(None, text)]


def test_text_bom_and_crlf_are_normalised(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    assert load(tmp_path / "bom.txt", tmp_path, LIMITS).pages[0].text == "line one\nline two\n"


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    (tmp_path / "wide.txt").write_bytes("中文 and English".encode("utf-16"))
    assert load(tmp_path / "wide.txt", tmp_path, LIMITS).pages[0].text == "中文 and English"


def test_binary_data_named_txt(tmp_path: Path) -> None:
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    assert load_error(tmp_path / "image.txt", tmp_path).startswith("image.txt: binary data, not text")


def test_control_characters_without_nul_are_binary(tmp_path: Path) -> None:
    (tmp_path / "blob.md").write_bytes(bytes([1, 2, 3, 4, 5, 6, 7, 14, 15, 16]) * 100)
    assert "binary data, not text" in load_error(tmp_path / "blob.md", tmp_path)


SIMPLIFIED = "数据中心的备份每天凌晨两点开始。备份文件保存三十天！过期的文件会被自动删除；管理员每周检查一次日志。"
TRADITIONAL = "資料中心的備份每天凌晨兩點開始。備份檔案保存三十天！過期的檔案會被自動刪除；管理員每週檢查一次日誌。"


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("gb18030", SIMPLIFIED + "\nThe backup starts at 02:00 (UTC+8)."),
        ("gbk", SIMPLIFIED),
        ("gb2312", "旧系统的说明文件。"),  # short: a guess over every codec would call it Korean
        ("big5", TRADITIONAL),
        ("utf-16-le", SIMPLIFIED + "\nand a line of English"),  # no byte-order mark
        ("utf-16-be", SIMPLIFIED),
    ],
)
def test_chinese_text_in_legacy_and_wide_encodings_is_read(tmp_path: Path, encoding: str, text: str) -> None:
    (tmp_path / "zh.txt").write_bytes(text.encode(encoding))
    assert load(tmp_path / "zh.txt", tmp_path, LIMITS).pages == [Page(None, text)]


def test_html_without_a_charset_in_big5_is_read(tmp_path: Path) -> None:
    (tmp_path / "tw.html").write_bytes(f"<html><body><p>{TRADITIONAL}</p></body></html>".encode("big5"))
    assert load(tmp_path / "tw.html", tmp_path, LIMITS).pages == [Page(None, TRADITIONAL)]


def test_text_in_an_encoding_we_do_not_detect_names_file_and_byte_offset(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "latin.txt").write_bytes("Café crème, naïve façade.".encode("cp1252"))
    message = load_error(tmp_path / "notes" / "latin.txt", tmp_path)
    assert message.startswith(
        "notes/latin.txt: not valid UTF-8 text (byte 0xe9 at byte offset 3), nor UTF-16, GB18030 (GBK, GB2312) "
        "or Big5; convert it to UTF-8 first"
    )
    assert "iconv -f WINDOWS-1252 -t UTF-8" in message


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n  "], ids=["empty", "whitespace"])
def test_empty_file(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "empty.txt").write_bytes(data)
    assert load_error(tmp_path / "empty.txt", tmp_path) == "empty.txt: empty file; nothing to index"


def test_file_over_size_limit_is_refused_before_reading(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_bytes(b"word " * 300_000)  # 1.5 MB
    message = load_error(tmp_path / "big.txt", tmp_path, LoadLimits(max_file_mb=1))
    assert message == "big.txt: file is 1.4 MB, over the 1 MB limit; raise RAG_MAX_FILE_MB to include it"


def test_file_that_disappeared(tmp_path: Path) -> None:
    path = tmp_path / "gone.md"
    path.write_text("here for a moment", encoding="utf-8")
    path.unlink()
    assert load_error(path, tmp_path) == "gone.md: file disappeared during the run; run ingest again"


def test_unsupported_suffix_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    assert "unsupported file type '.xlsx'" in load_error(tmp_path / "sheet.xlsx", tmp_path)


def test_a_folder_named_like_a_document_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "odd.txt").mkdir()
    assert load_error(tmp_path / "odd.txt", tmp_path).startswith("odd.txt: ")


# -- HTML --------------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html><head><title>Hidden title</title>
<style>body { color: red; }</style>
<script>var secret = "do not index";</script>
</head>
<body>
<h1>Pump   &amp; Valve</h1>
<p>Tom &amp; Jerry&nbsp;&lt;3 the
   manual.<br>Second line &#x4E2D;&#25991;.</p>
<noscript>Enable JavaScript</noscript>
<template><p>never shown</p></template>
<ul><li>first item</li><li>second item</li></ul>
<script type="module">import x from "y";</script>
</body></html>
"""


def test_html_visible_text_only(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(PAGE, encoding="utf-8")
    text = load(tmp_path / "page.html", tmp_path, LIMITS).pages[0].text
    assert text == ("Pump & Valve\n\nTom & Jerry <3 the manual.\nSecond line 中文.\n\nfirst item\n\nsecond item")


def test_html_meta_charset_is_honoured(tmp_path: Path) -> None:
    html = '<html><head><meta charset="gb2312"></head><body><p>中文页面。</p></body></html>'
    (tmp_path / "zh.htm").write_bytes(html.encode("gb2312"))
    assert load(tmp_path / "zh.htm", tmp_path, LIMITS).pages == [Page(None, "中文页面。")]


def test_html_without_head_end_tag_still_shows_body(tmp_path: Path) -> None:
    html = "<html><head><title>t</title><body><p>Body text.</p></body></html>"
    (tmp_path / "open.html").write_text(html, encoding="utf-8")
    assert load(tmp_path / "open.html", tmp_path, LIMITS).pages[0].text == "Body text."


def test_html_with_only_scripts_has_no_visible_text(tmp_path: Path) -> None:
    (tmp_path / "app.html").write_text("<html><script>run()</script></html>", encoding="utf-8")
    assert "no visible text" in load_error(tmp_path / "app.html", tmp_path)


def test_html_in_wrong_encoding_names_offset(tmp_path: Path) -> None:
    (tmp_path / "latin.html").write_bytes(b"<p>caf\xe9</p>")
    assert "byte 0xe9 at byte offset 6" in load_error(tmp_path / "latin.html", tmp_path)


# -- walking a folder --------------------------------------------------------------------------------


def make_tree(root: Path) -> None:
    for rel in [
        "b.md",
        "a.txt",
        "Docs/z.PDF",
        "docs/guide.html",
        "docs/deep/notes.markdown",
        "docs/page.htm",
        ".secret.md",
        ".git/config.txt",
        "docs/.cache/x.md",
        "image.png",
        "docs/data.csv",
        "noext",
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x", encoding="utf-8")


def test_walk_finds_supported_files_in_sorted_order(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = walk(tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path in found.files] == [
        "Docs/z.PDF",
        "a.txt",
        "b.md",
        "docs/deep/notes.markdown",
        "docs/guide.html",
        "docs/page.htm",
    ]
    assert found.hidden == [".git/", ".secret.md", "docs/.cache/"]
    assert found.unsupported == ["docs/data.csv", "image.png", "noext"]
    assert found.unreadable == []


def rel(found: list[Path], root: Path) -> list[str]:
    return [path.relative_to(root).as_posix() for path in found]


@pytest.mark.parametrize("follow", [False, True])
def test_walk_survives_symlink_loops_and_skips_duplicates(tmp_path: Path, follow: bool) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "sub" / "a.md").write_text("a", encoding="utf-8")
    (tmp_path / "docs" / "sub" / "loop").symlink_to(tmp_path / "docs", target_is_directory=True)
    (tmp_path / "mirror").symlink_to(tmp_path / "docs", target_is_directory=True)
    (tmp_path / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    (tmp_path / "self.md").symlink_to("self.md")
    found = walk(tmp_path, follow_symlinks=follow)
    assert rel(found.files, tmp_path) == ["docs/sub/a.md"]
    assert found.links == ["docs/sub/loop", "mirror"]  # inside, and already included
    assert [name for name, _ in found.problems] == ["dangling.md", "self.md"]
    assert "a broken symbolic link" in found.problems[0][1]
    assert "a symbolic link loop" in found.problems[1][1]


@pytest.mark.parametrize("follow", [False, True])
def test_walk_never_follows_a_link_out_of_the_folder(tmp_path: Path, follow: bool) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.txt").write_text("x", encoding="utf-8")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "root" / "passwd.txt").symlink_to(tmp_path / "elsewhere" / "x.txt")
    (tmp_path / "root" / "up").symlink_to("..", target_is_directory=True)
    found = walk(tmp_path / "root", follow_symlinks=follow)
    assert found.files == []
    assert [name for name, _ in found.problems] == ["linked", "passwd.txt", "up"]
    assert all("outside the folder; not followed" in message for _, message in found.problems)
    assert f"a symbolic link to {tmp_path / 'elsewhere' / 'x.txt'}" in found.problems[1][1]


def test_walk_follows_links_inside_the_folder_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / ".drafts").mkdir()
    (tmp_path / ".drafts" / "plan.md").write_text("plan", encoding="utf-8")
    (tmp_path / "plan.md").symlink_to(Path(".drafts") / "plan.md")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a", encoding="utf-8")
    (tmp_path / "alias").symlink_to("docs", target_is_directory=True)
    (tmp_path / "again.md").symlink_to(Path("docs") / "a.md")
    found = walk(tmp_path)
    assert (rel(found.files, tmp_path), found.links, found.problems) == (
        ["docs/a.md"], ["again.md", "alias", "plan.md"], [])
    followed = walk(tmp_path, follow_symlinks=True)
    assert (rel(followed.files, tmp_path), followed.links) == (["docs/a.md", "plan.md"], ["again.md", "alias"])
    assert load(tmp_path / "plan.md", tmp_path, LIMITS).source == "plan.md"


def test_walk_reports_names_that_are_not_utf8_and_goes_on(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path)
    Path(os.fsdecode(raw + b"/caf\xe9.txt")).write_bytes(b"text")
    os.mkdir(raw + b"/d\xff")
    Path(os.fsdecode(raw + b"/d\xff/a.md")).write_bytes(b"text")
    Path(os.fsdecode(raw + b"/pic\xe9.png")).write_bytes(b"png")
    (tmp_path / "fine.md").write_text("fine", encoding="utf-8")
    found = walk(tmp_path)
    assert rel(found.files, tmp_path) == ["fine.md"]
    assert [name for name, _ in found.problems] == ["caf\\xe9.txt", "d\\xff"]
    assert "not valid UTF-8; rename it" in found.problems[0][1]
    assert found.unsupported == ["pic\\xe9.png"]


def test_walk_reports_a_folder_it_cannot_list_and_goes_on(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("a", encoding="utf-8")
    nest_past_path_max(tmp_path)
    found = walk(tmp_path)
    assert rel(found.files, tmp_path) == ["a.md"]
    assert len(found.problems) == len(found.unreadable) == 1
    assert "cannot list this folder (File name too long)" in found.problems[0][1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_walk_reports_a_folder_without_permission(tmp_path: Path) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.md").write_text("x", encoding="utf-8")
    (tmp_path / "open.md").write_text("open", encoding="utf-8")
    (tmp_path / "locked").chmod(0)
    try:
        found = walk(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert rel(found.files, tmp_path) == ["open.md"]
    assert found.unreadable == ["locked/"]
    assert "check its permissions" in found.problems[0][1]


def test_walk_of_a_single_file_and_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "one.md").write_text("# One", encoding="utf-8")
    assert walk(tmp_path / "one.md").files == [tmp_path / "one.md"]
    assert load(tmp_path / "one.md", tmp_path / "one.md", LIMITS).source == "one.md"
    with pytest.raises(FileNotFoundError):
        walk(tmp_path / "missing")


def test_walk_is_deterministic(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert walk(tmp_path) == walk(tmp_path)


def test_supported_suffixes() -> None:
    assert {".pdf", ".md", ".markdown", ".txt", ".html", ".htm"} == SUPPORTED_SUFFIXES


def test_pdf_memory_limit_too_low_to_start(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "small.pdf", ["Small."])
    assert "RAG_FILE_MEMORY_MB" in load_error(path, tmp_path, LoadLimits(memory_mb=16))
