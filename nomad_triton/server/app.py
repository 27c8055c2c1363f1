"""Bind prepared models into a PyTriton `Triton` configured for throughput and strict readiness.

PyTriton runs tritonserver as a child process and executes our callables in this process; this
module only translates the model description (from model.toml or config.pbtxt) into PyTriton's
ModelConfig/TritonConfig, and binds every served version (versioned_store.py says how).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy, TritonSecurityConfig

from nomad_triton.server.backends import InferFn, PreparedModel, check_outputs
from nomad_triton.server.drain import InFlight
from nomad_triton.server.model_repo import LoadedModel, TensorSpec
from nomad_triton.server.settings import TRITON_EXIT_TIMEOUT_S, ServerSettings
from nomad_triton.server.versioned_store import SEPARATOR, private_name, rewrite

STARTUP_TIMEOUT_S = 120.0

LOG = logging.getLogger("nomad_triton.server")


def _tensors(specs: list[TensorSpec]) -> list[Tensor]:
    return [Tensor(name=t.name, dtype=t.numpy_dtype, shape=tuple(t.shape), optional=t.optional) for t in specs]


def model_config(model: LoadedModel) -> ModelConfig:
    """Dynamic batching only where model.toml asks for it; max_batch_size 0 means no batch dimension."""
    spec = model.spec
    if spec.max_batch_size == 0:
        return ModelConfig(batching=False)
    dyn = spec.dynamic_batching
    batcher = DynamicBatcher(
        max_queue_delay_microseconds=dyn.max_queue_delay_us if dyn else 0,
        preferred_batch_size=(dyn.preferred_batch_sizes or None) if dyn else None,
    )
    return ModelConfig(batching=True, max_batch_size=spec.max_batch_size, batcher=batcher)


def _bindable(model: LoadedModel, fn: InferFn, inflight: InFlight) -> Callable[..., Any]:
    """Adapt `fn(dict) -> dict` to PyTriton: @batch merges queued requests into one call and splits back."""

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        with inflight:  # the drain waits for this to reach zero
            return check_outputs(model, fn(inputs))

    return infer


def _bindable_requests(fn: Callable[..., Any], inflight: InFlight) -> Callable[..., Any]:
    """A Triton python-backend model takes PyTriton's list of requests as is (its execute() does the loop)."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        with inflight:
            return fn(requests)

    return infer


class RepositoryTriton(Triton):
    """PyTriton's Triton, waiting for the versions we serve rather than for PyTriton's private names.

    PyTriton waits for server readiness (never true while a broken model is listed, by strict
    readiness) and then for each bound (private) name; we wait for liveness and each served
    (name, version) instead, with the same deadline, and give the bound models their public names
    back once connected so PyTriton's own cleanup unloads the right models.
    """

    served: dict[str, list[int]] = {}

    def _wait_for_server(self) -> None:
        from pytriton.client.utils import create_client_from_url

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        with contextlib.closing(create_client_from_url(self._url)) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    if client.is_server_live() and all(
                        client.is_model_ready(name, str(v)) for name, vs in self.served.items() for v in vs
                    ):
                        return
                time.sleep(0.2)
        raise TimeoutError(f"models not ready after {STARTUP_TIMEOUT_S:.0f} s")

    def _wait_for_models(self) -> None:
        for model in self._model_manager.models:
            model.model_name = model.model_name.split(SEPARATOR)[0]


def triton_config(settings: ServerSettings) -> TritonConfig:
    return TritonConfig(
        http_address=settings.host,
        http_port=settings.http_port,
        grpc_address=settings.host,
        grpc_port=settings.grpc_port,
        metrics_address=settings.host,
        metrics_port=settings.metrics_port,
        allow_http=True,
        allow_grpc=True,
        allow_metrics=True,
        allow_cpu_metrics=True,
        # Per-model latency quantiles (nv_inference_*_summary_us{quantile=...}): what p50/p95 panels
        # and the autoscaler's Prometheus source read (docs/observability.md).
        metrics_config=["summary_latencies=true"],
        strict_readiness=True,
        # Runs after drain.py has already waited for in-flight work; see settings.TRITON_EXIT_TIMEOUT_S.
        exit_timeout_secs=TRITON_EXIT_TIMEOUT_S,
        # Broken models are only ever listed (as UNAVAILABLE) under --no-exit-on-error.
        exit_on_error=settings.exit_on_error,
        log_verbose=settings.log_verbose,
    )


def build_triton(
    prepared: list[PreparedModel], settings: ServerSettings, access_token: str, inflight: InFlight,
    broken: dict[str, list[str]] | None = None,
) -> Triton:
    """Create (not start) the Triton with every served version bound and every broken model listed."""
    triton = RepositoryTriton(
        config=triton_config(settings),
        security_config=TritonSecurityConfig(access_token=access_token),
        # Local model store: configs are written at bind() and tritonserver loads them at startup, so
        # /v2/health/ready stays 400 until every model is loaded. (The default policy starts an empty
        # server that reports ready before PyTriton loads models over the API: a false "ready".)
        triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True),
    )
    served: dict[str, list[int]] = {}
    for item in prepared:
        spec = item.model.spec
        for version, fns in sorted(item.versions.items()):
            triton.bind(
                model_name=private_name(spec.name, version),
                model_version=version,
                infer_func=[_bindable(item.model, fn, inflight) if item.batched else _bindable_requests(fn, inflight)
                            for fn in fns],
                inputs=_tensors(spec.inputs),
                outputs=_tensors(spec.outputs),
                config=model_config(item.model),
                strict=True,
            )
            served.setdefault(spec.name, []).append(version)
        LOG.info("bound model %s versions %s (%s, %d instance(s) each, %s)", spec.name, sorted(item.versions),
                 item.model.kind, spec.instance_count, item.model.instance_kind)
    triton.served = served
    rewrite(triton._workspace.model_store_path, served,
            {name: " | ".join(lines) for name, lines in (broken or {}).items()})
    return triton
