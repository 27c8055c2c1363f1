"""Prometheus HTTP service discovery from Nomad's native service catalogue (`nomad-triton sd`).

Why: Prometheus has `nomad_sd_configs` only since 2.37, and distribution builds (Debian's among
them) leave it out. This endpoint answers Prometheus' `http_sd_configs` with the same targets and
the same `__meta_nomad_*` labels that `nomad_sd_configs` produces, so one set of relabelling rules
(nomad_triton.observe.prometheus_config) serves both discovery paths and cannot drift.

The catalogue is followed with blocking queries on `/v1/services` (one long poll, no busy polling):
when its index moves, each service's registrations are re-read. Prometheus' own refresh interval
is then the only delay between a scale-out and a new target. Readers get the last good snapshot;
while Nomad does not answer the snapshot stays (Prometheus keeps scraping what it knew) and
`/healthz` says why.

To serve it inside another app: build a `ServiceCatalogue`, start its `follow()` thread, and mount
`sd_app(catalogue)` in an ASGI app, or add `aiohttp_routes(catalogue)` to an aiohttp one (the
autoscale agent does, with `--sd`: Prometheus then uses `http://agent:port/sd/v1/targets`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

TAG_SEPARATOR = ","


class CatalogueClient(Protocol):
    """The slice of nomad_triton.nomad.client.NomadClient the catalogue uses."""

    def blocking_get(self, path: str, index: int = 0, wait_s: float = 30.0,
                     params: dict[str, Any] | None = None) -> tuple[Any, int]: ...


def target_labels(reg: dict[str, Any]) -> dict[str, str]:
    """The labels Prometheus' nomad_sd gives one registration (same names, same tag joining)."""
    labels = {
        "__meta_nomad_address": str(reg.get("Address") or ""),
        "__meta_nomad_dc": str(reg.get("Datacenter") or ""),
        "__meta_nomad_node_id": str(reg.get("NodeID") or ""),
        "__meta_nomad_namespace": str(reg.get("Namespace") or ""),
        "__meta_nomad_service_address": str(reg.get("Address") or ""),
        "__meta_nomad_service_id": str(reg.get("ID") or ""),
        "__meta_nomad_service_port": str(reg.get("Port") or ""),
        "__meta_nomad_service": str(reg.get("ServiceName") or ""),
    }
    tags = [str(t) for t in reg.get("Tags") or []]
    if tags:
        labels["__meta_nomad_tags"] = TAG_SEPARATOR + TAG_SEPARATOR.join(tags) + TAG_SEPARATOR
    return labels


def target_groups(registrations: list[dict[str, Any]], required_tags: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """http_sd's JSON: one group per registration, `host:port` target, meta labels; optionally only
    registrations carrying every tag in `required_tags`."""
    out = []
    for reg in sorted(registrations, key=lambda r: (r.get("ServiceName", ""), r.get("ID", ""))):
        tags = set(reg.get("Tags") or [])
        if any(t not in tags for t in required_tags):
            continue
        host = str(reg.get("Address") or "")
        addr = f"[{host}]:{reg.get('Port')}" if ":" in host else f"{host}:{reg.get('Port')}"
        out.append({"targets": [addr], "labels": target_labels(reg)})
    return out


@dataclass
class Snapshot:
    registrations: list[dict[str, Any]] = field(default_factory=list)
    index: int = 0
    updated_at: float | None = None  # time.time() of the last successful read
    error: str | None = None  # why the last read failed (None while healthy)


class ServiceCatalogue:
    """Follows `/v1/services` (+ `/v1/service/:name`) with blocking queries; thread-safe snapshot."""

    def __init__(self, client: CatalogueClient, namespace: str | None = None, wait_s: float = 30.0,
                 retry_s: float = 2.0) -> None:
        self.client = client
        self.namespace = namespace
        self.wait_s = wait_s
        self.retry_s = retry_s
        self._snap = Snapshot()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snap

    def refresh(self, index: int = 0) -> int:
        """One round: block on the service list until it moves past `index`, then re-read every
        service. Returns the new index; raises whatever the client raises (NomadError)."""
        params = {"namespace": self.namespace} if self.namespace else None
        listing, new_index = self.client.blocking_get("services", index=index, wait_s=self.wait_s, params=params)
        if index and new_index == index:
            return index  # the wait ended without a change
        regs: list[dict[str, Any]] = []
        for ns in listing or []:
            for svc in ns.get("Services") or []:
                p = {"namespace": ns.get("Namespace") or self.namespace or "default"}
                body, _ = self.client.blocking_get(f"service/{svc['ServiceName']}", params=p)
                regs.extend(body or [])
        with self._changed:
            self._snap = Snapshot(regs, new_index, time.time(), None)
            self._changed.notify_all()
        return new_index

    def follow(self) -> threading.Thread:
        """Start following in a daemon thread (returns it); `close()` stops it after the current wait."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="nomad-sd", daemon=True)
            self._thread.start()
        return self._thread

    def _loop(self) -> None:
        index = 0
        while not self._stop.is_set():
            try:
                index = self.refresh(index)
            except Exception as exc:  # noqa: BLE001 - keep following; the error is reported on /healthz
                with self._changed:
                    self._snap = Snapshot(self._snap.registrations, self._snap.index, self._snap.updated_at,
                                          str(exc) or type(exc).__name__)
                    self._changed.notify_all()
                index = 0
                self._stop.wait(self.retry_s)

    def wait_ready(self, timeout_s: float) -> Snapshot:
        """Block until the first read finished (ok or failed) or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._snap.updated_at is None and self._snap.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._snap

    def close(self) -> None:
        self._stop.set()


def targets_answer(catalogue: ServiceCatalogue, required_tags: tuple[str, ...]) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers) of `GET /v1/targets`, whichever web framework serves it."""
    snap = catalogue.snapshot()
    if snap.updated_at is None:
        # Prometheus keeps its previous targets on an error; an empty list would drop them.
        return 503, {"error": snap.error or "service catalogue not read yet"}, {}
    return 200, target_groups(snap.registrations, required_tags), {"X-Nomad-Index": str(snap.index)}


def health_answer(catalogue: ServiceCatalogue) -> tuple[int, str]:
    """(status, text) of `GET /healthz`: 503 while Nomad does not answer or before the first read."""
    snap = catalogue.snapshot()
    if snap.error:
        age = "never" if snap.updated_at is None else f"{time.time() - snap.updated_at:.0f}s ago"
        return 503, f"nomad not answering ({snap.error}); last good read {age}\n"
    if snap.updated_at is None:
        return 503, "starting\n"
    return 200, f"ok: {len(snap.registrations)} registrations at index {snap.index}\n"


def sd_app(catalogue: ServiceCatalogue) -> Starlette:
    """ASGI app: `GET /v1/targets[?tag=a&tag=b]` (http_sd JSON) and `GET /healthz`."""

    async def targets(request: Request) -> JSONResponse:
        status, body, headers = targets_answer(catalogue, tuple(request.query_params.getlist("tag")))
        return JSONResponse(body, status_code=status, headers=headers)

    async def healthz(request: Request) -> PlainTextResponse:
        status, text = health_answer(catalogue)
        return PlainTextResponse(text, status_code=status)

    return Starlette(routes=[Route("/v1/targets", targets), Route("/healthz", healthz)])


def aiohttp_routes(catalogue: ServiceCatalogue, prefix: str = "/sd") -> list[Any]:
    """The same endpoints as aiohttp routes under `prefix`, for the autoscale agent's HTTP server
    (Prometheus then uses `http://agent:port/sd/v1/targets`)."""
    from aiohttp import web

    async def targets(request: web.Request) -> web.Response:
        status, body, headers = targets_answer(catalogue, tuple(request.query.getall("tag", [])))
        return web.json_response(body, status=status, headers=headers)

    async def healthz(request: web.Request) -> web.Response:
        status, text = health_answer(catalogue)
        return web.Response(text=text, status=status)

    return [web.get(f"{prefix}/v1/targets", targets), web.get(f"{prefix}/healthz", healthz)]
