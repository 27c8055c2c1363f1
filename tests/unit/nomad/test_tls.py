"""TLS against a real HTTPS listener on 127.0.0.1 with a self-signed certificate (made by openssl).

Verification must be on by default (python-nomad's own default is off), NOMAD_CACERT must be
honoured, and NOMAD_TLS_SERVER_NAME must let an IP address serve a certificate for a name.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.settings import ConnectionSettings
from tests.unit.nomad.conftest import FakeNomad, _make_handler


@pytest.fixture
def tls_nomad(tmp_path: Path) -> Iterator[tuple[FakeNomad, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=server.global.nomad", "-addext", "subjectAltName=DNS:server.global.nomad"],
        check=True, capture_output=True, timeout=60,
    )
    fake = FakeNomad(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    fake.url = f"https://127.0.0.1:{server.server_address[1]}"
    fake.on("GET", "/v1/job/web", 200, {"ID": "web"})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, cert
    finally:
        server.shutdown()
        server.server_close()


def test_tls_verified_by_default_and_ca_cert_with_server_name(tls_nomad) -> None:
    fake, cert = tls_nomad
    default = NomadClient(ConnectionSettings.from_env(env={}, address=fake.url, retries=0))
    with pytest.raises(errors.Unreachable, match="TLS error"):
        default.job("web")
    env = {"NOMAD_CACERT": str(cert), "NOMAD_TLS_SERVER_NAME": "server.global.nomad"}
    trusted = NomadClient(ConnectionSettings.from_env(env=env, address=fake.url, retries=0))
    assert trusted.job("web") == {"ID": "web"}
    # The CA alone is not enough: the certificate names server.global.nomad, not 127.0.0.1.
    no_name = NomadClient(ConnectionSettings.from_env(env={"NOMAD_CACERT": str(cert)}, address=fake.url, retries=0))
    with pytest.raises(errors.Unreachable, match="TLS error"):
        no_name.job("web")
    skip = NomadClient(ConnectionSettings.from_env(env={"NOMAD_SKIP_VERIFY": "true"}, address=fake.url))
    with pytest.warns(InsecureRequestWarning):  # skipping verification is loud, never silent
        assert skip.job("web") == {"ID": "web"}
