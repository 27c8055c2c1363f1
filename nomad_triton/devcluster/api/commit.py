"""Acknowledge only what is committed: flush the store's pending writes before a response starts.

Why middleware: every write endpoint would otherwise have to remember to flush. The request is
one store batch (its writes become one transaction, like one raft entry), and the commit happens
on `http.response.start`, before a single byte of the answer leaves. If the commit fails, the
exception propagates and the client gets a 500: the write was not acknowledged.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store import Store

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CommitBeforeReply:
    """Pure ASGI (streams such as the event stream pass untouched); reads are not batched."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in READ_METHODS:
            await self.app(scope, receive, send)
            return

        async def send_committed(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.store.flush()
            await send(message)

        with self.store.batch():
            await self.app(scope, receive, send_committed)
