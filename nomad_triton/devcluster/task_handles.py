"""Task handles: how a restarted devcluster finds the task processes it started before.

Why pid + start time: a pid alone can be recycled by an unrelated process while devcluster is
down. The kernel's start time of a process (`/proc/<pid>/stat` field 22, clock ticks since boot)
never changes and differs for a recycled pid, so (pid, start time) names one process for good
(Nomad's client re-attaches to its executor by a handle in its state db the same way).

Layout: `<alloc dir>/.task_handles/<task>.json` (written by devcluster once the executor reported
the task's pid) and `<task>.exit.json` (written by the executor when the task ends). Stdlib only:
the launcher imports this to find every task of a state dir, re-attached ones included.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

HANDLE_DIR = ".task_handles"
EXECUTOR_SCRIPT = str(Path(__file__).with_name("executor.py"))


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rsplit(")", 1)[1].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None if gone or a zombie."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_same_process(pid: int, started: int) -> bool:
    return pid > 0 and start_time(pid) == started


def handle_paths(alloc_dir: Path, task: str) -> tuple[Path, Path]:
    """(handle file, exit-status file) of one task of an allocation."""
    d = alloc_dir / HANDLE_DIR
    return d / f"{task}.json", d / f"{task}.exit.json"


@dataclass(frozen=True)
class TaskHandle:
    """What it takes to find a running task again: its executor (group leader) and the task."""

    task: str
    executor_pid: int
    executor_start: int
    pid: int
    pid_start: int

    @property
    def pgid(self) -> int:
        return self.executor_pid  # the executor runs in a new session: pid == pgid

    def executor_alive(self) -> bool:
        return is_same_process(self.executor_pid, self.executor_start)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


def load_handle(path: Path) -> TaskHandle | None:
    try:
        data = json.loads(path.read_text())
        return TaskHandle(str(data["task"]), int(data["executor_pid"]), int(data["executor_start"]),
                          int(data["pid"]), int(data["pid_start"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_exit(path: Path) -> tuple[int, int] | None:
    """(exit code, signal) the executor recorded for the task's last run, None if none."""
    try:
        data = json.loads(path.read_text())
        return int(data["ExitCode"]), int(data["Signal"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def executors_of(state_dir: Path) -> dict[int, tuple[int, str]]:
    """Live executors started for allocations under `state_dir`: pid -> (start time, exit file).

    Found by their command line (`executor.py <fd> <state_dir>/allocs/<id>/.task_handles/...`),
    so even an executor whose handle was never written (devcluster died right after starting
    it) is found and can be stopped.
    """
    prefix = str(state_dir.resolve() / "allocs") + os.sep
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = _cmdline(pid)
        if EXECUTOR_SCRIPT not in argv:
            continue
        rest = argv[argv.index(EXECUTOR_SCRIPT) + 1:]
        if len(rest) >= 2 and rest[1].startswith(prefix):
            started = start_time(pid)
            if started is not None:
                out[pid] = (started, rest[1])
    return out


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def kill_group(pgid: int, leader_start: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a task's process group, unless its id now belongs to someone else's group.

    The group id is the executor's pid. While any old member lives, the kernel keeps that id
    reserved, so the group can only be someone else's if a process with pid == pgid leads a group
    of that id and started at another time than our executor. Returns True if signalled.
    """
    leader = proc_stat(pgid)
    if leader is not None and leader[0] not in ("Z", "X") and int(leader[2]) == pgid \
            and int(leader[19]) != leader_start:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        return True
    return False
