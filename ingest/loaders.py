"""Loaders: find the documents under an ingest folder and extract their text (PDF, Markdown, text, HTML)."""

from __future__ import annotations

import codecs
import errno
import json
import logging
import os
import re
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = frozenset({".pdf", ".md", ".markdown", ".txt", ".html", ".htm"})
_HTML_SUFFIXES = frozenset({".html", ".htm"})
_MB = 1024 * 1024
_SNIFF_BYTES = 8192
_CONVERT_HINT = (
    "convert it to UTF-8 first, e.g. iconv -f GB18030 -t UTF-8 in.txt > out.txt (with its real encoding)"
)
# Checked longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_TEXT_CONTROLS = frozenset(b"\t\n\r\f\b\x1b")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HIDDEN_TAGS = frozenset({"head", "script", "style", "template", "noscript"})
_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "caption", "dd", "details", "dialog", "div"),
        *("dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "li"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "main", "nav", "ol", "p", "pre", "section", "summary"),
        *("table", "tr", "ul"),
    }
)
# The PDF child imports this module from the folder that holds `ingest`, installed or not.
_IMPORT_ROOT = str(Path(__file__).resolve().parent.parent)
_PDF_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ingest.loaders import _pdf_child_main; _pdf_child_main(sys.argv[2], int(sys.argv[3]))"
)


@dataclass(frozen=True)
class Page:
    """Extracted text of one page: `number` is the 1-based PDF page, None for other formats."""

    number: int | None
    text: str


@dataclass(frozen=True)
class LoadedDocument:
    path: Path
    source: str  # relative to the ingest root, POSIX style: the name citations use
    pages: list[Page]


@dataclass(frozen=True)
class LoadLimits:
    """What one file may cost; built from Settings.file_timeout, file_memory_mb and max_file_mb."""

    timeout_s: float = 60
    memory_mb: int = 1024
    max_file_mb: int = 200


@dataclass
class WalkResult:
    """Files to load, sorted by source, and the relative POSIX paths of what was skipped."""

    files: list[Path] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)  # a hidden folder is one entry ending in "/"
    unsupported: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # folders we may not list


class LoadError(Exception):
    """One file could not be loaded; the message names it, says why, and what to do."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def source_of(path: Path, root: Path) -> str:
    """The name a file is cited by: its path relative to the ingest root, POSIX style."""
    if path == root:
        return path.name
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def walk(root: Path) -> WalkResult:
    """Every supported file under `root` (or `root` itself if it is a file); hidden entries are skipped."""
    result = WalkResult()
    if root.is_file():
        _classify(root, root.name, result)
    elif root.is_dir():
        _walk_dir(root, root, result, set())
    else:
        raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(root))
    result.files.sort(key=lambda path: source_of(path, root))
    for skipped in (result.hidden, result.unsupported, result.unreadable):
        skipped.sort()
    return result


def _walk_dir(directory: Path, root: Path, result: WalkResult, seen: set[tuple[int, int]]) -> None:
    rel = source_of(directory, root)
    try:
        info = directory.stat()
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        log.warning("cannot list folder %s: %s", rel, exc.strerror or exc)
        result.unreadable.append(f"{rel}/")
        return
    if (info.st_dev, info.st_ino) in seen:  # a symlink to a folder already walked: a loop or a duplicate
        log.warning("skipping %s: it links to a folder already walked", rel)
        return
    seen.add((info.st_dev, info.st_ino))
    for entry in entries:
        path = directory / entry.name
        if entry.name.startswith("."):
            result.hidden.append(source_of(path, root) + ("/" if entry.is_dir() else ""))
        elif entry.is_dir():
            _walk_dir(path, root, result, seen)
        else:
            _classify(path, source_of(path, root), result)


def _classify(path: Path, rel: str, result: WalkResult) -> None:
    if path.suffix.lower() in SUPPORTED_SUFFIXES and path.is_file():
        result.files.append(path)
    else:  # other types, and FIFOs or broken links, which reading would block on or fail
        log.debug("skipping %s: not a supported file", rel)
        result.unsupported.append(rel)


def load(path: Path, root: Path, limits: LoadLimits) -> LoadedDocument:
    """Extract one file's text; for a bad file raise LoadError, never anything else."""
    source = source_of(path, root)
    try:
        pages = _extract(path, source, limits)
    except LoadError:
        raise
    except FileNotFoundError:
        raise LoadError(source, "file disappeared during the run; run ingest again") from None
    except OSError as exc:
        raise LoadError(source, f"cannot read it ({exc.strerror or exc}); check its permissions") from exc
    except Exception as exc:  # one bad file must not end the run: report it with the reason and go on
        log.debug("unexpected error loading %s", source, exc_info=True)
        raise LoadError(source, f"could not extract its text ({type(exc).__name__}: {exc})") from exc
    return LoadedDocument(path=path, source=source, pages=pages)


def _extract(path: Path, source: str, limits: LoadLimits) -> list[Page]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise LoadError(source, f"unsupported file type '{suffix}'; supported: {supported}")
    size = path.stat().st_size
    if size > limits.max_file_mb * _MB:
        raise LoadError(
            source,
            f"file is {size / _MB:.1f} MB, over the {limits.max_file_mb} MB limit; "
            "raise RAG_MAX_FILE_MB to include it",
        )
    if suffix == ".pdf":
        return _load_pdf(path, source, limits)
    data = path.read_bytes()
    text = (
        _html_text(data, source) if suffix in _HTML_SUFFIXES else _normalise(_decode(data, source, "utf-8"))
    )
    if not text.strip():
        raise LoadError(source, "empty file; nothing to index")
    return [Page(None, text)]


def _normalise(text: str) -> str:
    """One newline convention for every format, so stored offsets mean one thing."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes, source: str, encoding: str) -> str:
    """Bytes to text: a byte-order mark wins over `encoding`; binary or undecodable bytes are errors."""
    for bom, bom_encoding in _BOMS:
        if data.startswith(bom):
            return _strict_decode(data, len(bom), bom_encoding, source)
    if _looks_binary(data[:_SNIFF_BYTES]):
        raise LoadError(source, "binary data, not text; check its type or move it out of the folder")
    return _strict_decode(data, 0, encoding, source)


def _strict_decode(data: bytes, skip: int, encoding: str, source: str) -> str:
    try:
        return data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        reason = f"not valid {encoding.upper()} text (byte 0x{data[offset]:02x} at byte offset {offset})"
        raise LoadError(source, f"{reason}; {_CONVERT_HINT}") from None


def _looks_binary(sample: bytes) -> bool:
    """NUL bytes, or more than 10% control characters: no text file looks like that."""
    if b"\x00" in sample:
        return True
    controls = sum(1 for byte in sample if byte < 32 and byte not in _TEXT_CONTROLS)
    return controls * 10 > len(sample)


def _html_text(data: bytes, source: str) -> str:
    text = _decode(data, source, _html_charset(data, source))
    if not text.strip():
        return ""
    parser = _VisibleText()
    parser.feed(text)
    parser.close()
    if not (visible := parser.text()):
        raise LoadError(source, "no visible text in this HTML page (only markup or scripts)")
    return visible


def _html_charset(data: bytes, source: str) -> str:
    match = _META_CHARSET.search(data[:_SNIFF_BYTES])
    if not match:
        return "utf-8"
    name = match.group(1).decode("ascii")
    try:
        return codecs.lookup(name).name
    except LookupError:
        log.warning("%s declares an unknown charset %r; reading it as UTF-8", source, name)
        return "utf-8"


class _VisibleText(HTMLParser):
    """The text a browser shows: hidden elements dropped, blocks as paragraphs, whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)  # entities arrive already unescaped
        self._parts: list[str] = []
        self._hidden: list[str] = []  # open hidden elements, innermost last

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # </head> may be omitted; <body> ends it
            self._hidden.clear()
        elif tag in _HIDDEN_TAGS:
            self._hidden.append(tag)
        self._break(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _HIDDEN_TAGS:  # <script/> opens nothing
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        while tag in self._hidden:  # also closes hidden elements left open inside it
            if self._hidden.pop() == tag:
                break
        if tag != "br":
            self._break(tag)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._parts.append(re.sub(r"\s+", " ", data))  # a line break in HTML source is a space

    def _break(self, tag: str) -> None:
        if tag == "br":
            self._parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self._parts.append("\n\n")
        elif tag in ("td", "th"):
            self._parts.append(" ")

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).split("\n"))
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _load_pdf(path: Path, source: str, limits: LoadLimits) -> list[Page]:
    result = _run_pdf_child(path, source, limits)
    if "error" in result:
        raise LoadError(source, _pdf_problem(result, limits))
    pages = [Page(number, _normalise(text)) for number, text in result["pages"]]
    if not pages:
        raise LoadError(
            source, "no extractable text (scanned images?); run OCR first, e.g. ocrmypdf in.pdf out.pdf"
        )
    return pages


def _run_pdf_child(path: Path, source: str, limits: LoadLimits) -> dict[str, Any]:
    """Extract in a child process: pypdf has had decompression bombs and endless loops, and one bad
    PDF must cost one file, not the run. The timeout includes the child's start-up (~0.2 s)."""
    command = [sys.executable, "-c", _PDF_CHILD, _IMPORT_ROOT, str(path), str(limits.memory_mb)]
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=limits.timeout_s, check=False
        )
    except subprocess.TimeoutExpired:  # run() has already killed the child
        raise LoadError(
            source,
            f"PDF text extraction took over {limits.timeout_s:g} s and was stopped; "
            "if the file is just large, raise RAG_FILE_TIMEOUT",
        ) from None
    errors = done.stderr.decode("utf-8", "replace").strip()
    if errors:
        log.debug("pypdf on %s: %s", source, errors)
    try:
        return dict(json.loads(done.stdout))
    except ValueError:
        last = errors.splitlines()[-1] if errors else "no message"
        raise LoadError(
            source,
            f"the PDF extraction process died (exit code {done.returncode}: {last}); it may have hit the "
            f"{limits.memory_mb} MB memory limit, which RAG_FILE_MEMORY_MB raises",
        ) from None


def _pdf_problem(result: dict[str, Any], limits: LoadLimits) -> str:
    if result["error"] == "encrypted":
        why = f" ({result['reason']})" if "reason" in result else ""
        return (
            f"encrypted PDF{why}; decrypt it first (e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf)"
        )
    if result["error"] == "memory":
        return (
            f"PDF text extraction ran out of memory (limit {limits.memory_mb} MB); "
            "if the file is just large, raise RAG_FILE_MEMORY_MB"
        )
    reason = result["reason"]
    if result["error"] == "setup":
        return (
            f"could not start PDF text extraction ({reason}); is pypdf installed, "
            f"and is the {limits.memory_mb} MB memory limit (RAG_FILE_MEMORY_MB) too low?"
        )
    return f"not a readable PDF (pypdf: {reason}); re-export or repair it (e.g. qpdf in.pdf out.pdf)"


def _pdf_child_main(path: str, memory_mb: int) -> None:
    """Runs in the child process: cap memory, extract, write one JSON object to stdout."""
    out, sys.stdout = sys.stdout, sys.stderr  # a stray print must not corrupt the answer
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * _MB if hard == resource.RLIM_INFINITY else min(memory_mb * _MB, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = _pdf_pages(path)
    except MemoryError:
        result = {"error": "memory"}
    except ImportError as exc:  # pypdf missing, or its libraries could not even be mapped under the cap
        result = {"error": "setup", "reason": f"{type(exc).__name__}: {exc}"}
    except OSError as exc:  # ENOMEM: the cap hit where Python reads or maps a file (pypdf's own modules, say)
        result = {"error": "memory"} if exc.errno == errno.ENOMEM else {
            "error": "unreadable", "reason": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # whatever pypdf raises is the reason the user needs to see
        result = {"error": "unreadable", "reason": f"{type(exc).__name__}: {exc}"}
    out.write(json.dumps(result))


def _pdf_pages(path: str) -> dict[str, Any]:
    """Text of every page that has some, as [number, text]; a page that fails is skipped and noted."""
    from pypdf import PdfReader  # imported here so it loads under the memory cap, in the child only

    reader = PdfReader(path)
    if reader.is_encrypted:
        try:
            if not reader.decrypt(""):  # many PDFs only set an owner password
                return {"error": "encrypted"}
        except Exception as exc:  # e.g. AES without the `cryptography` package
            return {"error": "encrypted", "reason": f"{type(exc).__name__}: {exc}"}
    pages, failures = [], []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text()
        except MemoryError:
            raise
        except Exception as exc:  # keep the other pages; report this one if none are left
            failures.append(f"page {number}: {type(exc).__name__}: {exc}")
            continue
        if text.strip():  # lone surrogates (broken font maps) become "?": hashing needs valid UTF-8
            pages.append([number, text.encode("utf-8", "replace").decode("utf-8")])
    if not pages and failures:
        return {"error": "unreadable", "reason": failures[0]}
    sys.stderr.write("".join(f"skipped {failure}\n" for failure in failures))
    return {"pages": pages}
