"""The agent's target set: which task groups to scale, read from Nomad's scaling policies.

A deployment spec with `[scaling] enabled = true` renders a `scaling { min max policy {...} }`
block (templates/partials/scaling.hcl.j2); Nomad stores it as a scaling policy
(`GET /v1/scaling/policies`, `GET /v1/scaling/policy/:id`) whose `Policy` map holds our policy
keys. So the policy lives with the job, versioned with it, and one agent can discover every
autoscaled group of the cluster without a second copy of the configuration.

This module is pure (no I/O): `TargetSet` turns successive policy listings and the policies it
asked to read into a list of changes (added, changed, removed) that the agent applies. A stopped
job's policy is listed but disabled on Nomad 1.10.2+ (nomad#25911) and deleted on older ones
(nomad#7768), so "stopped" arrives here as "changed, inactive" or as "removed"; both stop it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from nomad_triton.autoscale.policy import ScalingPolicyConfig
from nomad_triton.autoscale.sources import Target
from nomad_triton.spec.models import ScalingPolicySpec, ScalingSpec

HORIZONTAL = "horizontal"
# Keys of a Nomad Autoscaler policy: such a group is scaled by that autoscaler, never by us.
FOREIGN_KEYS = frozenset({"check", "target", "strategy", "cooldown", "on_check_error"})


@dataclass(frozen=True)
class TargetSpec:
    """One group the agent follows. `error` marks an invalid policy: shown, never acted on."""

    policy_id: str
    target: Target
    enabled: bool
    modify_index: int
    config: ScalingPolicyConfig | None = None
    error: str | None = None

    @property
    def active(self) -> bool:
        """Evaluated on its interval (enabled and valid)."""
        return self.enabled and self.config is not None

    @property
    def interval_s(self) -> float:
        return self.config.interval_s if self.config is not None else 1.0


def _field_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if p != "policy") or "policy"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"policy field {loc!r}: {msg} (got {err.get('input')!r})"


def parse_policy(policy: Mapping[str, Any]) -> TargetSpec | None:
    """A scaling policy read from Nomad -> a TargetSpec, or None when the policy is not ours.

    Not ours: another type than horizontal, no policy body (bounds only), or a Nomad Autoscaler
    policy (check/target/strategy blocks). Ours but wrong (unknown key, bad value, min > max): a
    TargetSpec carrying `error`, so the mistake is visible on /metrics and in the log.
    """
    if (policy.get("Type") or HORIZONTAL) != HORIZONTAL:
        return None
    body = dict(policy.get("Policy") or {})
    if not body or FOREIGN_KEYS & body.keys():
        return None
    tgt = policy.get("Target") or {}
    if not tgt.get("Job") or not tgt.get("Group"):
        return None
    target = Target(job=str(tgt["Job"]), group=str(tgt["Group"]),
                    namespace=str(tgt.get("Namespace") or policy.get("Namespace") or "default"))
    base = dict(policy_id=str(policy["ID"]), target=target, enabled=bool(policy.get("Enabled", True)),
                modify_index=int(policy.get("ModifyIndex") or 0))
    try:
        scaling = ScalingSpec(enabled=True, min=int(policy.get("Min") or 0),
                              max=int(policy.get("Max") or 0), policy=ScalingPolicySpec.model_validate(body))
        config = ScalingPolicyConfig.from_spec(scaling)
    except ValidationError as exc:
        return TargetSpec(**base, error=_field_error(exc))
    except ValueError as exc:
        return TargetSpec(**base, error=f"policy: {exc}")
    return TargetSpec(**base, config=config)


def _relevant(stub: Mapping[str, Any]) -> bool:
    return (stub.get("Type") or HORIZONTAL) == HORIZONTAL and bool(stub.get("ID"))


@dataclass(frozen=True)
class TargetChanges:
    added: tuple[TargetSpec, ...] = ()
    changed: tuple[TargetSpec, ...] = ()
    removed: tuple[TargetSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass
class TargetSet:
    """The policies seen so far and the targets they make; fed by the agent's policy watcher."""

    targets: dict[str, TargetSpec] = field(default_factory=dict)  # policy ID -> ours
    _seen: dict[str, int] = field(default_factory=dict)  # policy ID -> ModifyIndex read (ours or not)

    def to_read(self, stubs: Iterable[Mapping[str, Any]]) -> list[str]:
        """IDs of listed policies that are new or modified since we last read them."""
        return [str(s["ID"]) for s in stubs if _relevant(s)
                and self._seen.get(str(s["ID"])) != int(s.get("ModifyIndex") or 0)]

    def update(self, stubs: Iterable[Mapping[str, Any]],
               read: Mapping[str, Mapping[str, Any] | None]) -> TargetChanges:
        """Apply one listing plus the policies read for `to_read(stubs)` (None: gone meanwhile)."""
        listed = {str(s["ID"]): s for s in stubs if _relevant(s)}
        added: list[TargetSpec] = []
        changed: list[TargetSpec] = []
        removed: list[TargetSpec] = []
        for pid, body in read.items():
            if pid not in listed:
                continue
            self._seen[pid] = int(listed[pid].get("ModifyIndex") or 0)
            new = parse_policy(body) if body is not None else None
            old = self.targets.get(pid)
            if new is None:
                if old is not None:
                    removed.append(self.targets.pop(pid))
                continue
            self.targets[pid] = new
            if old is None:
                added.append(new)
            elif (old.config, old.enabled, old.error, old.target) != (new.config, new.enabled, new.error, new.target):
                changed.append(new)
        for pid in [p for p in self.targets if p not in listed]:
            removed.append(self.targets.pop(pid))
        for pid in [p for p in self._seen if p not in listed]:
            del self._seen[pid]
        return TargetChanges(tuple(added), tuple(changed), tuple(removed))
