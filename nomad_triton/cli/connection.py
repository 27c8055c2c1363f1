"""The nomad CLI's connection flags, shared by every command that talks to Nomad.

Why a decorator: every command must accept the same flags with the same names as `nomad` itself
(`-address`/`--address`, `--token`, `--namespace`, ... ; flag beats NOMAD_* env beats default)
and turn Nomad errors into the same one-line messages and exit codes. `@with_connection` appends
the flags to a command's signature (typer reads `__signature__`) and hands the command a ready
`Connection` in its `conn` parameter, so no command repeats ten options or a try/except.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, fail
from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.settings import ConnectionSettings

F = TypeVar("F", bound=Callable[..., Any])

# (parameter name, flag names, help, type) — names follow the nomad CLI's general options.
_FLAGS: list[tuple[str, tuple[str, ...], str, type]] = [
    (
        "address",
        ("-address", "--address"),
        "Nomad HTTP API address (NOMAD_ADDR, default http://127.0.0.1:4646).",
        str,
    ),
    ("token", ("-token", "--token"), "ACL token (NOMAD_TOKEN). Never printed.", str),
    ("namespace", ("-namespace", "--namespace"), "Target namespace (NOMAD_NAMESPACE).", str),
    ("region", ("-region", "--region"), "Target region (NOMAD_REGION).", str),
    (
        "ca_cert",
        ("-ca-cert", "--ca-cert"),
        "CA certificate file to verify Nomad's TLS certificate (NOMAD_CACERT).",
        str,
    ),
    ("ca_path", ("-ca-path", "--ca-path"), "Directory of CA certificates (NOMAD_CAPATH).", str),
    (
        "client_cert",
        ("-client-cert", "--client-cert"),
        "Client certificate for mTLS (NOMAD_CLIENT_CERT).",
        str,
    ),
    ("client_key", ("-client-key", "--client-key"), "Client key for mTLS (NOMAD_CLIENT_KEY).", str),
    (
        "tls_server_name",
        ("-tls-server-name", "--tls-server-name"),
        "Server name to verify the certificate against (NOMAD_TLS_SERVER_NAME).",
        str,
    ),
    (
        "tls_skip_verify",
        ("-tls-skip-verify", "--tls-skip-verify"),
        "Do not verify Nomad's TLS certificate (NOMAD_SKIP_VERIFY). Insecure.",
        bool,
    ),
]
FLAG_NAMES = [name for name, *_ in _FLAGS]


class Connection:
    """Resolved settings plus a lazily built client; created per command invocation."""

    def __init__(self, settings: ConnectionSettings, as_json: bool) -> None:
        self.settings = settings
        self.as_json = as_json
        self._client: NomadClient | None = None

    @property
    def client(self) -> NomadClient:
        if self._client is None:
            self._client = NomadClient(self.settings)
        return self._client


def settings_from_flags(values: dict[str, Any]) -> ConnectionSettings:
    overrides = {k: v for k, v in values.items() if k != "tls_skip_verify" and v is not None}
    if values.get("tls_skip_verify"):
        overrides["skip_verify"] = True
    return ConnectionSettings.from_env(**overrides)


def with_connection(fn: F) -> F:
    """Add the connection flags to a typer command; the command receives `conn: Connection`."""
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "conn"]
    extra = []
    annotations = {k: v for k, v in fn.__annotations__.items() if k != "conn"}
    for name, flags, help_text, typ in _FLAGS:
        default = typer.Option(False if typ is bool else None, *flags, help=help_text, show_default=False)
        annotation = bool if typ is bool else (str | None)
        extra.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
        annotations[name] = annotation

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flag_values = {name: kwargs.pop(name, None) for name in FLAG_NAMES}
        as_json = bool(kwargs.get("as_json", False))
        try:
            settings = settings_from_flags(flag_values)
        except ValueError as exc:
            fail(str(exc), EXIT_BAD_INPUT, as_json)
        return fn(*args, conn=Connection(settings, as_json), **kwargs)

    positional = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params]
    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional] + extra
    )
    wrapper.__annotations__ = annotations
    return wrapper  # type: ignore[return-value]


@contextmanager
def nomad_errors(as_json: bool, code: int = EXIT_FAILED) -> Iterator[None]:
    """Turn any Nomad error into one line and exit `code` (messages are already token-free)."""
    try:
        yield
    except errors.NomadError as exc:
        kind = type(exc).__name__
        fail(str(exc), code, as_json, kind=kind, status=exc.status)
