"""The prober's libcurl transport against real loopback sockets (plain and TLS).

Why: the prober's requests go through curl's multi interface driven by our event loop
(probe/curl_transport.py). These are the properties the prober relies on: answers and keep-alive
in both ways of watching sockets, failures typed as the prober expects, a cancelled request taken
off its connection at once, dead idle connections replaced, nothing taken from the proxy
environment, and TLS verified by default.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pycurl
import pytest

from nomad_triton.probe.curl_transport import CurlTransport, TransportError

pytestmark = pytest.mark.e2e


class _Server:
    """HTTP/1.1 responder on 127.0.0.1: /ok answers, /hang never does, anything else is a 404.
    Counts connections and notes when the client closes one."""

    def __init__(self, close_after_response: bool = False) -> None:
        self.connections = 0
        self.closed_by_client: list[float] = []
        self.close_after_response = close_after_response
        self.server: asyncio.Server | None = None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=ssl_ctx)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ", 2)[1]
                if path == b"/hang":
                    await reader.read()  # until the client gives up on this connection
                    self.closed_by_client.append(time.monotonic())
                    return
                status, body = (b"200 OK", b"fine:" + path) if path.startswith(b"/ok") else (b"404 Not Found", b"")
                writer.write(b"HTTP/1.1 %s\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body))
                await writer.drain()
                if self.close_after_response:  # an idle timeout on the server side, unannounced
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.parametrize("use_epoll", [True, False], ids=["private-epoll", "loop-watched"])
def test_answers_and_keep_alive_in_both_ways_of_watching_sockets(use_epoll: bool) -> None:
    async def run() -> tuple[list, int]:
        servers = [_Server() for _ in range(3)]
        addrs = [await s.start() for s in servers]
        transport = CurlTransport(use_epoll=use_epoll)
        try:
            answers = []
            for _ in range(2):  # two rounds: the second must reuse the first's connections
                answers.append(await asyncio.gather(
                    *(transport.get(f"http://{a}{p}") for a in addrs for p in ("/ok/1", "/ok/2", "/nope"))))
            return answers, sum(s.connections for s in servers)
        finally:
            transport.close()
            for s in servers:
                s.close()

    answers, connections = asyncio.run(run())
    expected = [(200, b"fine:/ok/1"), (200, b"fine:/ok/2"), (404, b"")] * 3
    assert answers == [expected, expected]
    # Three requests at once per server may open up to three connections each; none is opened again.
    assert 3 <= connections <= 9


def test_failures_are_typed_and_a_cancelled_request_leaves_its_connection_at_once() -> None:
    async def run() -> tuple[BaseException, float, list[float], tuple[int, bytes]]:
        server = _Server()
        addr = await server.start()
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
        closed.close()  # nothing listens there now
        transport = CurlTransport()
        try:
            try:
                await transport.get(f"http://127.0.0.1:{refused_port}/ok")
                refused: BaseException = AssertionError("no error")
            except TransportError as exc:
                refused = exc
            cancelled_at = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(transport.get(f"http://{addr}/hang"), timeout=0.2)
            cancelled_at += 0.2
            await asyncio.sleep(0.2)  # let the server see the connection go
            after = await transport.get(f"http://{addr}/ok")  # the transport is still usable
            return refused, cancelled_at, server.closed_by_client, after
        finally:
            transport.close()
            server.close()

    refused, cancelled_at, closed_by_client, after = asyncio.run(run())
    assert isinstance(refused, TransportError) and "connect" in str(refused).lower()
    # curl's error number is kept apart: it is no errno, and must not read as one.
    assert refused.curl_code == pycurl.E_COULDNT_CONNECT and refused.errno is None and "[Errno" not in str(refused)
    assert len(closed_by_client) == 1 and closed_by_client[0] - cancelled_at < 0.15
    assert after == (200, b"fine:/ok")


def test_backstop_deadline_is_a_timeout_error() -> None:
    async def run() -> float:
        server = _Server()
        addr = await server.start()
        transport = CurlTransport(request_timeout_s=0.3)
        try:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await transport.get(f"http://{addr}/hang")
            return time.monotonic() - t0
        finally:
            transport.close()
            server.close()

    assert 0.25 <= asyncio.run(run()) < 2.0


def test_connection_closed_by_the_server_while_idle_is_replaced() -> None:
    async def run() -> tuple[list, int]:
        server = _Server(close_after_response=True)
        addr = await server.start()
        transport = CurlTransport()
        try:
            answers = []
            for i in range(3):
                answers.append(await transport.get(f"http://{addr}/ok/{i}"))
                await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
            return answers, server.connections
        finally:
            transport.close()
            server.close()

    answers, connections = asyncio.run(run())
    assert answers == [(200, b"fine:/ok/0"), (200, b"fine:/ok/1"), (200, b"fine:/ok/2")]
    assert connections == 3


def test_proxy_environment_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes go straight to allocations: a proxy set for package downloads must not catch them."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: nothing answers there
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)

    async def run() -> tuple[int, bytes]:
        server = _Server()
        addr = await server.start()
        transport = CurlTransport()
        try:
            return await transport.get(f"http://{addr}/ok")
        finally:
            transport.close()
            server.close()

    assert asyncio.run(run()) == (200, b"fine:/ok")


def test_tls_is_verified_by_default_and_trusts_a_given_ca_file(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=triton.test", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    async def run() -> tuple[BaseException | None, tuple[int, bytes]]:
        server = _Server()
        addr = await server.start(ctx)
        default, trusting = CurlTransport(), CurlTransport(ca_file=str(cert))
        try:
            refused: BaseException | None = None
            try:
                await default.get(f"https://{addr}/ok")
            except TransportError as exc:
                refused = exc
            return refused, await trusting.get(f"https://{addr}/ok")
        finally:
            default.close()
            trusting.close()
            server.close()

    refused, trusted = asyncio.run(run())
    assert isinstance(refused, TransportError) and "certificate" in str(refused).lower()
    assert trusted == (200, b"fine:/ok")


def test_close_fails_waiting_requests_and_later_ones() -> None:
    async def run() -> tuple[BaseException | None, BaseException | None]:
        server = _Server()
        addr = await server.start()
        transport = CurlTransport()
        try:
            waiting = asyncio.ensure_future(transport.get(f"http://{addr}/hang"))
            await asyncio.sleep(0.1)
            transport.close()
            results = await asyncio.gather(waiting, transport.get(f"http://{addr}/ok"), return_exceptions=True)
            return results[0], results[1]  # type: ignore[return-value]
        finally:
            server.close()

    waiting, later = asyncio.run(run())
    assert isinstance(waiting, TransportError) and isinstance(later, TransportError)
