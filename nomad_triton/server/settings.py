"""Resolve listen address and ports from Nomad's environment, flags and defaults.

Ports: NOMAD_PORT_* win over flags (Nomad allocates dynamic ports and tells the task only through the
environment, so a job file never repeats port numbers). Address: an explicit --host wins over
NOMAD_IP_http, because in a Docker-driver task NOMAD_IP_http is the host's address, which does not
exist inside the container's network namespace; the image passes --host 0.0.0.0. Default 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
DEFAULT_HOST = "127.0.0.1"
MAX_DRAIN_S = 300
# After our own drain (readiness off, executing batches done) tritonserver gets this long to finish
# stragglers, close idle keep-alive connections and unload; PyTriton kills it after 30 s anyway.
TRITON_EXIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class ServerSettings:
    """Where and how the server listens; resolved from NOMAD_* env and flags by `resolve`."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    drain_timeout_s: int
    log_verbose: int = 0
    exit_on_error: bool = True  # Triton's --exit-on-error: refuse to start while any model is broken
    allow_cpu_fallback: bool = False  # KIND_GPU models run on CPU when no GPU is visible


class SettingsError(ValueError):
    """Bad flag or environment value; the message names it."""


def _port(env: Mapping[str, str], name: str, flag: int | None) -> int:
    key = f"NOMAD_PORT_{name}"
    if env.get(key):
        try:
            value = int(env[key])
        except ValueError:
            raise SettingsError(f"{key}: not a port number: {env[key]!r}") from None
        source = key
    else:
        value = flag if flag is not None else DEFAULT_PORTS[name]
        source = f"--{name}-port"
    if not 1 <= value <= 65535:
        raise SettingsError(f"{source}: port {value} out of range 1-65535")
    return value


def resolve(
    env: Mapping[str, str],
    *,
    host: str | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    drain_timeout_s: int = 20,
    log_verbose: int = 0,
    exit_on_error: bool = True,
    allow_cpu_fallback: bool = False,
) -> ServerSettings:
    """Pure function of environment and flags, so the precedence rules are unit-tested."""
    if not 0 <= drain_timeout_s <= MAX_DRAIN_S:
        raise SettingsError(f"--drain-timeout: {drain_timeout_s} s is outside 0-{MAX_DRAIN_S} s")
    ports = {
        "http": _port(env, "http", http_port),
        "grpc": _port(env, "grpc", grpc_port),
        "metrics": _port(env, "metrics", metrics_port),
    }
    if len(set(ports.values())) != 3:
        raise SettingsError(f"ports must differ: {ports}")
    return ServerSettings(
        host=host or env.get("NOMAD_IP_http") or DEFAULT_HOST,
        http_port=ports["http"],
        grpc_port=ports["grpc"],
        metrics_port=ports["metrics"],
        drain_timeout_s=drain_timeout_s,
        log_verbose=log_verbose,
        exit_on_error=exit_on_error,
        allow_cpu_fallback=allow_cpu_fallback,
    )
