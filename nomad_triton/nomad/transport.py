"""The HTTP plumbing under the facade: a counting requests session and python-nomad's raw requester.

Why: python-nomad (the one Nomad client we use) hides response headers and lacks some endpoints
(job scale, services, node pools, variable locks, blocking queries, a deadline-bound event
stream). Its own `Requester` already carries address, token, namespace, region, TLS and timeout
settings, so the gaps go through a Requester subclass that takes a full path — same session, same
settings, same error types — instead of a second hand-written client.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from nomad.api.base import Requester
from requests.adapters import HTTPAdapter

# Connections kept per Nomad address. requests keeps 10 by default; the autoscale agent has 10
# request threads plus its long-lived blocking queries (policies, jobs, allocations) and lock
# renewals in flight together, and each request over the limit opened and dropped a connection
# (urllib3's "Connection pool is full" warning).
POOL_CONNECTIONS = 32


class CountingSession(requests.Session):
    """A requests session that counts the HTTP requests it sends (for the request-rate budget)."""

    def __init__(self) -> None:
        super().__init__()
        for prefix in ("http://", "https://"):
            self.mount(prefix, HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))
        self._lock = threading.Lock()
        self.request_count = 0

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        with self._lock:
            self.request_count += 1
        return super().request(method, url, *args, **kwargs)


class ServerNameAdapter(HTTPAdapter):
    """Verify the server certificate against a fixed name (NOMAD_TLS_SERVER_NAME), like the nomad CLI.

    urllib3 sends `server_hostname` as SNI and checks the certificate against `assert_hostname`,
    so the address may be an IP or a load balancer while the certificate names the server.
    """

    def __init__(self, server_name: str, **kwargs: Any) -> None:
        self._server_name = server_name
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["server_hostname"] = self._server_name
        kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)


class RawRequester(Requester):
    """python-nomad's Requester addressed by full API path ("job/x/scale"), for endpoints it lacks."""

    ENDPOINT = ""

    def _endpoint_builder(self, *args: str) -> str:
        path = "/".join(a.strip("/") for a in args if a)
        return f"{self.version}/{path}"
