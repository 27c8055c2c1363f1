"""Bind prepared models into a PyTriton `Triton` configured for throughput and strict readiness.

PyTriton runs tritonserver as a child process and executes our callables in this process; this
module only translates model.toml settings into PyTriton's ModelConfig/TritonConfig.
"""

from __future__ import annotations

import logging
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

LOG = logging.getLogger("nomad_triton.server")


def _tensors(specs: list[TensorSpec]) -> list[Tensor]:
    return [Tensor(name=t.name, dtype=t.numpy_dtype, shape=tuple(t.shape)) for t in specs]


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
        log_verbose=settings.log_verbose,
    )


def build_triton(
    prepared: list[PreparedModel], settings: ServerSettings, access_token: str, inflight: InFlight
) -> Triton:
    """Create (not start) the Triton with every model bound."""
    triton = Triton(
        config=triton_config(settings),
        security_config=TritonSecurityConfig(access_token=access_token),
        # Local model store: configs are written at bind() and tritonserver loads them at startup, so
        # /v2/health/ready stays 400 until every model is loaded. (The default policy starts an empty
        # server that reports ready before PyTriton loads models over the API: a false "ready".)
        triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True),
    )
    for item in prepared:
        spec = item.model.spec
        triton.bind(
            model_name=spec.name,
            model_version=spec.version,
            infer_func=[_bindable(item.model, fn, inflight) for fn in item.instances],
            inputs=_tensors(spec.inputs),
            outputs=_tensors(spec.outputs),
            config=model_config(item.model),
            strict=True,
        )
        LOG.info("bound model %s v%d (%s, %d instance(s))", spec.name, spec.version, spec.backend,
                 spec.instance_count)
    return triton
