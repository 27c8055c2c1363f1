"""A devcluster that the test can kill -9 and start again on the same state dir.

Why not the shared `devcluster` fixture: that one owns one process for the test's life. Here the
process dies on purpose; the test restarts it from the same state dir exactly as `dev up` does
(launcher.start) and at the end proves that no task process of any of its lives is left.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nomad_triton.devcluster import launcher, task_handles
from tests.e2e.conftest import wait_until


@dataclass
class Crashable:
    state_dir: Path
    config: Path | None = None
    port: int = 0  # fixed: clients keep their address across restarts, as with a real agent
    running: launcher.Running | None = None
    groups_seen: set[int] = field(default_factory=set)
    lives: int = 0

    def start(self) -> launcher.Running:
        self.running = launcher.start(self.state_dir, config=self.config, port=self.port, timeout_s=60)
        self.lives += 1
        return self.running

    @property
    def addr(self) -> str:
        assert self.running is not None
        return self.running.addr

    def token(self) -> str | None:
        assert self.running is not None
        return self.running.token()

    def http(self, timeout: float = 15.0) -> httpx.Client:
        tok = self.token()
        return httpx.Client(base_url=self.addr, headers={"X-Nomad-Token": tok} if tok else {}, timeout=timeout)

    def remember(self) -> None:
        assert self.running is not None
        self.groups_seen |= launcher.descendant_groups(self.running.pid) | launcher.task_groups(self.state_dir)

    def kill9(self) -> None:
        """Power-cut the devcluster process only (its tasks live in their own sessions)."""
        assert self.running is not None
        self.remember()
        pid = self.running.pid
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 10, f"devcluster pid {pid} to die")
        self.running = None

    def close(self) -> list[str]:
        """Stop (gracefully), then list problems: not graceful, or any process group still alive."""
        problems = []
        if self.running is not None:
            self.remember()
            result = launcher.stop(self.state_dir, timeout_s=30)
            if result is None:
                problems.append("devcluster had exited before teardown")
            elif not result["graceful"] or result["killed_groups"]:
                problems.append(f"devcluster did not stop its tasks by itself: {result}")
        else:
            launcher.stop_orphans(self.state_dir)
        deadline = time.monotonic() + 10
        while launcher.live_groups(self.groups_seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = launcher.live_groups(self.groups_seen)
        if left:
            problems.append(f"process groups still alive after stop: {sorted(left)}")
            for pgid in left:  # do not leak into other tests even when failing
                os.killpg(pgid, signal.SIGKILL)
        return problems


def _alive(pid: int) -> bool:
    fields = task_handles.proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def task_handle(dc: Crashable, alloc_id: str, task: str) -> task_handles.TaskHandle | None:
    return task_handles.load_handle(task_handles.handle_paths(dc.state_dir / "allocs" / alloc_id, task)[0])


def running_allocs(c: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return [a for a in c.get(f"/v1/job/{job_id}/allocations").json()
            if a["ClientStatus"] == "running" and a["DesiredStatus"] == "run"]


def latest_deployment(c: httpx.Client, job_id: str) -> dict[str, Any] | None:
    r = c.get(f"/v1/job/{job_id}/deployment")
    return r.json() if r.status_code == 200 else None
