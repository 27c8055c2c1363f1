"""Job versions: which one to go back to.

Why the last *stable* version: Nomad marks a version stable once its deployment succeeded, so it
is the last version known to have served; "the previous version" may be the broken one. Shared by
`rollback` and the fleet runner's --rollback-on-failure.
"""

from __future__ import annotations

from typing import Any


def last_stable(versions: list[dict[str, Any]], current: int) -> dict[str, Any] | None:
    """The newest stable version older than `current`."""
    older = [v for v in versions if v.get("Stable") and int(v.get("Version", -1)) < current]
    return max(older, key=lambda v: int(v["Version"]), default=None)
