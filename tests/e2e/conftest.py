"""e2e fixtures: a real devcluster subprocess per test (free port, temp state dir, given config).

Started exactly as `nomad-triton dev up` starts it (nomad_triton.devcluster.launcher), driven by
python-nomad like a real user, and stopped at teardown with a check that nothing it started
(server or task process groups) is left running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nomad
import pytest

from nomad_triton.devcluster import launcher


@dataclass
class Devcluster:
    addr: str
    port: int
    token: str | None
    state_dir: Path
    pid: int
    groups_seen: set[int] = field(default_factory=set)

    def nomad(self, token: str | None = None, timeout: float = 10.0) -> nomad.Nomad:
        """python-nomad client, the independent client a real user would use (TLS flag irrelevant: http)."""
        return nomad.Nomad(host="127.0.0.1", port=self.port, token=token if token is not None else self.token,
                           timeout=timeout, verify=True)

    def http(self, token: str | None = None, timeout: float = 10.0) -> httpx.Client:
        """Raw client for what python-nomad lacks (scale, services, var locks, blocking headers)."""
        tok = token if token is not None else self.token
        headers = {"X-Nomad-Token": tok} if tok else {}
        return httpx.Client(base_url=self.addr, headers=headers, timeout=timeout)

    def token_file(self, name: str) -> str:
        return (self.state_dir / f"{name}.token").read_text().strip()

    def remember_groups(self) -> None:
        """Record the process groups devcluster has started so teardown can prove they are gone."""
        self.groups_seen |= launcher.descendant_groups(self.pid)


def wait_until(fn: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `fn` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


StartFn = Callable[..., Devcluster]


@pytest.fixture()
def devcluster_factory(tmp_path: Path) -> Iterator[StartFn]:
    """`start(config_toml: str | None = None) -> Devcluster`; every cluster is stopped and checked."""
    started: list[Devcluster] = []

    def start(config_toml: str | None = None, name: str = "dc") -> Devcluster:
        state = tmp_path / f"{name}-{len(started)}"
        state.mkdir()
        cfg_path = None
        if config_toml is not None:
            cfg_path = state / "devcluster.toml"
            cfg_path.write_text(config_toml)
        running = launcher.start(state / "state", config=cfg_path, port=0, timeout_s=30)
        dc = Devcluster(addr=running.addr, port=running.port, token=running.token(),
                        state_dir=Path(running.state_dir), pid=running.pid)
        started.append(dc)
        return dc

    yield start

    problems = []
    for dc in started:
        dc.remember_groups()
        result = launcher.stop(dc.state_dir, timeout_s=20)
        if result is None:
            problems.append(f"devcluster pid {dc.pid} had already exited before teardown")
            continue
        if not result["graceful"] or result["killed_groups"]:
            problems.append(f"devcluster did not stop its tasks by itself: {result}")
        left = launcher.live_groups(dc.groups_seen)
        if left:
            problems.append(f"process groups still alive after stop: {sorted(left)}")
    assert not problems, "; ".join(problems)


@pytest.fixture()
def devcluster(devcluster_factory: StartFn) -> Devcluster:
    """A default devcluster: one CPU node, ACLs off."""
    return devcluster_factory(None)
