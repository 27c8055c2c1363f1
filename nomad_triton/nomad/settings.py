"""Nomad connection settings, read from flags and the environment exactly like the nomad CLI.

Why a separate module: the CLI's connection flags, the probes and the autoscaler all need the
same precedence rules (flag > env > default) and the same secret handling; having one frozen
object means the token is redacted in exactly one `__repr__`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from urllib.parse import urlsplit

DEFAULT_ADDR = "http://127.0.0.1:4646"

# Environment variable -> settings field, as documented for the nomad CLI.
ENV_VARS: dict[str, str] = {
    "NOMAD_ADDR": "address",
    "NOMAD_TOKEN": "token",
    "NOMAD_NAMESPACE": "namespace",
    "NOMAD_REGION": "region",
    "NOMAD_CACERT": "ca_cert",
    "NOMAD_CAPATH": "ca_path",
    "NOMAD_CLIENT_CERT": "client_cert",
    "NOMAD_CLIENT_KEY": "client_key",
    "NOMAD_TLS_SERVER_NAME": "tls_server_name",
    "NOMAD_SKIP_VERIFY": "skip_verify",
}


def parse_bool(value: str) -> bool:
    """Go's strconv.ParseBool, which the nomad CLI uses for NOMAD_SKIP_VERIFY."""
    v = value.strip()
    if v in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if v in ("0", "f", "F", "FALSE", "false", "False", ""):
        return False
    raise ValueError(f"NOMAD_SKIP_VERIFY: not a boolean: {value!r}")


def check_address(address: str, source: str) -> str:
    """`address` without trailing '/', or ValueError naming `source` (NOMAD_ADDR or -address).

    Why up front: a malformed address is bad input (exit 2, one line naming where it came from);
    left to requests it surfaces as an opaque per-request failure that looks like an outage.
    """
    hint = "expected http://host:port or https://host:port"
    try:
        parts = urlsplit(address)
        port = parts.port  # raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ValueError(f"{source}: invalid address {address!r}: {exc} ({hint})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{source}: invalid address {address!r} ({hint})")
    if port == 0:
        raise ValueError(f"{source}: invalid address {address!r}: port 0 ({hint})")
    return address.rstrip("/")


@dataclass(frozen=True)
class ConnectionSettings:
    """Where and how to reach Nomad. The token is excluded from repr so it never lands in logs."""

    address: str = DEFAULT_ADDR
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    region: str | None = None
    ca_cert: str | None = None
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_server_name: str | None = None
    skip_verify: bool = False
    # Connect and read timeouts (s) for ordinary requests; blocking queries add their wait on top.
    connect_timeout: float = 3.0
    read_timeout: float = 30.0
    # Bounded retries on connection errors (refused/reset) with exponential backoff.
    retries: int = 3
    backoff_s: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ConnectionSettings:
        """Environment first, then overrides whose value is not None (CLI flags left unset)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for var, name in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            values[name] = parse_bool(raw) if name == "skip_verify" else raw
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise TypeError(f"unknown connection setting {key!r}")
            if value is not None:
                values[key] = value
        settings = cls(**values)  # type: ignore[arg-type]
        source = "--address" if overrides.get("address") is not None else "NOMAD_ADDR"
        return replace(settings, address=check_address(settings.address, source))

    @property
    def secure(self) -> bool:
        return self.address.startswith("https://")

    def verify(self) -> bool | str:
        """The `verify` value for requests: on by default, a CA bundle or directory if given."""
        if self.skip_verify:
            return False
        return self.ca_cert or self.ca_path or True

    def cert(self) -> tuple[str, str] | tuple[()]:
        if self.client_cert and self.client_key:
            return (self.client_cert, self.client_key)
        return ()
