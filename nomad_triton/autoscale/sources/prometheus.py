"""The Prometheus source: the same per-allocation observations, read with PromQL from a team's
Prometheus instead of scraping Triton ourselves (as Nomad Autoscaler's APM plugins do).

Who should exist comes from Nomad (the job's allocations, as the direct source lists them); what
they do comes from Prometheus. So an allocation Prometheus has no fresh series for is not "idle":
it is observed as reachable-without-metrics, which the policy counts as capacity still starting and
never as low load (missing or stale series never scale in). `up == 0` is an unreachable allocation.
A Prometheus that does not answer raises `SourceUnavailable`: the controller logs it, counts a
failed step, and the policy holds.

Each query must return at most one series per (alloc, model); see nomad_triton.observe.queries.
`check_queries` is the validation-time check the CLI runs before the loop starts (exit 2).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from string import Template
from typing import Any

import httpx

from nomad_triton.autoscale.sources import Target
from nomad_triton.observe.queries import OPTIONAL_SOURCE_QUERIES, SOURCE_QUERIES, UP_QUERY, UP_TS_QUERY
from nomad_triton.probe.discovery import AllocSource, job_endpoints
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState

Vector = list[dict[str, Any]]  # Prometheus instant-vector result: [{"metric": {...}, "value": [ts, "v"]}]


class QueryError(ValueError):
    """A query the policy cannot use: names the policy and the query (one line for the CLI)."""

    def __init__(self, policy: str, name: str, query: str, problem: str) -> None:
        super().__init__(f"policy {policy}: query {name} ({query}): {problem}")
        self.policy, self.name, self.query, self.problem = policy, name, query, problem


class SourceUnavailable(RuntimeError):
    """Prometheus did not answer: no data this round, the policy holds."""


@dataclass(frozen=True)
class PrometheusSettings:
    address: str
    queries: Mapping[str, str] = field(default_factory=dict)  # overrides of SOURCE_QUERIES by field name
    window_s: float = 30.0  # rate() range; needs at least two scrapes inside it
    max_age_s: float = 30.0  # a scrape older than this is stale: no data
    timeout_s: float = 5.0

    def merged(self) -> dict[str, str]:
        unknown = sorted(set(self.queries) - set(SOURCE_QUERIES))
        if unknown:
            raise ValueError(f"unknown query name(s) {', '.join(unknown)}; expected some of "
                             + ", ".join(SOURCE_QUERIES))
        return {**SOURCE_QUERIES, **self.queries}


def expand(query: str, target: Target, window_s: float) -> str:
    """Fill `$job`, `$group`, `$namespace`, `$window`; an unknown `$name` is a KeyError."""
    return Template(query).substitute(job=target.job, group=target.group,
                                      namespace=target.namespace or "default", window=f"{window_s:g}s")


def parse_check(policy: str, name: str, query: str) -> None:
    """Raise QueryError if the (expanded) query is not PromQL."""
    import promql_parser

    try:
        promql_parser.parse(query)
    except Exception as exc:  # noqa: BLE001 - the parser raises plain ValueError/RuntimeError kinds
        raise QueryError(policy, name, query, f"does not parse: {' '.join(str(exc).split())}") from None


def _per_series(policy: str, name: str, query: str, vector: Vector) -> dict[tuple[str, str], float]:
    """(alloc, model) -> value; many series for one key, or series without those labels, is an error."""
    out: dict[tuple[str, str], float] = {}
    for s in vector:
        labels = s.get("metric") or {}
        if "alloc" not in labels or "model" not in labels:
            raise QueryError(policy, name, query, "series lack the alloc and model labels "
                             f"(got {sorted(labels)}); aggregate with `sum by (alloc, model)`")
        key = (labels["alloc"], labels["model"])
        if key in out:
            raise QueryError(policy, name, query, f"many series for alloc {key[0]} model {key[1]}; one expected")
        out[key] = float(s["value"][1])
    return out


def observations_from_vectors(
    target: Target, alloc_ids: list[str], up: Vector, up_ts: Vector, fields: Mapping[str, dict[tuple[str, str], float]],
    now: float, max_age_s: float,
) -> list[Observation]:
    """Pure: the query answers for one round -> one Observation per allocation Nomad lists.

    `fields` is ModelRates field -> (alloc, model) -> value (already checked by _per_series).
    """
    up_by = {s["metric"].get("alloc"): float(s["value"][1]) for s in up if s.get("metric", {}).get("alloc")}
    ts_by = {s["metric"].get("alloc"): float(s["value"][1]) for s in up_ts if s.get("metric", {}).get("alloc")}
    out = []
    for alloc in sorted(alloc_ids):
        if alloc not in up_by or alloc not in ts_by or now - ts_by[alloc] > max_age_s:
            why = "no series in Prometheus" if alloc not in up_by else "stale series in Prometheus"
            out.append(Observation(ts=now, alloc_id=alloc, address="prometheus", state=ProbeState.REACHABLE,
                                   live=None, ready=False, error=why))
            continue
        if up_by[alloc] != 1.0:
            out.append(Observation(ts=now, alloc_id=alloc, address="prometheus", state=ProbeState.UNREACHABLE,
                                   error="Prometheus: up == 0"))
            continue
        models = sorted({m for per in fields.values() for (a, m) in per if a == alloc})
        rates: dict[str, ModelRates] = {}
        for m in models:
            vals = {f: per.get((alloc, m)) for f, per in fields.items()}
            vals = {f: (None if v is None or math.isnan(v) else v) for f, v in vals.items()}
            success, request_us = vals.get("success_per_s"), vals.get("request_us_per_s")
            avg = request_us / success if success and request_us is not None else None
            rates[m] = ModelRates(ready=True, avg_latency_us=avg, **vals)
        out.append(Observation(ts=now, alloc_id=alloc, address="prometheus", state=ProbeState.REACHABLE,
                               live=True, ready=bool(rates), models=rates, metrics_ok=bool(rates),
                               error=None if rates else "no model series in Prometheus"))
    return out


class PrometheusSource:
    """ObservationSource reading PromQL through Prometheus' HTTP API (`/api/v1/query`)."""

    def __init__(self, client: AllocSource, settings: PrometheusSettings, policy: str = "",
                 clock: Callable[[], float] = time.time, http: httpx.AsyncClient | None = None) -> None:
        self.client = client
        self.settings = settings
        self.policy = policy
        self.queries = settings.merged()
        self._clock = clock
        self._http = http or httpx.AsyncClient(base_url=settings.address.rstrip("/"), timeout=settings.timeout_s)
        self._ports: dict[str, dict[str, dict[str, str]]] = {}

    async def query(self, name: str, promql: str) -> Vector:
        try:
            r = await self._http.get("/api/v1/query", params={"query": promql})
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"policy {self.policy}: Prometheus at {self.settings.address} did not answer "
                                    f"query {name} ({promql}): {type(exc).__name__}: {exc}") from None
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code == 400:
            raise QueryError(self.policy, name, promql, f"rejected by Prometheus: {body.get('error', r.text[:200])}")
        if r.status_code != 200 or body.get("status") != "success":
            raise SourceUnavailable(f"policy {self.policy}: Prometheus at {self.settings.address} answered "
                                    f"HTTP {r.status_code} to query {name} ({promql})")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise QueryError(self.policy, name, promql, f"returns a {data.get('resultType')}, not an instant vector")
        return list(data.get("result") or [])

    async def observe(self, target: Target) -> list[Observation]:
        cache = self._ports.setdefault(target.key, {})
        endpoints = await asyncio.to_thread(job_endpoints, self.client, target.job, target.group,
                                            target.models, cache=cache)
        w = self.settings.window_s
        names = ["up", "up_ts", *self.queries]
        texts = [expand(UP_QUERY, target, w), expand(UP_TS_QUERY, target, w),
                 *(expand(q, target, w) for q in self.queries.values())]
        answers = await asyncio.gather(*(self.query(n, q) for n, q in zip(names, texts, strict=True)))
        now = self._clock()
        fields = {n: _per_series(self.policy, n, q, a) for n, q, a in zip(names[2:], texts[2:], answers[2:], strict=True)}
        return observations_from_vectors(target, [e.alloc_id for e in endpoints], answers[0], answers[1],
                                         fields, now, self.settings.max_age_s)

    async def check(self, target: Target) -> None:
        """Validation before the loop: every query parses, Prometheus answers, and each query returns
        one series per (alloc, model) for this job. Raises QueryError or SourceUnavailable."""
        w = self.settings.window_s
        for name, q in self.queries.items():
            try:
                text = expand(q, target, w)
            except (KeyError, ValueError) as exc:
                raise QueryError(self.policy, name, q, f"unknown placeholder {exc}; use $job, $group, "
                                 "$namespace, $window") from None
            parse_check(self.policy, name, text)
        for name, q in self.queries.items():
            text = expand(q, target, w)
            found = _per_series(self.policy, name, text, await self.query(name, text))
            if not found and name not in OPTIONAL_SOURCE_QUERIES:
                raise QueryError(self.policy, name, text, f"returns no series for job {target.job} group "
                                 f"{target.group} (is Prometheus scraping it?)")

    def forget(self, target: Target) -> None:
        self._ports.pop(target.key, None)

    async def aclose(self) -> None:
        await self._http.aclose()
