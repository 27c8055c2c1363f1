"""Verify canary allocations with a real inference request before promoting them.

Why: Nomad's health checks only prove Triton answers /ready; a canary that loads but computes
garbage or rejects inputs would still be promoted. `deploy --auto-promote` therefore sends one
inference request (tritonclient) to each canary's http port, built from the first model's own
input metadata; where no sample input can be built (unknown datatype) it falls back to readiness
plus metadata, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nomad_triton.nomad.client import NomadClient

# Triton datatype -> numpy dtype for building a zero-filled sample input.
NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


@dataclass
class CanaryCheck:
    alloc_id: str
    url: str
    ok: bool
    detail: str


def alloc_http_address(alloc: dict[str, Any], label: str = "http") -> str | None:
    """host:port of an allocation's port `label` (AllocatedResources first, legacy Resources second)."""
    shared = (alloc.get("AllocatedResources") or {}).get("Shared") or {}
    for port in shared.get("Ports") or []:
        if port.get("Label") == label and port.get("Value"):
            return f"{port.get('HostIP') or '127.0.0.1'}:{port['Value']}"
    for net in shared.get("Networks") or (alloc.get("Resources") or {}).get("Networks") or []:
        for port in (net.get("DynamicPorts") or []) + (net.get("ReservedPorts") or []):
            if port.get("Label") == label and port.get("Value"):
                return f"{net.get('IP') or '127.0.0.1'}:{port['Value']}"
    return None


def sample_inputs(metadata: dict[str, Any]) -> list[tuple[str, str, np.ndarray]] | None:
    """Zero-filled inputs (name, datatype, array) from model metadata; None if one cannot be built."""
    out = []
    for inp in metadata.get("inputs") or []:
        dtype = NUMPY_TYPES.get(inp.get("datatype", ""))
        if dtype is None:
            return None
        shape = [1 if int(d) < 0 else int(d) for d in inp.get("shape") or []]
        if dtype is np.object_:
            arr = np.full(shape, b"", dtype=np.object_)
        else:
            arr = np.zeros(shape, dtype=dtype)
        out.append((inp["name"], inp["datatype"], arr))
    return out or None


def verify_endpoint(url: str, model: str, timeout_s: float = 10.0) -> tuple[bool, str]:
    """One readiness + metadata + inference round trip against a Triton HTTP endpoint."""
    import tritonclient.http as httpclient  # imported late: heavy, only needed for promotion
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(
        url=url, connection_timeout=timeout_s, network_timeout=timeout_s
    )
    try:
        if not client.is_model_ready(model):
            return False, f"model {model!r} is not ready"
        metadata = client.get_model_metadata(model)
        inputs = sample_inputs(metadata)
        if inputs is None:
            return True, f"model {model!r} ready; metadata read (no sample input could be built)"
        infer_inputs = []
        for name, datatype, arr in inputs:
            ii = httpclient.InferInput(name, list(arr.shape), datatype)
            ii.set_data_from_numpy(arr)
            infer_inputs.append(ii)
        result = client.infer(model, infer_inputs)
        outputs = [o["name"] for o in (result.get_response().get("outputs") or [])]
        return True, f"inference on {model!r} returned {', '.join(outputs) or 'no outputs'}"
    except InferenceServerException as exc:
        return False, f"{model!r}: {exc.message() or exc}"
    except Exception as exc:  # connection refused/reset/timeouts surface as several library types
        return False, f"{model!r}: {type(exc).__name__}: {exc}"
    finally:
        client.close()


def verify_canaries(client: NomadClient, alloc_ids: list[str], model: str) -> list[CanaryCheck]:
    checks = []
    for alloc_id in alloc_ids:
        alloc = client.allocation(alloc_id)
        url = alloc_http_address(alloc)
        if url is None:
            checks.append(CanaryCheck(alloc_id, "", False, "allocation has no port labelled http"))
            continue
        ok, detail = verify_endpoint(url, model)
        checks.append(CanaryCheck(alloc_id, url, ok, detail))
    return checks
