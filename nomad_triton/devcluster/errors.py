"""The one error type devcluster handlers and runtime raise; the API turns it into Nomad's reply.

Nomad answers errors with a plain-text body (not JSON) and an HTTP status, e.g.
400 "job parse error: ...", 403 "Permission denied", 404 "job not found".
"""

from __future__ import annotations


class ApiError(Exception):
    """An HTTP error with Nomad's status code and plain-text message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
