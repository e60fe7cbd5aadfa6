"""Checks that the installed llama.cpp CPU library uses no instruction a portable x86-64 build must avoid.

Disassembles every ggml library inside the installed llama_cpp package and counts AMX tile instructions and
AVX-512 registers (zmm). A build with -march=native on a CPU that advertises AMX emits `tileloadd` & co.,
which fault with SIGILL on a VM that does not let a process use AMX. Exit 0 when none are found, 1 otherwise.

Usage: python scripts/check_portable.py [LIBRARY ...]
(the installed ones by default; run by `make install` and by tests/engine/test_portable_build.py)
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

AMX = re.compile(r"\b(tileloadd|tileloaddt1|tilestored|ldtilecfg|sttilecfg|tilezero|tilerelease|tdp\w+)\b")
AVX512 = re.compile(r"%zmm\d+|%k[1-7]\b")
AVX2 = re.compile(r"%ymm\d+")  # the baseline: a scan that sees none of it did not read the code


def libraries() -> list[Path]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llama_cpp is not installed in this interpreter")
    root = Path(next(iter(spec.submodule_search_locations)))
    found = {p.resolve() for p in root.rglob("*.so*") if "ggml" in p.name and p.is_file()}
    return sorted(found)


def scan(library: Path) -> tuple[int, int, int]:
    """(AMX, AVX-512, AVX2) instructions in the library's code."""
    amx = avx512 = avx2 = 0
    with subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", str(library)], stdout=subprocess.PIPE,
                          text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            amx += bool(AMX.search(line))
            avx512 += bool(AVX512.search(line))
            avx2 += bool(AVX2.search(line))
    return amx, avx512, avx2


def main() -> int:
    if shutil.which("objdump") is None:
        sys.exit("objdump not found: install binutils (apt-get install binutils)")
    found = [Path(arg) for arg in sys.argv[1:]] or libraries()
    if not found:
        sys.exit("no ggml library found inside the llama_cpp package")
    bad, seen_avx2 = False, 0
    for library in found:
        amx, avx512, avx2 = scan(library)
        bad |= bool(amx or avx512)
        seen_avx2 += avx2
        verdict = "ok" if not (amx or avx512) else "NOT PORTABLE: rebuild with scripts/build-llama.sh"
        print(f"{library.name}: AMX {amx}, AVX-512 {avx512}, AVX2 {avx2} instructions: {verdict}")
    if not seen_avx2:
        print("no AVX2 instruction found either: the disassembly was not read; is objdump working?")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
