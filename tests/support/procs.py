"""Processes as Linux's /proc shows them: for tests that check what a run leaves behind, and for the
benchmarks that count the CPU an engine and its model runners use."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str  # "R", "S", ..., "Z" for a zombie
    cpu: float  # seconds of user + system time, with that of its children it has waited for


def processes() -> dict[int, Proc]:
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone while we looked
                continue
            found[int(entry)] = Proc(int(entry), int(fields[1]), fields[0], sum(int(f) for f in fields[11:15]) / tick)
    return found


def children(pid: int) -> list[int]:
    """The live (not zombie) children of `pid`."""
    return [p.pid for p in processes().values() if p.ppid == pid and p.state != "Z"]


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by `pid` and every process below it."""
    procs = processes()
    tree, grew = {pid}, True
    while grew:
        below = {p.pid for p in procs.values() if p.ppid in tree} - tree
        tree |= below
        grew = bool(below)
    return sum(procs[p].cpu for p in tree if p in procs)
