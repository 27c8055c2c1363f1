"""NomadClient: the one facade over python-nomad that every part of nomad-triton talks to Nomad through.

Why a facade: python-nomad is thin (verify=False by default, ignores NOMAD_CACERT, 5 s timeouts,
no retries, raw exception types, no headers). This class fixes those defaults once — TLS verified,
timeouts on everything, bounded retries then a clear "Nomad unreachable at <addr>", errors mapped
to nomad_triton.nomad.errors with the token redacted — and fills python-nomad's gaps (scale,
services, node pools, variable locks, blocking queries, a deadline-bound event stream) through
python-nomad's own Requester (see transport.py). It also counts the requests it sends, which is
how the "at most 1 request/s while waiting" budget is measured.

Stable API (other modules depend on it): from_env, parse_hcl, validate_job, plan, register, job,
job_allocations, job_evaluations, allocation, deployment, latest_deployment, promote,
fail_deployment, scale, scale_status, revert, versions, deregister, service, nodes, node,
node_allocations, alloc_logs, var_lock_acquire/renew/release, events, blocking_get, request_count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nomad
import requests
from nomad.api import exceptions as nexc

from nomad_triton.nomad import errors
from nomad_triton.nomad.settings import ConnectionSettings
from nomad_triton.nomad.transport import POOL_CONNECTIONS, CountingSession, RawRequester, ServerNameAdapter

T = TypeVar("T")
MAX_BLOCKING_WAIT_S = 600.0  # Nomad caps wait at 10 minutes


@dataclass
class PlanResult:
    """What `POST /v1/job/:id/plan` tells us, with the raw reply kept for rendering the diff."""

    job_modify_index: int
    diff: dict[str, Any] | None
    desired_updates: dict[str, dict[str, int]]
    failed_tg_allocs: dict[str, Any]
    warnings: str
    raw: dict[str, Any] = field(repr=False)

    @property
    def has_changes(self) -> bool:
        diff_type = (self.diff or {}).get("Type", "None")
        return diff_type not in ("None", "", None)


@dataclass
class RegisterResult:
    eval_id: str
    job_modify_index: int
    warnings: str
    eval_create_index: int  # where an event stream must start so that nothing of this eval is missed
    raw: dict[str, Any] = field(repr=False)


def _seconds(value: float) -> str:
    return f"{max(0, int(value * 1000))}ms"


class NomadClient:
    """Facade over `nomad.Nomad`. Construct with `NomadClient.from_env(**flag_overrides)`."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self._session = CountingSession()
        if settings.tls_server_name:
            self._session.mount("https://", ServerNameAdapter(settings.tls_server_name, pool_maxsize=POOL_CONNECTIONS))
        timeout = (settings.connect_timeout, settings.read_timeout)
        self.api = nomad.Nomad(
            address=settings.address,
            token=settings.token,
            namespace=settings.namespace,
            region=settings.region,
            timeout=timeout,  # type: ignore[arg-type]  # requests accepts (connect, read)
            verify=settings.verify(),  # type: ignore[arg-type]  # bool or CA path, as requests takes
            cert=settings.cert(),
            session=self._session,
        )
        self._raw = RawRequester(**self.api.requester_settings)

    @classmethod
    def from_env(cls, **overrides: object) -> NomadClient:
        """Settings from NOMAD_* environment variables, overridden by non-None keyword arguments."""
        return cls(ConnectionSettings.from_env(**overrides))

    def __repr__(self) -> str:
        return f"NomadClient({self.settings!r})"

    @property
    def address(self) -> str:
        return self.settings.address

    @property
    def request_count(self) -> int:
        """HTTP requests sent so far by this client (including retries)."""
        return self._session.request_count

    # ----------------------------------------------------------------- plumbing

    def _guard(self, what: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run one python-nomad call: retry connection errors with backoff, map every failure."""
        attempts = 1 + (self.settings.retries if retry else 0)
        delay = self.settings.backoff_s
        last: BaseException | None = None
        for attempt in range(attempts):
            try:
                return fn()
            except (nexc.BaseNomadException, requests.RequestException) as exc:
                cause = getattr(exc, "nomad_resp", exc)
                if isinstance(cause, requests.Response):
                    raise errors.from_response(
                        cause.status_code, cause.text, what=what, token=self.settings.token
                    ) from None
                if isinstance(cause, requests.exceptions.SSLError):
                    raise errors.Unreachable(
                        f"TLS error talking to Nomad at {self.address}: "
                        f"{errors.redact(str(cause), self.settings.token)}"
                    ) from None
                if isinstance(cause, requests.ConnectionError | nexc.TimeoutNomadException):
                    last = cause
                    if attempt + 1 < attempts:
                        time.sleep(delay)
                        delay *= 2
                    continue
                if isinstance(cause, requests.Timeout):
                    raise errors.NomadError(
                        f"{what}: Nomad at {self.address} did not answer in time"
                    ) from None
                raise errors.NomadError(f"{what}: {errors.redact(str(cause), self.settings.token)}") from None
        reason = type(last).__name__ if last else "no reply"
        raise errors.Unreachable(
            f"Nomad unreachable at {self.address} ({reason} after {attempts} attempts)"
        ) from None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: tuple[float, float] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> requests.Response:
        """Raw request for endpoints python-nomad lacks; `path` is relative to /v1 ("job/x/scale")."""
        kwargs: dict[str, Any] = {"method": method, "params": dict(params or {})}
        if body is not None:
            kwargs["json"] = body
        if timeout is not None:
            kwargs["timeout"] = timeout
        if stream:
            kwargs["stream"] = True
        if self.settings.namespace and "namespace" not in kwargs["params"]:
            kwargs["params"]["namespace"] = self.settings.namespace
        return self._guard(
            f"{method.upper()} /v1/{path}", lambda: self._raw.request(path, **kwargs), retry=retry
        )

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        return resp.json() if resp.content else None

    # ----------------------------------------------------------------- jobs

    def parse_hcl(self, hcl: str, variables: str = "") -> dict[str, Any]:
        """Parse HCL2 on the server (never locally: the server knows every attribute of its version)."""
        body = {"JobHCL": hcl, "Canonicalize": True, "Variables": variables}
        return self._json("post", "jobs/parse", body=body)

    def validate_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """`PUT /v1/validate/job`: returns {ValidationErrors, Error, Warnings, DriverConfigValidated}."""
        return self._guard(
            "POST /v1/validate/job", lambda: self.api.validate.validate_job({"Job": job}).json()
        )

    def plan(self, job: dict[str, Any], diff: bool = True) -> PlanResult:
        raw = self._guard(
            f"POST /v1/job/{job['ID']}/plan",
            lambda: self.api.job.plan_job(job["ID"], {"Job": job}, diff=diff),
        )
        return PlanResult(
            job_modify_index=int(raw.get("JobModifyIndex") or 0),
            diff=raw.get("Diff"),
            desired_updates=((raw.get("Annotations") or {}).get("DesiredTGUpdates") or {}),
            failed_tg_allocs=raw.get("FailedTGAllocs") or {},
            warnings=raw.get("Warnings") or "",
            raw=raw,
        )

    def register(
        self,
        job: dict[str, Any],
        *,
        enforce_index: bool = False,
        job_modify_index: int = 0,
        preserve_counts: bool = True,
    ) -> RegisterResult:
        """Register; with enforce_index a concurrent change makes Nomad refuse (errors.Conflict)."""
        body: dict[str, Any] = {"Job": job, "PreserveCounts": preserve_counts}
        if enforce_index:
            body["EnforceIndex"] = True
            body["JobModifyIndex"] = job_modify_index
        raw = self._guard(
            f"POST /v1/job/{job['ID']}", lambda: self.api.job.register_job(job["ID"], body), retry=False
        )
        return RegisterResult(
            eval_id=raw.get("EvalID", ""),
            job_modify_index=int(raw.get("JobModifyIndex") or 0),
            warnings=raw.get("Warnings") or "",
            eval_create_index=int(raw.get("EvalCreateIndex") or raw.get("Index") or 0),
            raw=raw,
        )

    def job(self, job_id: str) -> dict[str, Any]:
        return self._guard(f"GET /v1/job/{job_id}", lambda: self.api.job.get_job(job_id))

    def job_allocations(self, job_id: str, all_versions: bool = False) -> list[dict[str, Any]]:
        params = {"all": "true"} if all_versions else {}
        return self._json("get", f"job/{job_id}/allocations", params=params)

    def job_evaluations(self, job_id: str) -> list[dict[str, Any]]:
        return self._guard(f"GET /v1/job/{job_id}/evaluations", lambda: self.api.job.get_evaluations(job_id))

    def evaluation(self, eval_id: str) -> dict[str, Any]:
        return self._guard(
            f"GET /v1/evaluation/{eval_id}", lambda: self.api.evaluation.get_evaluation(eval_id)
        )

    def versions(self, job_id: str) -> list[dict[str, Any]]:
        raw = self._guard(f"GET /v1/job/{job_id}/versions", lambda: self.api.job.get_versions(job_id))
        return list(raw.get("Versions") or [])

    def revert(self, job_id: str, version: int, enforce_prior_version: int | None = None) -> dict[str, Any]:
        return self._guard(
            f"POST /v1/job/{job_id}/revert",
            lambda: self.api.job.revert_job(job_id, version, enforce_prior_version),
            retry=False,
        )

    def deregister(self, job_id: str, purge: bool = False) -> dict[str, Any]:
        params = {"purge": "true"} if purge else {}
        return self._json("delete", f"job/{job_id}", params=params)

    # ----------------------------------------------------------------- scaling

    def scale(
        self,
        job_id: str,
        group: str,
        count: int | None,
        message: str,
        meta: dict[str, Any] | None = None,
        error: bool = False,
        policy_override: bool = False,
    ) -> dict[str, Any]:
        """`POST /v1/job/:id/scale`. count=None records a scaling event without changing the count."""
        body: dict[str, Any] = {
            "Target": {"Group": group},
            "Message": message,
            "Error": error,
            "Meta": meta or {},
            "PolicyOverride": policy_override,
        }
        if count is not None:
            body["Count"] = count
        return self._json("post", f"job/{job_id}/scale", body=body, retry=False)

    def scale_status(self, job_id: str) -> dict[str, Any]:
        return self._json("get", f"job/{job_id}/scale")

    # ----------------------------------------------------------------- deployments

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._guard(
            f"GET /v1/deployment/{deployment_id}", lambda: self.api.deployment.get_deployment(deployment_id)
        )

    def latest_deployment(self, job_id: str) -> dict[str, Any] | None:
        return self._json("get", f"job/{job_id}/deployment")

    def promote(self, deployment_id: str, groups: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"DeploymentID": deployment_id}
        if groups:
            body["Groups"] = groups
        else:
            body["All"] = True
        return self._json("post", f"deployment/promote/{deployment_id}", body=body, retry=False)

    def fail_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self._guard(
            f"POST /v1/deployment/fail/{deployment_id}",
            lambda: self.api.deployment.fail_deployment(deployment_id),
            retry=False,
        )

    # ----------------------------------------------------------------- allocations, nodes, services

    def allocation(self, alloc_id: str) -> dict[str, Any]:
        return self._guard(
            f"GET /v1/allocation/{alloc_id}", lambda: self.api.allocation.get_allocation(alloc_id)
        )

    def alloc_logs(self, alloc_id: str, task: str, stream: str = "stderr", lines: int = 20) -> list[str]:
        """The last `lines` lines of a task's stdout/stderr (plain, from the end, not following)."""
        params = {"task": task, "type": stream, "origin": "end", "offset": 16384, "plain": "true"}
        try:
            text = self.request("get", f"client/fs/logs/{alloc_id}", params=params).text
        except errors.BadRequest:
            # The offset reaches before the start of a short log: read it from the beginning instead.
            params.update(origin="start", offset=0)
            text = self.request("get", f"client/fs/logs/{alloc_id}", params=params).text
        return text.splitlines()[-lines:] if lines > 0 else []

    def nodes(self, pool: str | None = None) -> list[dict[str, Any]]:
        """Node stubs (with resources), optionally only those in one node pool."""
        stubs = self._json("get", "nodes", params={"resources": "true"}) or []
        if pool:
            stubs = [n for n in stubs if n.get("NodePool", "default") == pool]
        return stubs

    def node(self, node_id: str) -> dict[str, Any]:
        return self._guard(f"GET /v1/node/{node_id}", lambda: self.api.node.get_node(node_id))

    def node_allocations(self, node_id: str) -> list[dict[str, Any]]:
        return self._guard(
            f"GET /v1/node/{node_id}/allocations", lambda: self.api.node.get_allocations(node_id)
        )

    def node_pools(self) -> list[dict[str, Any]]:
        return self._json("get", "node/pools") or []

    def service(self, name: str) -> list[dict[str, Any]]:
        """Native service discovery: the registrations of one service (address, port, alloc, tags)."""
        return self._json("get", f"service/{name}") or []

    # ----------------------------------------------------------------- variable locks

    def var_lock_acquire(self, path: str, ttl_s: float, lock_delay_s: float = 0.0) -> dict[str, Any]:
        """Acquire (or create) a lock on a variable; errors.Conflict while someone else holds it."""
        body = {"Path": path, "Lock": {"TTL": _seconds(ttl_s), "LockDelay": _seconds(lock_delay_s)}}
        if self.settings.namespace:
            body["Namespace"] = self.settings.namespace
        return self._json("put", f"var/{path}", params={"lock-acquire": ""}, body=body, retry=False)

    def var_lock_renew(self, path: str, lock_id: str) -> dict[str, Any]:
        return self._json(
            "put", f"var/{path}", params={"lock-renew": ""}, body={"Path": path, "Lock": {"ID": lock_id}}
        )

    def var_lock_release(self, path: str, lock_id: str) -> dict[str, Any]:
        return self._json(
            "put", f"var/{path}", params={"lock-release": ""}, body={"Path": path, "Lock": {"ID": lock_id}}
        )

    # ----------------------------------------------------------------- waiting

    def blocking_get(
        self, path: str, index: int = 0, wait_s: float = 30.0, params: dict[str, Any] | None = None
    ) -> tuple[Any, int]:
        """A blocking query: returns (body, X-Nomad-Index). A return does not guarantee a change.

        The read timeout is set above wait + Nomad's wait/16 jitter so the client never gives up first.
        """
        wait_s = min(max(wait_s, 0.001), MAX_BLOCKING_WAIT_S)
        query = dict(params or {})
        if index:
            query.update(index=str(index), wait=_seconds(wait_s))
        timeout = (self.settings.connect_timeout, wait_s + wait_s / 16 + self.settings.read_timeout)
        resp = self.request("get", path, params=query, timeout=timeout)
        new_index = int(resp.headers.get("X-Nomad-Index") or 0)
        return (resp.json() if resp.content else None), new_index

    def events(
        self, topics: list[str], index: int = 0, deadline: float | None = None, heartbeat_s: float = 10.0
    ) -> Iterator[dict[str, Any]]:
        """Follow `/v1/event/stream` until `deadline` (time.monotonic()), yielding each NDJSON frame.

        Heartbeat frames (`{}`) are yielded too, so a caller can check its own conditions at least
        every heartbeat. Returns at the deadline; raises errors.StreamDropped if the connection ends
        or goes silent for longer than two heartbeats, so the caller can resume from the last Index
        or fall back to blocking queries. Near the deadline the stream is reopened (resuming after
        the last index seen) with a read timeout that cannot outlast the deadline.
        """
        resume = index
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            silent_limit = 2 * heartbeat_s + 1
            read_timeout = silent_limit if remaining is None else max(0.05, min(silent_limit, remaining))
            # How late a silent spell may end the wait before the stream is reopened with a
            # shorter read timeout. A fixed 50 ms reopened the stream on every frame that came
            # later than that in the last 21 s of a wait (one request per frame, not per wait).
            overshoot_tolerance = max(0.05, 0.1 * read_timeout)
            params: dict[str, Any] = {"topic": list(topics)}
            if resume:
                params["index"] = str(resume)
            resp = self.request(
                "get",
                "event/stream",
                params=params,
                stream=True,
                timeout=(self.settings.connect_timeout, read_timeout),
            )
            reopen = False
            try:
                for line in resp.iter_lines():
                    if not line:
                        continue
                    frame = json.loads(line)
                    if frame.get("Index"):
                        resume = max(resume, int(frame["Index"]) + 1)
                    yield frame
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    if left is not None and read_timeout > left + overshoot_tolerance:
                        reopen = True  # a silent spell could now overshoot the deadline
                        break
            except (requests.RequestException, ValueError) as exc:
                if deadline is not None and time.monotonic() >= deadline - 0.01:
                    return
                raise errors.StreamDropped(
                    f"event stream from {self.address} dropped ({type(exc).__name__})"
                ) from None
            finally:
                resp.close()
            if not reopen:
                if deadline is not None and time.monotonic() >= deadline - 0.01:
                    return
                raise errors.StreamDropped(f"event stream from {self.address} ended")
