"""Loaders: find the documents under an ingest folder and extract their text (PDF, Markdown, text, HTML)."""

from __future__ import annotations

import codecs
import contextlib
import errno
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ingest.pdf_workers import PdfWorkers

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = frozenset({".pdf", ".md", ".markdown", ".txt", ".html", ".htm"})
_HTML_SUFFIXES = frozenset({".html", ".htm"})
_MB = 1024 * 1024
_SNIFF_BYTES = 8192
_CONVERT_HINT = (
    "convert it to UTF-8 first, e.g. iconv -f WINDOWS-1252 -t UTF-8 in.txt > out.txt (with its real encoding)"
)
# Tried, in this order of preference, on text that is not UTF-8 and has no byte-order mark.
# GB18030 reads GBK and GB2312 too (it extends both).
_DETECTED = ("utf_16_le", "utf_16_be", "gb18030", "big5")
_DETECTED_NAMES = "UTF-16, GB18030 (GBK, GB2312) or Big5"
_MIN_WIDE_BYTES = 64  # below this, binary bytes with a NUL can read as plausible UTF-16 as well as text does
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
    unreadable: list[str] = field(default_factory=list)  # folders we may not list: what they held is kept
    links: list[str] = field(default_factory=list)  # symbolic links inside the folder, not followed
    problems: list[tuple[str, str]] = field(default_factory=list)  # (name, message): skipped, to be fixed


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


def walk(root: Path, follow_symlinks: bool = False) -> WalkResult:
    """Every supported file under `root` (or `root` itself if it is a file); hidden entries are skipped.

    The folder is a boundary: a symbolic link is never followed out of it, and inside it only with
    `follow_symlinks`. A link loop, a broken link, a folder that cannot be listed or a name that is not
    UTF-8 is reported in `problems` and the walk goes on. The walk keeps its own stack, so depth is no limit.
    """
    result = WalkResult()
    if root.is_file():
        _classify(root, root.name, result)
    elif root.is_dir():
        _Walker(root, follow_symlinks, result).run()
    else:
        raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(root))
    result.files.sort(key=lambda path: source_of(path, root))
    for skipped in (result.hidden, result.unsupported, result.unreadable, result.links):
        skipped.sort()
    result.problems.sort()
    return result


def printable(name: str) -> str:
    """A name as a terminal can show it: bytes that are not UTF-8 become \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _undecodable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.scandir kept the raw bytes as lone surrogates
        return True
    return False


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, with every link resolved, is `root` or lies under it (root resolved too)."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


class _Walker:
    """One walk: real folders first, then the links found in them, so a file keeps its real name."""

    def __init__(self, root: Path, follow_symlinks: bool, result: WalkResult) -> None:
        self.root, self.follow, self.result = root, follow_symlinks, result
        self.seen: set[tuple[int, int]] = set()  # folders and linked files included, by (device, inode)
        self.pending_links: list[Path] = []

    def run(self) -> None:
        self._tree(self.root)
        while self.pending_links:  # links found while walking a linked folder are handled in turn
            links, self.pending_links = sorted(self.pending_links), []
            if self.follow:  # a link to a file already included adds nothing but a second name
                self.seen |= _identities(self.result.files)
            for link in links:
                self._link(link)

    def _rel(self, path: Path) -> str:
        return printable(source_of(path, self.root))

    def _problem(self, path: Path, reason: str) -> None:
        rel = self._rel(path)
        log.debug("skipping %s: %s", rel, reason)  # the run names it with the failures, at the end
        self.result.problems.append((rel, f"{rel}: {reason}"))

    def _tree(self, top: Path) -> None:
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                identity = _identity(directory)
                entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
            except OSError as exc:
                self._problem(directory, f"cannot list this folder ({exc.strerror or exc}); check its permissions")
                self.result.unreadable.append(f"{source_of(directory, self.root)}/")
                continue
            if identity in self.seen:
                continue
            self.seen.add(identity)
            for entry in entries:
                try:
                    if folder := self._entry(directory / entry.name, entry):
                        stack.append(folder)
                except OSError as exc:  # stat failed on this one entry: report it, keep walking
                    self._problem(directory / entry.name, f"cannot read it ({exc.strerror or exc})")

    def _entry(self, path: Path, entry: os.DirEntry[str]) -> Path | None:
        """Sort one directory entry; return it when it is a folder to walk."""
        if entry.name.startswith("."):
            self.result.hidden.append(self._rel(path) + ("/" if entry.is_dir(follow_symlinks=False) else ""))
        elif entry.is_symlink():
            self.pending_links.append(path)
        elif entry.is_dir(follow_symlinks=False):
            if not _undecodable(entry.name):
                return path
            self._problem(path, "the folder name is not valid UTF-8, so its files are not read; rename it "
                                "(e.g. convmv -f GBK -t UTF-8 -r --notest FOLDER)")
        elif _undecodable(entry.name) and path.suffix.lower() in SUPPORTED_SUFFIXES:
            self._problem(path, "the file name is not valid UTF-8; rename it "
                                "(e.g. convmv -f GBK -t UTF-8 --notest FILE)")
        else:
            _classify(path, self._rel(path), self.result, entry.is_file(follow_symlinks=False))
        return None

    def _link(self, link: Path) -> None:
        try:
            target = link.stat()  # follows the link
        except OSError as exc:
            why = "a symbolic link loop" if exc.errno == errno.ELOOP else "a broken symbolic link"
            self._problem(link, f"{why} ({exc.strerror or exc}); fix or remove the link")
            return
        real = os.path.realpath(link)
        if not inside(link, self.root):
            self._problem(link, f"a symbolic link to {printable(real)}, outside the folder; not followed "
                                "(ingest reads only what is inside the folder)")
        elif not self.follow:
            log.info("skipping %s: a symbolic link; --follow-symlinks includes links inside the folder",
                     self._rel(link))
            self.result.links.append(self._rel(link))
        elif _undecodable(link.name):
            self._problem(link, "the link name is not valid UTF-8; rename it")
        elif (target.st_dev, target.st_ino) in self.seen:
            log.info("skipping %s: it links to %s, already included", self._rel(link), printable(real))
            self.result.links.append(self._rel(link))
        elif os.path.isdir(real):
            self._tree(link)
        else:
            self.seen.add((target.st_dev, target.st_ino))
            _classify(link, self._rel(link), self.result, os.path.isfile(real))


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _identities(paths: list[Path]) -> set[tuple[int, int]]:
    out = set()
    for path in paths:
        with contextlib.suppress(OSError):  # gone since it was listed: loading it will say so
            out.add(_identity(path))
    return out


def _classify(path: Path, rel: str, result: WalkResult, is_file: bool | None = None) -> None:
    if path.suffix.lower() in SUPPORTED_SUFFIXES and (path.is_file() if is_file is None else is_file):
        result.files.append(path)
    else:  # other types, and FIFOs or sockets, which reading would block on or fail
        log.debug("skipping %s: not a supported file", rel)
        result.unsupported.append(rel)


def load(path: Path, root: Path, limits: LoadLimits, pdf: PdfWorkers | None = None) -> LoadedDocument:
    """Extract one file's text; for a bad file raise LoadError, never anything else.

    PDFs are read by `pdf`'s worker processes (a run shares them across files); without it, by a worker
    started for this one file.
    """
    source = source_of(path, root)
    try:
        if root.is_dir() and not inside(path, root):
            raise LoadError(source, "it now leads outside the folder (a link was put in its way after the folder "
                                    "was listed); not read")
        pages = _extract(path, source, limits, pdf)
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


def _extract(path: Path, source: str, limits: LoadLimits, pdf: PdfWorkers | None) -> list[Page]:
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
        return _load_pdf(path, source, limits, pdf)
    data = path.read_bytes()
    text = (
        _html_text(data, source) if suffix in _HTML_SUFFIXES else _normalise(_decode(data, source))
    )
    if not text.strip():
        raise LoadError(source, "empty file; nothing to index")
    return [Page(None, text)]


def _normalise(text: str) -> str:
    """One newline convention for every format, so stored offsets mean one thing."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _decode(data: bytes, source: str, encoding: str | None = None) -> str:
    """Bytes to text: a byte-order mark wins, then the declared `encoding` (HTML's meta charset), then
    UTF-8, then UTF-16, GB18030 or Big5 if one of them reads the bytes as text. Anything else is an error."""
    for bom, bom_encoding in _BOMS:
        if data.startswith(bom):
            return _strict_decode(data, len(bom), bom_encoding, source)
    if encoding:
        return _strict_decode(data, 0, encoding, source)
    if _looks_binary(data[:_SNIFF_BYTES]):  # UTF-16 looks binary too: its ASCII has a NUL byte each
        if (text := _wide(data, source)) is not None:
            return text
        raise LoadError(source, "binary data, not text; check its type or move it out of the folder")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if (text := _detect(data, source)) is not None:
        return text
    return _strict_decode(data, 0, "utf-8", source, f", nor {_DETECTED_NAMES}")


def _wide(data: bytes, source: str) -> str | None:
    """UTF-16 without a byte-order mark, or None. Mostly-ASCII text shows it by NULs on one side only (the
    high byte); other text (Chinese) is left to charset-normalizer when there is enough of it to judge."""
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if len(data) % 2:
        return None
    if (even == 0) != (odd == 0) and max(even, odd) * 8 >= len(data):  # a quarter of the characters ASCII
        encoding: str | None = "utf-16-le" if odd else "utf-16-be"
    elif len(data) >= _MIN_WIDE_BYTES:
        from charset_normalizer import from_bytes

        best = from_bytes(data, cp_isolation=["utf_16_le", "utf_16_be"]).best()
        encoding = best.encoding if best else None
    else:
        return None
    return _checked(data, encoding, source) if encoding else None


def _detect(data: bytes, source: str) -> str | None:
    """The text, if charset-normalizer finds it coherent in one of the encodings we detect."""
    from charset_normalizer import from_bytes  # here, not at import: only text of an undeclared encoding needs it

    best = from_bytes(data, cp_isolation=list(_DETECTED)).best()
    return _checked(data, best.encoding, source) if best else None


def _checked(data: bytes, encoding: str, source: str) -> str | None:
    """The bytes decoded whole and strictly (detection only samples them), if they read as text."""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        return None
    if _implausible(text):
        return None
    log.info("%s is not UTF-8; read as %s", source, encoding)
    return text


def _strict_decode(data: bytes, skip: int, encoding: str, source: str, also: str = "") -> str:
    try:
        return data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        reason = f"not valid {encoding.upper()} text (byte 0x{data[offset]:02x} at byte offset {offset}){also}"
        raise LoadError(source, f"{reason}; {_CONVERT_HINT}") from None


def _implausible(text: str) -> bool:
    """Binary bytes read as UTF-16 give control characters and unassigned code points; text has neither."""
    odd = sum(1 for ch in text[:_SNIFF_BYTES] if unicodedata.category(ch) in ("Cc", "Cn", "Co")
              and ch not in "\t\n\r\f")
    return odd * 100 > len(text[:_SNIFF_BYTES])


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


def _html_charset(data: bytes, source: str) -> str | None:
    """The charset a <meta> tag declares, or None (then UTF-8 or a detected encoding is read)."""
    match = _META_CHARSET.search(data[:_SNIFF_BYTES])
    if not match:
        return None
    name = match.group(1).decode("ascii")
    try:
        return codecs.lookup(name).name
    except LookupError:
        log.warning("%s declares an unknown charset %r; detecting its encoding instead", source, name)
        return None


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


def _load_pdf(path: Path, source: str, limits: LoadLimits, pdf: PdfWorkers | None) -> list[Page]:
    if pdf is None:
        with PdfWorkers(limits.memory_mb, limits.timeout_s) as own:
            result = own.extract(path)
    else:
        result = pdf.extract(path)
    if "error" in result:
        raise LoadError(source, _pdf_problem(result, limits))
    pages = [Page(number, _normalise(text)) for number, text in result["pages"]]
    if not pages:
        raise LoadError(
            source, "no extractable text (scanned images?); run OCR first, e.g. ocrmypdf in.pdf out.pdf"
        )
    return pages


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
    if result["error"] == "timeout":
        return (
            f"PDF text extraction took over {limits.timeout_s:g} s and was stopped; "
            "if the file is just large, raise RAG_FILE_TIMEOUT"
        )
    reason = result["reason"]
    if result["error"] == "died":
        return (
            f"the PDF extraction process died (exit code {result['code']}: {reason}); it may have hit the "
            f"{limits.memory_mb} MB memory limit, which RAG_FILE_MEMORY_MB raises"
        )
    if result["error"] == "setup":
        return (
            f"could not start PDF text extraction ({reason}); is pypdf installed, "
            f"and is the {limits.memory_mb} MB memory limit (RAG_FILE_MEMORY_MB) too low?"
        )
    return f"not a readable PDF (pypdf: {reason}); re-export or repair it (e.g. qpdf in.pdf out.pdf)"
