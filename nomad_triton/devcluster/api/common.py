"""Shared plumbing of the HTTP handlers: context, JSON bodies, tokens, namespaces, blocking queries.

Why one place: every Nomad endpoint shares the same conventions (X-Nomad-Token or Bearer auth,
`?namespace=`, `?index=&wait=` blocking with X-Nomad-Index/KnownLeader/LastContact headers,
plain-text error bodies). Getting them right once keeps the handlers short and uniform.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ..config import DevclusterConfig
from ..errors import ApiError
from ..store import Store
from .acl import Authorizer

DEFAULT_WAIT_S = 300.0  # Nomad: 5 minutes when ?wait is absent
MAX_WAIT_S = 600.0  # Nomad caps blocking queries at 10 minutes
JITTER_FRACTION = 16  # Nomad adds up to wait/16 of random stagger
SLICE_S = 1.0  # waits are sliced so a shutting-down server answers waiting clients within a second

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go duration string ("30s", "1m30s", "250ms", bare seconds) -> seconds; ValueError if bad."""
    text = text.strip()
    if not text:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Seconds -> Go-style duration text as Nomad prints it ("15s", "1m0s")."""
    if seconds < 60 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    mins, secs = divmod(seconds, 60)
    if mins < 60:
        return f"{int(mins)}m{secs:g}s"
    hours, mins = divmod(mins, 60)
    return f"{int(hours)}h{int(mins)}m{secs:g}s"


def now_ns() -> int:
    return time.time_ns()


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Ctx:
    """What every handler needs: the store, the runtime (may be None in API-only unit tests), config."""

    store: Store
    config: DevclusterConfig
    runtime: Any = None
    authorizer: Authorizer = field(init=False)
    extras: dict[str, Any] = field(default_factory=dict)
    # Set at shutdown so long-lived blocking queries and event streams end promptly.
    closing: bool = False

    def __post_init__(self) -> None:
        self.authorizer = Authorizer(self.config)

    # ---- auth ----------------------------------------------------------------------------
    def token(self, request: Request) -> dict[str, Any] | None:
        """Resolve X-Nomad-Token (or `Authorization: Bearer`) to an ACL token; None if absent/unknown."""
        secret = request.headers.get("x-nomad-token")
        if not secret:
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                secret = auth[7:].strip()
        if not secret:
            return None
        for tok in self.store.list("acl_tokens"):
            if tok.get("SecretID") == secret:
                return tok
        return None

    def require_ns(self, request: Request, namespace: str, *caps: str) -> None:
        self.authorizer.require_namespace(self.token(request), namespace, *caps)

    def require_coarse(self, request: Request, kind: str, level: str) -> None:
        self.authorizer.require_coarse(self.token(request), kind, level)

    # ---- namespaces ----------------------------------------------------------------------
    def namespace(self, request: Request, body_ns: str | None = None) -> str:
        ns = request.query_params.get("namespace") or body_ns or "default"
        return ns

    def require_known_namespace(self, ns: str) -> None:
        if ns not in self.config.all_namespaces():
            raise ApiError(400, f'namespace "{ns}" does not exist')

    # ---- evaluations ---------------------------------------------------------------------
    def create_eval(
        self,
        job: dict[str, Any],
        triggered_by: str,
        *,
        index: int | None = None,
        deployment_id: str = "",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write a pending Evaluation for the runtime's eval loop (Nomad's broker in miniature)."""
        ts = now_ns()
        ev: dict[str, Any] = {
            "ID": new_id(),
            "Namespace": job.get("Namespace", "default"),
            "Priority": job.get("Priority", 50),
            "Type": job.get("Type", "service"),
            "TriggeredBy": triggered_by,
            "JobID": job["ID"],
            "JobModifyIndex": job.get("JobModifyIndex", 0),
            "DeploymentID": deployment_id,
            "NodeID": "",
            "NodeModifyIndex": 0,
            "Status": "pending",
            "StatusDescription": "",
            "Wait": 0,
            "WaitUntil": "0001-01-01T00:00:00Z",  # Go zero time.Time, as Nomad sends it
            "NextEval": "",
            "PreviousEval": "",
            "BlockedEval": "",
            "FailedTGAllocs": None,
            "ClassEligibility": None,
            "QueuedAllocations": None,
            "SnapshotIndex": 0,
            "CreateIndex": 0,
            "ModifyIndex": 0,
            "CreateTime": ts,
            "ModifyTime": ts,
        }
        if extra:
            ev.update(extra)
        self.store.upsert(
            "evals",
            ev["ID"],
            ev,
            event_type="EvaluationUpdated",
            namespace=ev["Namespace"],
            payload_name="Evaluation",
            index=index,
            filter_keys=(job["ID"],) + ((deployment_id,) if deployment_id else ()),
        )
        notify = getattr(self.runtime, "notify_eval", None)
        if callable(notify):
            notify(ev)
        return ev


# ---- request / response helpers -------------------------------------------------------------
async def read_json(request: Request, *, required: bool = True) -> dict[str, Any]:
    """Decode a JSON object body; Nomad answers 400 with the decoder's message on bad input."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, "Request body is empty")
        return {}
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Failed to decode request body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Failed to decode request body: expected a JSON object")
    return data


def meta_headers(index: int) -> dict[str, str]:
    return {
        "X-Nomad-Index": str(max(1, index)),
        "X-Nomad-KnownLeader": "true",
        "X-Nomad-LastContact": "0",
    }


def reply(body: Any, index: int, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=meta_headers(index))


_GO_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_GO_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def go_parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool, which Nomad's handlers use on query flags; ValueError as Go's text."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def query_bool(request: Request, name: str, *, strict: bool = False, status: int = 500) -> bool:
    """A boolean query flag read the way Nomad's handlers read it.

    Nomad does `if s := q.Get(name); s != "" { strconv.ParseBool(s) }`: absent or bare `?purge`
    is false, "true"/"1"/"t"/"True" are true. `strict` endpoints (purge, global, diffs; logs'
    plain/follow) refuse other values with Nomad's error text (`status` 500 where Nomad returns an
    uncoded error, 400 where it codes it); the others (`all`, `resources`) ignore a bad value.
    """
    raw = request.query_params.get(name, "")
    if raw == "":
        return False
    try:
        return go_parse_bool(raw)
    except ValueError as exc:
        if not strict:
            return False
        raise ApiError(status, f'Failed to parse value of "{name}" ({raw}) as a bool: {exc}') from None


def write_namespace(request: Request, body: dict[str, Any], job: dict[str, Any] | None = None) -> str:
    """Namespace of a job write as Nomad's namespaceForJob picks it: `?namespace=` first, then the
    body's WriteRequest `Namespace`, then the job's own `Namespace`, else "default"."""
    return (request.query_params.get("namespace") or body.get("Namespace")
            or (job or {}).get("Namespace") or "default")


def blocking_params(request: Request) -> tuple[int, float]:
    """(min_index, wait seconds incl. jitter) from `?index=&wait=`; index 0 means do not block."""
    qp = request.query_params
    # http.go parseWait: time.ParseDuration (a unit is required except for "0") and
    # strconv.ParseUint, each failure a bare 400 "Invalid wait time" / "Invalid index".
    wait = DEFAULT_WAIT_S
    raw_wait = qp.get("wait", "")
    if raw_wait:
        if re.fullmatch(r"\d+(?:\.\d+)?", raw_wait) and raw_wait != "0":
            raise ApiError(400, "Invalid wait time")
        try:
            wait = parse_duration(raw_wait)
        except ValueError:
            raise ApiError(400, "Invalid wait time") from None
    raw_index = qp.get("index", "")
    if raw_index and not (raw_index.isascii() and raw_index.isdigit()):
        raise ApiError(400, "Invalid index")
    min_index = int(raw_index or 0)
    wait = min(wait, MAX_WAIT_S)
    wait += random.uniform(0, wait / JITTER_FRACTION)
    return min_index, wait


async def blocking_reply(
    ctx: Ctx,
    request: Request,
    tables: Iterable[str],
    produce: Callable[[], tuple[Any, int]],
) -> Response:
    """Serve a read as a Nomad blocking query.

    `produce()` returns (body, index); index is what Nomad reports for the query (a single
    object's ModifyIndex or the tables' index). With `?index=N`, wait until that index passes N
    (or the wait elapses) and return the fresh read either way, as Nomad does.
    """
    tables = tuple(tables)
    min_index, wait = blocking_params(request)

    def attempt() -> tuple[Any, int, ApiError | None]:
        # A 404 is a query result too: Nomad runs the blocking query (waiting for the object to
        # appear) and sets X-Nomad-Index/KnownLeader/LastContact before the handler answers 404.
        try:
            body, index = produce()
            return body, index, None
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None, ctx.store.max_index(tables), exc

    body, index, missing = attempt()
    if min_index > 0:
        deadline = time.monotonic() + wait
        while index <= min_index:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if ctx.closing:
                break
            await ctx.store.wait_for_change(tables, ctx.store.max_index(tables), min(remaining, SLICE_S))
            body, index, missing = attempt()
    if missing is not None:
        return PlainTextResponse(missing.message, status_code=404, headers=meta_headers(index))
    return reply(body, index)


def prefix_filter(items: Iterable[dict[str, Any]], request: Request, key: str = "ID") -> list[dict[str, Any]]:
    prefix = request.query_params.get("prefix", "")
    return [i for i in items if str(i.get(key, "")).startswith(prefix)]


def ns_filter(items: Iterable[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    return [i for i in items if ns == "*" or i.get("Namespace", "default") == ns]
