"""A tiny scripted HTTP server on 127.0.0.1 so the facade is tested over real sockets.

Each test installs handlers: (method, path) -> callable(request) -> (status, headers, body | iterable).
Requests are recorded (method, path, query, headers, body) for assertions.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeNomad:
    url: str
    routes: dict[tuple[str, str], Callable[[Seen], tuple[int, dict[str, str], Any]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, status: int = 200, body: Any = None, headers: dict | None = None) -> None:
        self.routes[(method, path)] = lambda _req: (status, headers or {}, body)


def _make_handler(fake: FakeNomad) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            req = Seen(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                       dict(self.headers), body)
            fake.seen.append(req)
            route = fake.routes.get((self.command, parts.path))
            if route is None:
                status, headers, payload = 404, {}, "no route"
            else:
                status, headers, payload = route(req)
            if isinstance(payload, Iterator):
                self.send_response(status)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    for chunk in payload:
                        data = chunk.encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler


@pytest.fixture
def fake_nomad() -> Iterator[FakeNomad]:
    fake = FakeNomad(url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
