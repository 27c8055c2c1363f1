"""The agent's view of the cluster: every job and allocation, followed by two blocking queries.

Why: per target and interval, `autoscale run` asks Nomad for the group's scale status and its
allocations. For one group that is fine; for 100 groups on a 1 s interval it is 200 requests a
second, and on one core the synchronous client's cost per request is most of an evaluation. One
blocking query on `/v1/jobs` and one on `/v1/allocations?resources=true` (ports included, so no
per-allocation read) keep the same facts in memory, updated when Nomad changes them; an
evaluation then reads memory and probes. Nomad stays the authority where it matters: the scale
status is re-read whenever the job's ModifyIndex moves (a scale, a re-submit) and right before any
action (autoscale.core.GroupScaler), so no action is taken on a stale count.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nomad_triton.autoscale.core import log_event
from nomad_triton.probe.discovery import alloc_ports
from nomad_triton.probe.observations import Endpoint

RUNNING = ("pending", "running")


async def daemon_call(fn: Callable[[], Any]) -> Any:
    """Run a long blocking call (a blocking query waits up to its `wait`) in a daemon thread.

    Not the default executor: at exit Python joins executor threads, so a pending 30 s blocking
    query would hold a stopping agent for up to 30 s after SIGTERM.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not fut.done():
            fut.set_exception(error) if error is not None else fut.set_result(value)

    def work() -> None:
        try:
            value, error = fn(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            value, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    threading.Thread(target=work, name="nomad-blocking-query", daemon=True).start()
    return await fut


def group_endpoints(allocs: Iterable[Mapping[str, Any]], http_label: str = "http",
                    metrics_label: str = "metrics") -> dict[tuple[str, str], list[Endpoint]]:
    """(job, group) -> endpoints of the allocations Nomad wants running, as probe.discovery does."""
    out: dict[tuple[str, str], list[Endpoint]] = {}
    for a in allocs:
        if a.get("DesiredStatus") != "run" or a.get("ClientStatus") not in RUNNING:
            continue
        ports = alloc_ports(dict(a))
        if http_label not in ports:
            continue
        key = (str(a.get("JobID")), str(a.get("TaskGroup")))
        out.setdefault(key, []).append(Endpoint(alloc_id=str(a["ID"]), http=ports[http_label],
                                                metrics=ports.get(metrics_label)))
    for eps in out.values():
        eps.sort(key=lambda e: e.alloc_id)
    return out


class ClusterView:
    """Jobs (ModifyIndex, Stop) and running allocations of the client's namespace, kept current."""

    def __init__(self, client: Any, wait_s: float = 30.0) -> None:
        self.client = client
        self.wait_s = wait_s
        self.job_index: dict[str, int] = {}
        self.stopped: set[str] = set()
        self.groups: dict[tuple[str, str], list[Endpoint]] = {}
        self.synced = asyncio.Event()
        self._have = {"jobs": False, "allocations": False}
        self.errors = 0

    async def run(self) -> None:
        await asyncio.gather(self._follow("jobs", {}, self._on_jobs),
                             self._follow("allocations", {"resources": "true", "task_states": "false"},
                                          self._on_allocs))

    def endpoints(self, job: str, group: str, models: tuple[str, ...] = ()) -> list[Endpoint]:
        eps = self.groups.get((job, group), [])
        return [Endpoint(e.alloc_id, e.http, e.metrics, models) for e in eps] if models else list(eps)

    def _on_jobs(self, body: list[dict[str, Any]]) -> None:
        self.job_index = {str(j["ID"]): int(j.get("ModifyIndex") or 0) for j in body}
        self.stopped = {str(j["ID"]) for j in body if j.get("Stop")}

    def _on_allocs(self, body: list[dict[str, Any]]) -> None:
        self.groups = group_endpoints(body)

    async def _follow(self, path: str, params: dict[str, str], apply: Callable[[Any], None]) -> None:
        index, backoff = 0, 0.5
        while True:
            try:
                body, new = await daemon_call(functools.partial(
                    self.client.blocking_get, path, index=index, wait_s=self.wait_s, params=params))
                index = 0 if new < index else new  # an index going back means Nomad's state was reset
                apply(body or [])
                self._have[path] = True
                if all(self._have.values()):
                    self.synced.set()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the view must survive Nomad trouble
                self.errors += 1
                log_event("cluster_watch_failed", path=path, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
