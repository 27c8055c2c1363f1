"""Start, find and stop a background devcluster (used by `nomad-triton dev`, e2e tests, benches).

Why here and not in the CLI: the e2e fixture and the benchmarks must start and stop devcluster
exactly as users do. Guarantees: devcluster runs in its own session/process group; startup waits
with a deadline for `/v1/status/leader`; stop sends SIGTERM (graceful: the runtime stops its
tasks), then kills every process group the cluster had started (found through /proc: its
descendants, and the executors of its state dir, which a restarted cluster re-attached to) after a
deadline, so no raw_exec task outlives `dev down`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from . import task_handles
from .server import MGMT_TOKEN_FILE, STATE_FILE

PID_FILE = "devcluster.pid"
LOG_FILE = "devcluster.log"


class LaunchError(Exception):
    """devcluster could not be started or stopped; the message is one line for the user."""


@dataclass
class Running:
    addr: str
    pid: int
    state_dir: str
    acl: bool
    token_file: str | None
    log_file: str

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])

    def token(self) -> str | None:
        if not self.token_file:
            return None
        return Path(self.token_file).read_text().strip()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, pgid) for every live process, from /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z":
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def descendant_groups(pid: int) -> set[int]:
    """Process groups of `pid` and all its descendants (raw_exec tasks run in their own groups)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(p)
    groups, stack = set(), [pid]
    while stack:
        p = stack.pop()
        if p in table:
            groups.add(table[p][1])
        stack.extend(children.get(p, []))
    return groups


def live_groups(groups: set[int]) -> set[int]:
    alive = {pgid for _, pgid in _proc_table().values()}
    return groups & alive


def _read_pid(state_dir: Path) -> int | None:
    try:
        return int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def find(state_dir: Path) -> Running | None:
    """The devcluster running from `state_dir`, or None."""
    pid = _read_pid(state_dir)
    if pid is None or not _alive(pid):
        return None
    try:
        info = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if info.get("pid") != pid:
        return None
    return Running(addr=info["addr"], pid=pid, state_dir=str(state_dir), acl=bool(info.get("acl")),
                   token_file=info.get("token_file"), log_file=str(state_dir / LOG_FILE))


def _leader_ok(addr: str) -> bool:
    try:
        return httpx.get(f"{addr}/v1/status/leader", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start(
    state_dir: Path,
    config: Path | None = None,
    port: int | None = None,
    timeout_s: float = 30.0,
    env: dict[str, str] | None = None,
) -> Running:
    """Start devcluster in the background and wait (bounded) until its API answers."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    if find(state_dir) is not None:
        raise LaunchError(f"devcluster already running from {state_dir} (use `nomad-triton dev down`)")
    for stale in (STATE_FILE, PID_FILE):
        (state_dir / stale).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "nomad_triton.devcluster", "--state-dir", str(state_dir)]
    if config is not None:
        cmd += ["--config", str(Path(config).resolve())]
    if port is not None:
        cmd += ["--port", str(port)]
    log_path = state_dir / LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})}, close_fds=True)
    (state_dir / PID_FILE).write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            (state_dir / PID_FILE).unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise LaunchError(f"devcluster exited with code {code}: {tail[0]}")
        running = find(state_dir)
        if running is not None and _leader_ok(running.addr):
            return running
        time.sleep(0.05)
    _stop_pid(proc.pid, 5.0)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    raise LaunchError(f"devcluster did not answer within {timeout_s:.0f}s (log: {log_path})")


def task_groups(state_dir: Path) -> set[int]:
    """Process groups of the raw_exec tasks of `state_dir` (led by their executors), including
    tasks a restarted devcluster re-attached to, which are not its descendants."""
    return set(task_handles.executors_of(state_dir))


def _stop_pid(pid: int, timeout_s: float, state_dir: Path | None = None) -> dict[str, object]:
    groups = descendant_groups(pid) | (task_groups(state_dir) if state_dir is not None else set())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
        groups |= descendant_groups(pid)
    graceful = not _alive(pid)
    # Whatever is still alive from the cluster's process groups is killed now (tasks included).
    leftover = live_groups(groups)
    for pgid in leftover:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_deadline = time.monotonic() + 5.0
    while (live_groups(groups) or _alive(pid)) and time.monotonic() < kill_deadline:
        time.sleep(0.05)
    return {"pid": pid, "graceful": graceful, "killed_groups": sorted(leftover),
            "remaining_groups": sorted(live_groups(groups))}


def stop_orphans(state_dir: Path, timeout_s: float = 5.0) -> list[int]:
    """Kill the task process groups of `state_dir` when no devcluster runs from it (it crashed
    and was not restarted); returns the groups killed. A running devcluster owns them instead."""
    state_dir = state_dir.resolve()
    if find(state_dir) is not None:
        return []
    found = task_handles.executors_of(state_dir)
    for pgid, (started, _) in found.items():
        task_handles.kill_group(pgid, started)
    deadline = time.monotonic() + timeout_s
    while live_groups(set(found)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(found)


def stop(state_dir: Path, timeout_s: float = 20.0) -> dict[str, object] | None:
    """Stop the devcluster of `state_dir`; None if none was running."""
    state_dir = state_dir.resolve()
    pid = _read_pid(state_dir)
    if pid is None or not _alive(pid):
        (state_dir / PID_FILE).unlink(missing_ok=True)
        return None
    result = _stop_pid(pid, timeout_s, state_dir)
    for name in (PID_FILE, STATE_FILE):
        (state_dir / name).unlink(missing_ok=True)
    return result


__all__ = ["LaunchError", "MGMT_TOKEN_FILE", "Running", "descendant_groups", "find", "live_groups", "start",
           "stop", "stop_orphans", "task_groups"]
