"""Port/address precedence (NOMAD_* env > flags > defaults) and the launcher's child environment."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

from nomad_triton.server.launcher import child_env, libpython_dir
from nomad_triton.server.settings import SettingsError, resolve
from nomad_triton.server.worker import TOKEN_ENV


def test_defaults() -> None:
    s = resolve({})
    assert (s.host, s.http_port, s.grpc_port, s.metrics_port) == ("127.0.0.1", 8000, 8001, 8002)


def test_nomad_ports_win_over_flags() -> None:
    flags = dict(http_port=9000, grpc_port=9001, metrics_port=9002)
    assert resolve({}, **flags).http_port == 9000
    env = {"NOMAD_PORT_http": "23456", "NOMAD_PORT_grpc": "23457", "NOMAD_PORT_metrics": "23458",
           "NOMAD_IP_http": "192.168.1.7"}
    s = resolve(env, **flags)
    assert (s.host, s.http_port, s.grpc_port, s.metrics_port) == ("192.168.1.7", 23456, 23457, 23458)


def test_explicit_host_wins_over_nomad_ip() -> None:
    # Docker-driver tasks: NOMAD_IP_http is the host's address; the container must bind 0.0.0.0.
    assert resolve({"NOMAD_IP_http": "192.168.1.7"}, host="0.0.0.0").host == "0.0.0.0"


def test_partial_env_mixes_with_flags() -> None:
    s = resolve({"NOMAD_PORT_http": "31000"}, grpc_port=9001)
    assert (s.http_port, s.grpc_port, s.metrics_port) == (31000, 9001, 8002)


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"NOMAD_PORT_http": "abc"}, {}, "NOMAD_PORT_http: not a port number: 'abc'"),
        ({}, {"grpc_port": 70000}, "--grpc-port: port 70000 out of range"),
        ({}, {"http_port": 8001}, "ports must differ"),
        ({}, {"drain_timeout_s": 601}, "--drain-timeout: 601 s is outside"),
    ],
)
def test_bad_values_name_their_source(env: dict[str, str], flags: dict[str, int], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        resolve(env, **flags)


def test_child_env_puts_our_libpython_first_and_passes_token() -> None:
    libdir = libpython_dir()
    # The venv is built from a shared-libpython interpreter (FACTS.md), so the folder must exist.
    assert libdir is not None and Path(libdir) == Path(sysconfig.get_config_var("LIBDIR"))
    env = child_env({"LD_LIBRARY_PATH": f"/opt/x:{libdir}", "KEEP": "1"}, "s3cret")
    assert env["LD_LIBRARY_PATH"] == f"{libdir}:/opt/x"
    assert env[TOKEN_ENV] == "s3cret" and env["KEEP"] == "1"
    assert child_env({}, "t")["LD_LIBRARY_PATH"] == libdir
