"""HTTP GETs for the prober on libcurl's multi interface (pycurl), driven by the running asyncio loop.

Why not aiohttp: at 10,000 allocations (bench P4) the HTTP client is most of a probe round. Two
plain aiohttp requests per endpoint cost 3.4-3.9 s per 10,000 on one core before any probe logic,
spent in Python-level request/response machinery; libcurl does the same work in C, and the same two
requests cost about half of that (docs/benchmarks.md, P4). What is left in Python is this module's
glue: a few calls per request.

How it is driven (curl's "multi_socket" API): libcurl tells us which sockets to watch
(M_SOCKETFUNCTION) and when it next needs a timeout (M_TIMERFUNCTION); we tell it what became
ready (`socket_action`). On Linux the sockets live in a private epoll set whose one descriptor the
asyncio loop watches, so a request costs two epoll_ctl calls from C instead of asyncio's
Python-level add_reader/remove_reader; elsewhere the loop watches each socket itself.

Connections belong to the multi handle, not to a request, so they are kept alive across requests
and rounds however the easy handles are reused. Everything a curl default would take from the
environment is pinned: no proxy (probes go straight to allocations, as aiohttp's trust_env=False
did), TLS verified against the CA bundle Python's ssl module uses, no compression offered.
"""

from __future__ import annotations

import asyncio
import io
import select
import ssl
from typing import Any

import pycurl

_POLL_IN, _POLL_OUT, _POLL_REMOVE = pycurl.POLL_IN, pycurl.POLL_OUT, pycurl.POLL_REMOVE
_EPOLLIN = getattr(select, "EPOLLIN", 1)
_EPOLLOUT = getattr(select, "EPOLLOUT", 4)
_EPOLL_TROUBLE = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
# Idle connections kept at most (curl's default is 4x the transfers added, which would close most
# of a round's connections between rounds). The open-files limit is the real bound.
MAX_CACHED_CONNECTIONS = 200_000


class TransportError(OSError):
    """A request that failed below HTTP (refused, reset, TLS, ...), with curl's own message.

    `curl_code` is libcurl's error number (CURLE_*), kept out of OSError's errno: it is not one.
    """

    def __init__(self, message: str, curl_code: int | None = None) -> None:
        super().__init__(message)
        self.curl_code = curl_code


def default_ca_file() -> str | None:
    """The CA bundle Python's ssl module trusts (honours SSL_CERT_FILE), so curl and the rest of
    the toolkit trust the same roots; None leaves curl's built-in default."""
    return ssl.get_default_verify_paths().cafile


class CurlTransport:
    """GET requests multiplexed by one curl multi handle inside the running event loop.

    Create it in the loop that will use it; `close()` it when done. `per_host` bounds connections
    to one host:port (further requests queue for one), `keepalive_s` is how long an idle
    connection may be reused, `request_timeout_s` a backstop deadline per request (callers keep
    their own deadlines and cancel `get`; a cancelled request is taken off its connection at once).
    """

    def __init__(
        self,
        *,
        per_host: int = 4,
        keepalive_s: float = 75.0,
        request_timeout_s: float = 30.0,
        ca_file: str | None = None,
        use_epoll: bool = True,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self._ca_file = ca_file if ca_file is not None else default_ca_file()
        self._keepalive_s = max(1, int(keepalive_s))
        self._timeout_ms = max(1, int(request_timeout_s * 1000))
        self._idle: list[tuple[pycurl.Curl, io.BytesIO]] = []
        self._waiting: dict[pycurl.Curl, asyncio.Future[int]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._due: float | None = None
        self._kicked = False
        self._closed = False
        multi = self._multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAXCONNECTS, MAX_CACHED_CONNECTIONS)
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, max(1, per_host))
        self._epoll = select.epoll() if use_epoll and hasattr(select, "epoll") else None
        self._watched: dict[int, int] = {}  # fd -> curl's POLL_* mask (loop-watched mode only)
        if self._epoll is not None:
            self.loop.add_reader(self._epoll.fileno(), self._on_epoll)

    # -- requests -------------------------------------------------------------------------------

    async def get(self, url: str) -> tuple[int, bytes]:
        """(status, body) of one GET; TimeoutError or TransportError when no response came."""
        if self._closed:
            raise TransportError("transport is closed")
        easy, body = self._idle.pop() if self._idle else self._new_easy()
        body.seek(0)
        body.truncate()
        easy.setopt(pycurl.URL, url)
        done: asyncio.Future[int] = self.loop.create_future()
        self._waiting[easy] = done
        self._multi.add_handle(easy)
        try:
            status = await done
            return status, body.getvalue()
        finally:
            if self._waiting.pop(easy, None) is not None and not self._closed:
                self._multi.remove_handle(easy)  # cancelled mid-transfer: curl drops the connection
            if not self._closed:
                self._idle.append((easy, body))

    def _new_easy(self) -> tuple[pycurl.Curl, io.BytesIO]:
        easy, body = pycurl.Curl(), io.BytesIO()
        easy.setopt(pycurl.WRITEDATA, body)
        easy.setopt(pycurl.NOSIGNAL, 1)
        easy.setopt(pycurl.PROXY, "")  # never a proxy from the environment
        easy.setopt(pycurl.ACCEPT_ENCODING, "identity")  # bodies are parsed as sent
        easy.setopt(pycurl.USERAGENT, "nomad-triton-probe")
        easy.setopt(pycurl.TIMEOUT_MS, self._timeout_ms)
        easy.setopt(pycurl.MAXAGE_CONN, self._keepalive_s)
        # Allocation addresses are IPs; a name is resolved per new connection, never cached stale.
        # (A cache would also be pruned by a scan of every host:port on each lookup: quadratic.)
        easy.setopt(pycurl.DNS_CACHE_TIMEOUT, 0)
        easy.setopt(pycurl.SSL_VERIFYPEER, 1)
        easy.setopt(pycurl.SSL_VERIFYHOST, 2)
        if self._ca_file:
            easy.setopt(pycurl.CAINFO, self._ca_file)
        return easy, body

    def _finish(self) -> None:
        """Hand every finished transfer's result to its waiter."""
        multi, waiting = self._multi, self._waiting
        while True:
            queued, ok, failed = multi.info_read()
            for easy in ok:
                multi.remove_handle(easy)
                done = waiting.pop(easy)
                if not done.done():
                    done.set_result(easy.getinfo(pycurl.RESPONSE_CODE))
            for easy, code, message in failed:
                multi.remove_handle(easy)
                done = waiting.pop(easy)
                if not done.done():
                    done.set_exception(
                        TimeoutError(message) if code == pycurl.E_OPERATION_TIMEDOUT
                        else TransportError(message, code))
            if not queued:
                return

    # -- curl's callbacks and the loop ----------------------------------------------------------

    def _on_socket(self, what: int, fd: int, _multi: Any, _data: Any) -> None:
        if self._epoll is not None:
            if what == _POLL_REMOVE:
                try:
                    self._epoll.unregister(fd)
                except (OSError, ValueError):  # already closed by curl, or epoll closed
                    pass
                return
            mask = (_EPOLLIN if what & _POLL_IN else 0) | (_EPOLLOUT if what & _POLL_OUT else 0)
            try:
                self._epoll.modify(fd, mask)
            except FileNotFoundError:
                self._epoll.register(fd, mask)
            return
        old = self._watched.pop(fd, 0)
        new = 0 if what == _POLL_REMOVE else what
        if old & _POLL_IN and not new & _POLL_IN:
            self.loop.remove_reader(fd)
        if old & _POLL_OUT and not new & _POLL_OUT:
            self.loop.remove_writer(fd)
        if new & _POLL_IN and not old & _POLL_IN:
            self.loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if new & _POLL_OUT and not old & _POLL_OUT:
            self.loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)
        if new:
            self._watched[fd] = new

    def _on_epoll(self) -> None:
        act = self._multi.socket_action
        for fd, events in self._epoll.poll(0):  # type: ignore[union-attr]
            act(fd, (pycurl.CSELECT_IN if events & _EPOLLIN else 0)
                | (pycurl.CSELECT_OUT if events & _EPOLLOUT else 0)
                | (pycurl.CSELECT_ERR if events & _EPOLL_TROUBLE else 0))
        self._finish()

    def _act(self, fd: int, event: int) -> None:
        self._multi.socket_action(fd, event)
        self._finish()

    def _on_timer(self, ms: int) -> None:
        """curl's next timeout. Rescheduled lazily: a later deadline leaves the armed timer in
        place (it re-arms when it fires early), so the many updates per request cost no heap work."""
        if ms < 0:
            self._due = None
        elif ms == 0:  # "act now": once per loop pass, however many requests were just added
            if not self._kicked:
                self._kicked = True
                self.loop.call_soon(self._on_timeout)
        else:
            self._due = due = self.loop.time() + ms / 1000.0
            if self._timer is None or due < self._timer_at:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer, self._timer_at = self.loop.call_at(due, self._on_timer_fired), due

    def _on_timer_fired(self) -> None:
        self._timer = None
        if self._due is None or self._closed:
            return
        if self._due > self.loop.time() + 0.001:  # moved later since armed (a fire within 1 ms
            # of the deadline just runs curl's timeout: curl re-arms if it is early)
            self._timer, self._timer_at = self.loop.call_at(self._due, self._on_timer_fired), self._due
            return
        self._on_timeout()

    def _on_timeout(self) -> None:
        self._kicked = False
        if not self._closed:
            self._multi.socket_action(pycurl.SOCKET_TIMEOUT, 0)
            self._finish()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Fail what is still waiting, close every connection and stop watching the loop."""
        if self._closed:
            return
        self._closed = True
        for easy, done in list(self._waiting.items()):
            self._multi.remove_handle(easy)
            if not done.done():
                done.set_exception(TransportError("transport closed"))
        self._waiting.clear()
        if self._timer is not None:
            self._timer.cancel()
        for fd, mask in self._watched.items():
            if mask & _POLL_IN:
                self.loop.remove_reader(fd)
            if mask & _POLL_OUT:
                self.loop.remove_writer(fd)
        self._watched.clear()
        if self._epoll is not None:
            self.loop.remove_reader(self._epoll.fileno())
        for easy, _ in self._idle:
            easy.close()
        self._idle.clear()
        self._multi.close()  # closes the cached connections (callbacks see POLL_REMOVE)
        if self._epoll is not None:
            self._epoll.close()
