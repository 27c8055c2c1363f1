"""ACL decisions: which token may do what, following Nomad's policy model (pure, unit-tested).

Why pure: the decision table (management vs client tokens, namespace capabilities with the
`policy = read|write` shorthands, glob namespace rules, per-path variable rules, coarse
node/agent/operator rules) is where mistakes hide; keeping it free of HTTP makes it testable.
Handlers call `Authorizer.check(...)`, which raises ApiError(403, "Permission denied") like Nomad.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from ..config import POLICY_SHORTHAND, DevclusterConfig, NamespaceRule, PolicyConfig
from ..errors import ApiError

DENIED = ApiError(403, "Permission denied")
_LEVEL = {"deny": 0, "read": 1, "write": 2}


def _match_rule(rules: dict[str, Any], name: str) -> Any | None:
    """Nomad picks an exact rule first, then the closest glob (fewest wildcard characters)."""
    if name in rules:
        return rules[name]
    best: tuple[int, Any] | None = None
    for pattern, rule in rules.items():
        if any(ch in pattern for ch in "*?") and fnmatch.fnmatchcase(name, pattern):
            score = len(name) - len(pattern.replace("*", ""))
            if best is None or score < best[0]:
                best = (score, rule)
    return best[1] if best else None


def namespace_capabilities(rule: NamespaceRule) -> set[str]:
    caps = set(rule.capabilities)
    if rule.policy:
        caps |= POLICY_SHORTHAND[rule.policy]
    return caps


class Authorizer:
    """Answers ACL questions for resolved tokens. With ACLs disabled everything is allowed."""

    def __init__(self, config: DevclusterConfig) -> None:
        self.enabled = config.server.acl
        self.policies: dict[str, PolicyConfig] = dict(config.acl.policies)

    def _policies(self, token: dict[str, Any]) -> list[PolicyConfig]:
        return [self.policies[p] for p in token.get("Policies") or [] if p in self.policies]

    @staticmethod
    def is_management(token: dict[str, Any] | None) -> bool:
        return bool(token) and token.get("Type") == "management"

    def allow_namespace(self, token: dict[str, Any] | None, namespace: str, capability: str) -> bool:
        return self._allow_in_namespace(token, namespace, capability, namespace_capabilities)

    def allow_variable(self, token: dict[str, Any] | None, namespace: str, path: str, capability: str) -> bool:
        return self._allow_in_namespace(
            token, namespace, capability, lambda rule: _match_rule(rule.variables, path)
        )

    def _allow_in_namespace(
        self,
        token: dict[str, Any] | None,
        namespace: str,
        capability: str,
        capabilities_of: Callable[[NamespaceRule], Any],
    ) -> bool:
        """Union of the capabilities the token's policies grant in `namespace`; any deny wins (as in Nomad)."""
        if not self.enabled or self.is_management(token):
            return True
        if token is None:
            return False
        allowed = False
        for pol in self._policies(token):
            rule = _match_rule(pol.namespace, namespace)
            if rule is None:
                continue
            caps = capabilities_of(rule)
            if caps is None:
                continue
            if "deny" in caps:
                return False
            allowed = allowed or capability in caps
        return allowed

    def allow_coarse(self, token: dict[str, Any] | None, kind: str, level: str) -> bool:
        """`node`, `agent` and `operator` rules: deny < read < write."""
        if not self.enabled or self.is_management(token):
            return True
        if token is None:
            return False
        best = -1
        for pol in self._policies(token):
            value = getattr(pol, kind)
            if value == "deny":
                return False
            if value is not None:
                best = max(best, _LEVEL[value])
        return best >= _LEVEL[level]

    def require_namespace(self, token: dict[str, Any] | None, namespace: str, *capabilities: str) -> None:
        """Pass if the token has ANY of `capabilities` in `namespace` (Nomad's AllowNsOpFunc)."""
        if not any(self.allow_namespace(token, namespace, c) for c in capabilities):
            raise DENIED

    def require_variable(self, token: dict[str, Any] | None, namespace: str, path: str, cap: str) -> None:
        if not self.allow_variable(token, namespace, path, cap):
            raise DENIED

    def require_coarse(self, token: dict[str, Any] | None, kind: str, level: str) -> None:
        if not self.allow_coarse(token, kind, level):
            raise DENIED

    def require_management(self, token: dict[str, Any] | None) -> None:
        if self.enabled and not self.is_management(token):
            raise DENIED
