"""devcluster's HTTP API: Starlette routes following Nomad's documented endpoints.

`build_app(ctx)` wires the route modules; ApiError becomes Nomad's plain-text error reply. The
app's lifespan runs the variable-lock expiry sweeper; the runtime is started by server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ApiError
from . import cluster, events, jobs, scale, scaling_policies, variables
from .common import Ctx

log = logging.getLogger("devcluster.api")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return PlainTextResponse(exc.message, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Routing errors in Nomad's words: a method a path does not take is 405 "Invalid method"
    (CodedError(405, ErrInvalidMethod) in command/agent/http.go); others keep Starlette's text."""
    assert isinstance(exc, HTTPException)
    text = "Invalid method" if exc.status_code == 405 else exc.detail
    return PlainTextResponse(text, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Nomad answers unexpected server-side failures with 500 and the error text."""
    log.exception("devcluster handler failed: %s %s", request.method, request.url.path)
    return PlainTextResponse(f"{type(exc).__name__}: {exc}", status_code=500)


# Answered by the local agent in Nomad, so `?region=` never forwards them anywhere.
_AGENT_LOCAL = ("/v1/agent/", "/v1/status/", "/v1/regions", "/v1/client/")


class RegionCheck:
    """`?region=` naming a region devcluster is not: Nomad's RPC forwarding finds no server there
    and answers 500 "No path to region" (structs.ErrNoRegionPath). Job writes map "global" to the
    agent's region first (job_endpoint.go regionForJob). Pure ASGI so streams pass untouched."""

    def __init__(self, app: ASGIApp, region: str) -> None:
        self.app, self.region = app, region

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            wanted = request.query_params.get("region", "")
            path = scope.get("path", "")
            job_write = request.method in ("PUT", "POST") and path.startswith("/v1/job")
            if wanted and wanted != self.region and not path.startswith(_AGENT_LOCAL) \
                    and not (job_write and wanted == "global"):
                await PlainTextResponse("No path to region", status_code=500)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(ctx: Ctx) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(variables.expire_locks_forever(ctx))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    routes = jobs.ROUTES + scale.ROUTES + scaling_policies.ROUTES + cluster.ROUTES + events.ROUTES + variables.ROUTES
    app = Starlette(routes=routes, exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error}, lifespan=lifespan)
    app.state.ctx = ctx
    scaling_policies.install(ctx)
    app.add_middleware(RegionCheck, region=ctx.config.server.region)
    return app


__all__ = ["Ctx", "build_app"]
