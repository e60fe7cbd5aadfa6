"""The installed llama.cpp build is portable: no AMX and no AVX-512 instruction in its CPU library.

The check disassembles the real installed libraries (scripts/check_portable.py). That it can fail is shown on a
small library compiled here with the instructions a `-march=native` build emits on an AMX machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.servers import ROOT

CHECK = ROOT / "scripts" / "check_portable.py"


def run_check(*libraries: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *map(str, libraries)], capture_output=True, text=True,
                          timeout=300)


def test_the_installed_llama_cpp_build_has_no_amx_or_avx512_instruction():
    done = run_check()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "libggml-cpu" in done.stdout
    assert "AMX 0, AVX-512 0" in done.stdout


def test_the_check_catches_a_native_build(tmp_path):
    source = tmp_path / "native.c"
    source.write_text(
        "void native(const void *p, long stride) {\n"
        '  __asm__ volatile("tileloadd (%0,%1,1), %%tmm0" :: "r"(p), "r"(stride));\n'
        '  __asm__ volatile("vpaddd %%zmm0, %%zmm1, %%zmm2" ::: "xmm0");\n'
        '  __asm__ volatile("vpaddd %%ymm0, %%ymm1, %%ymm2" ::: "xmm0");\n'
        "}\n"
    )
    library = tmp_path / "libggml-native.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    done = run_check(library)
    assert done.returncode == 1
    assert "AMX 1, AVX-512 1, AVX2 1 instructions: NOT PORTABLE" in done.stdout
