"""Process-table helpers read straight from /proc: no psutil, and no reaping side effects.

Reading /proc never waits on or reaps a child, unlike asking `sh` whether tritonserver is alive
(which runs PyTriton's exit callbacks on the asking thread and can deadlock on PyTriton's lock).
"""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """All live descendant pids of `pid`, read from /proc (no psutil dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
