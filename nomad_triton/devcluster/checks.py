"""Nomad native service checks (http, tcp), run for real against the allocation's ports.

Why real: allocation health and therefore deployments depend on them; a simulated check would
let a broken server deploy "successfully". Results use the shape of Nomad's
`/v1/client/allocation/:id/checks` (Status "success"/"failure"/"pending", Output, StatusCode).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

NS = 1_000_000_000


@dataclass
class CheckState:
    """Latest result of one check of one allocation."""

    id: str
    check: dict[str, Any]
    service: str
    group: str
    task: str
    port: int
    status: str = "pending"
    output: str = ""
    status_code: int = 0
    timestamp: int = 0
    on_change: Callable[[], None] | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Check": self.check.get("Name") or f"service: \"{self.service}\" check",
            "Group": self.group,
            "Mode": "healthiness",
            "Output": self.output,
            "Service": self.service,
            "Status": self.status,
            "StatusCode": self.status_code,
            "Task": self.task,
            "Timestamp": self.timestamp,
        }


async def run_once(state: CheckState, client: httpx.AsyncClient) -> None:
    """Run one check and record the result (never raises)."""
    timeout = max(0.05, float(state.check.get("Timeout") or 2 * NS) / NS)
    kind = (state.check.get("Type") or "http").lower()
    try:
        if kind == "tcp":
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", state.port), timeout)
            writer.close()
            state.status, state.output, state.status_code = "success", "nomad: tcp ok", 0
        else:
            path = state.check.get("Path") or "/"
            proto = state.check.get("Protocol") or "http"
            method = state.check.get("Method") or "GET"
            url = f"{proto}://127.0.0.1:{state.port}{path if path.startswith('/') else '/' + path}"
            resp = await client.request(method, url, timeout=timeout)
            state.status_code = resp.status_code
            ok = 200 <= resp.status_code < 300
            state.status = "success" if ok else "failure"
            state.output = "nomad: http ok" if ok else f"nomad: http status {resp.status_code}"
    except (OSError, TimeoutError, httpx.HTTPError) as exc:
        state.status, state.status_code = "failure", 0
        state.output = f"nomad: {type(exc).__name__}: {exc}"[:500]
    state.timestamp = int(time.time())


async def run_forever(state: CheckState, client: httpx.AsyncClient) -> None:
    """Check at the configured Interval until cancelled."""
    interval = max(0.05, float(state.check.get("Interval") or 10 * NS) / NS)
    while True:
        before = state.status
        await run_once(state, client)
        if state.status != before and state.on_change is not None:
            state.on_change()
        await asyncio.sleep(interval)
