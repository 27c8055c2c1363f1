"""Nomad errors as a small typed hierarchy, so callers can catch precisely what they can handle.

Nomad answers errors with an HTTP status and a plain-text body. Some conditions share a status
with unrelated failures (an EnforceIndex mismatch and a blocked scale request both come back as
generic errors), so classification looks at the documented texts as well as the status.
Every message passes through `redact()` first: a token must never reach a terminal or a log.
"""

from __future__ import annotations

ENFORCE_INDEX_TEXT = "Enforcing job modify index"
SCALING_BLOCKED_TEXT = "job scaling blocked due to active deployment"


class NomadError(Exception):
    """Any failure talking to Nomad. `status` is the HTTP status, or None without a reply."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class Unreachable(NomadError):
    """No HTTP reply at all (refused, reset, DNS, TLS handshake) after bounded retries."""


class StreamDropped(NomadError):
    """A long-lived request (event stream, blocking query) lost its connection mid-flight."""


class PermissionDenied(NomadError):
    """403: the ACL token is missing, unknown or lacks the capability."""


class NotFound(NomadError):
    """404: the job, deployment, allocation or path does not exist."""


class Conflict(NomadError):
    """Someone else changed the object first (EnforceIndex mismatch, a held variable lock, 409)."""


class ScalingBlocked(Conflict):
    """Nomad refuses scale requests while a deployment of the job is running."""


class BadRequest(NomadError):
    """400: Nomad rejected the request body (bad job, bad parameter)."""


def redact(text: str, secret: str | None) -> str:
    """Remove the secret wherever it occurs; a no-op without one."""
    if secret:
        return text.replace(secret, "<redacted>")
    return text


def from_response(status: int, body: str, *, what: str, token: str | None) -> NomadError:
    """Classify a Nomad error reply. `what` names the request (e.g. "POST /v1/jobs") for context."""
    text = redact((body or "").strip(), token) or f"HTTP {status}"
    if SCALING_BLOCKED_TEXT in text:
        return ScalingBlocked(f"{what}: {text}", status)
    if ENFORCE_INDEX_TEXT in text:
        return Conflict(
            f"{what}: {text} (the job was changed by someone else since it was planned; plan again)",
            status,
        )
    if status == 403:
        who = (
            "the ACL token given is invalid or lacks the required policy"
            if token
            else "no ACL token was given (set NOMAD_TOKEN or --token)"
        )
        return PermissionDenied(f"{what}: Permission denied: {who}", status)
    if status == 404:
        return NotFound(f"{what}: {text}", status)
    if status == 409:
        return Conflict(f"{what}: {text}", status)
    if status == 400:
        return BadRequest(f"{what}: {text}", status)
    return NomadError(f"{what}: HTTP {status}: {text}", status)
