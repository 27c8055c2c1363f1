"""The agent's target set as Nomad's scaling policies appear, change, are disabled and vanish (pure)."""

from __future__ import annotations

from typing import Any

from nomad_triton.autoscale.core import seed_state
from nomad_triton.autoscale.targets import TargetSet, parse_policy
from nomad_triton.render import template_context
from nomad_triton.spec.durations import format_duration
from nomad_triton.spec.models import DeploymentSpec

OURS = {"evaluation_interval": "500ms", "window": "3s", "target_utilization": 0.7, "tolerance": 0.1,
        "cooldown_up": "1s", "cooldown_down": "3s", "max_step_up": 8}


def policy(pid: str, job: str, *, index: int = 10, enabled: bool = True, body: dict[str, Any] | None = None,
           lo: int = 1, hi: int = 3, kind: str = "horizontal") -> dict[str, Any]:
    return {"ID": pid, "Namespace": "default", "Type": kind, "Enabled": enabled,
            "Target": {"Namespace": "default", "Job": job, "Group": "triton"},
            "Min": lo, "Max": hi, "Policy": OURS if body is None else body, "CreateIndex": 5, "ModifyIndex": index}


def stub(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p[k] for k in ("ID", "Type", "Enabled", "Target", "CreateIndex", "ModifyIndex")}


def step(ts: TargetSet, policies: list[dict[str, Any]], gone: frozenset[str] = frozenset()):
    """One watcher round: list, read what is new or modified (404 for `gone`), apply."""
    stubs = [stub(p) for p in policies]
    by_id = {p["ID"]: p for p in policies}
    ids = ts.to_read(stubs)
    return ids, ts.update(stubs, {i: (None if i in gone else by_id[i]) for i in ids})


def test_the_rendered_scaling_block_is_a_policy_the_agent_reads() -> None:
    # What the template renders into the job's scaling block is what Nomad hands back as Policy.
    spec = DeploymentSpec.model_validate({"name": "a", "driver": {"type": "raw_exec", "command": "x"},
                           "model_repository": {"path": "/m", "models": ["m"]}, "count": 2,
                           "scaling": {"enabled": True, "min": 1, "max": 4,
                                       "policy": {"evaluation_interval": "2s", "cooldown_down": "45s"}}})
    body = template_context(spec)["policy"]
    rendered = {k: (format_duration(v) if hasattr(v, "total_seconds") else v) for k, v in body.items()}
    spec_t = parse_policy(policy("p", "a", body=rendered, lo=1, hi=4))
    assert spec_t is not None and spec_t.error is None and spec_t.active
    assert spec_t.config.interval_s == 2.0 and spec_t.config.down_cooldown_s == 45.0
    assert (spec_t.config.min_count, spec_t.config.max_count) == (1, 4)
    assert spec_t.target.key == "default/a/triton"


def test_new_policy_is_added_and_an_unchanged_listing_reads_nothing() -> None:
    ts = TargetSet()
    ids, ch = step(ts, [policy("p1", "a")])
    assert ids == ["p1"] and [s.target.job for s in ch.added] == ["a"] and not ch.changed and not ch.removed
    ids, ch = step(ts, [policy("p1", "a")])
    assert ids == [] and not ch
    ids, ch = step(ts, [policy("p1", "a"), policy("p2", "b")])
    assert ids == ["p2"] and [s.target.job for s in ch.added] == ["b"]
    assert set(ts.targets) == {"p1", "p2"}


def test_changed_policy_is_a_change_and_an_index_bump_alone_is_not() -> None:
    ts = TargetSet()
    step(ts, [policy("p1", "a")])
    ids, ch = step(ts, [policy("p1", "a", index=11)])  # e.g. the job was scaled: same policy
    assert ids == ["p1"] and not ch
    ids, ch = step(ts, [policy("p1", "a", index=12, body={**OURS, "cooldown_down": "9s"}, hi=5)])
    assert [s.config.down_cooldown_s for s in ch.changed] == [9.0]
    assert ts.targets["p1"].config.max_count == 5


def test_disabled_policy_stays_known_but_inactive_and_comes_back() -> None:
    ts = TargetSet()
    step(ts, [policy("p1", "a")])
    _, ch = step(ts, [policy("p1", "a", index=11, enabled=False)])
    assert len(ch.changed) == 1 and not ch.changed[0].active and not ch.removed
    _, ch = step(ts, [policy("p1", "a", index=12, enabled=True)])
    assert ch.changed[0].active


def test_stopped_job_policy_vanishes_from_the_list_and_is_removed() -> None:
    ts = TargetSet()
    step(ts, [policy("p1", "a"), policy("p2", "b")])
    _, ch = step(ts, [policy("p2", "b")])
    assert [s.policy_id for s in ch.removed] == ["p1"] and set(ts.targets) == {"p2"}
    # Started again: Nomad re-creates the policy; it is a new target.
    _, ch = step(ts, [policy("p2", "b"), policy("p1", "a", index=20)])
    assert [s.policy_id for s in ch.added] == ["p1"]


def test_policy_listed_then_gone_before_it_is_read_is_not_a_target() -> None:
    ts = TargetSet()
    ids, ch = step(ts, [policy("p1", "a")], gone=frozenset({"p1"}))
    assert ids == ["p1"] and not ch and not ts.targets


def test_unread_policy_is_read_again_next_round() -> None:
    ts = TargetSet()
    stubs = [stub(policy("p1", "a"))]
    assert ts.to_read(stubs) == ["p1"]
    assert not ts.update(stubs, {})  # the read failed
    assert ts.to_read(stubs) == ["p1"]


def test_foreign_and_bounds_only_policies_are_not_ours() -> None:
    nomad_autoscaler = {"evaluation_interval": "10s", "cooldown": "1m",
                        "check": [{"avg_cpu": [{"source": "prometheus", "query": "x"}]}]}
    ts = TargetSet()
    _, ch = step(ts, [policy("na", "x", body=nomad_autoscaler), policy("bounds", "y", body={}),
                      policy("vert", "z", kind="vertical_mem")])
    assert not ch and not ts.targets
    assert ts.to_read([stub(policy("na", "x", body=nomad_autoscaler))]) == []  # not re-read every round


def test_invalid_policy_is_a_visible_inactive_target_naming_the_field() -> None:
    ts = TargetSet()
    _, ch = step(ts, [policy("p1", "a", body={**OURS, "cooldown_up": "soon"}),
                      policy("p2", "b", body={**OURS, "target_utilisation": 0.5}),
                      policy("p3", "c", lo=4, hi=2)])
    errors = {s.target.job: s.error for s in ch.added}
    assert all(not s.active for s in ch.added)
    assert "cooldown_up" in errors["a"] and "'soon'" in errors["a"]
    assert "target_utilisation" in errors["b"] and "unknown key" in errors["b"]
    assert "min" in errors["c"]


def test_seed_state_continues_cooldowns_from_our_own_scaling_events() -> None:
    now_ns = 1_700_000_000 * 10**9
    events = [
        {"Time": now_ns - 5 * 10**9, "Count": 3, "Meta": {"nomad_triton.policy": "nomad-triton",
                                                          "nomad_triton.direction": "up"}},
        {"Time": now_ns - 2 * 10**9, "Count": None, "Meta": {"nomad_triton.policy": "nomad-triton",
                                                             "nomad_triton.direction": "down"}},  # dry run
        {"Time": now_ns - 1 * 10**9, "Count": 1, "Meta": {}},  # a person's `nomad job scale`
    ]
    st = seed_state({"Events": events}, desired=3)
    assert st.desired == 3 and st.last_up_at == now_ns / 1e9 - 5 and st.last_down_at is None
    assert st.last_direction == "up"
    assert seed_state({"Events": None}, desired=2).last_up_at is None
