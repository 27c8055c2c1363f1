"""In-process devcluster for API tests: the real app and store over ASGI, no runtime, no sockets.

Shared by the API handler tests (test_api_*.py), so each exercises Nomad's shapes rather than its
own copy of the set-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from nomad_triton.devcluster.api import Ctx, build_app
from nomad_triton.devcluster.config import parse_config
from nomad_triton.devcluster.server import seed_store
from nomad_triton.devcluster.store import Store

Client = httpx.AsyncClient

# One service job with a scaling block: what most handler tests register.
HCL = """
job "web" {
  datacenters = ["dc1"]
  group "api" {
    count = 2
    scaling {
      min = 1
      max = 4
    }
    task "srv" {
      driver = "raw_exec"
      config {
        command = "sleep"
        args    = ["300"]
      }
    }
  }
}
"""


def run(test: Callable[[Client, Store], Awaitable[None]], cfg: dict[str, Any] | None = None) -> None:
    """Run `test(client, store)` against a fresh devcluster app built from `cfg`."""

    async def main() -> None:
        config = parse_config(cfg or {})
        store = Store()
        seed_store(store, config, "127.0.0.1:1")
        app = build_app(Ctx(store=store, config=config))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dc") as client:
            await test(client, store)

    asyncio.run(main())


async def parsed_job(c: Client) -> dict[str, Any]:
    """HCL parsed and canonicalized by the app itself (/v1/jobs/parse), ready to register."""
    r = await c.post("/v1/jobs/parse", json={"JobHCL": HCL, "Canonicalize": True})
    assert r.status_code == 200, r.text
    return r.json()
