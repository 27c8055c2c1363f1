"""The agent's stall detection and the cluster view's endpoint table (pure logic, no network)."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from nomad_triton.autoscale.agent import Agent, AgentSettings, _kind, _Runner
from nomad_triton.autoscale.cluster import group_endpoints
from nomad_triton.autoscale.core import GroupScaler
from nomad_triton.autoscale.targets import parse_policy
from nomad_triton.nomad.client import NomadClient

POLICY = {"ID": "p1", "Type": "horizontal", "Enabled": True, "Min": 1, "Max": 3, "ModifyIndex": 5,
          "Target": {"Namespace": "default", "Job": "a", "Group": "triton"},
          "Policy": {"evaluation_interval": "2s"}}


def agent_with(*policies: dict) -> Agent:
    # Nothing here talks to Nomad: the address is never dialled.
    agent = Agent(NomadClient.from_env(address="http://127.0.0.1:9"), AgentSettings(lock_path=None))
    for p in policies:
        spec = parse_policy(p)
        assert spec is not None
        scaler = GroupScaler(agent.client, spec.target, spec.config, agent.source)
        agent.runners[spec.policy_id] = _Runner(spec, scaler)
    return agent


def test_a_target_not_evaluated_for_three_intervals_fails_health() -> None:
    agent = agent_with(POLICY, {**POLICY, "ID": "p2", "Target": {"Job": "b", "Group": "triton"}})
    now = time.monotonic()
    agent.runners["p1"].last_eval = now - 1.0  # fresh
    agent.runners["p2"].last_eval = now - 7.0  # 3.5 intervals of 2 s
    ok, detail = agent.health()
    assert not ok and detail["status"] == "stalled"
    assert [s["target"] for s in detail["stalled"]] == ["default/b/triton"]
    age = [line for line in generate_latest(agent.registry).decode().splitlines()
           if line.startswith("nomad_triton_agent_last_evaluation_age_seconds{") and 'job="b"' in line]
    assert age and float(age[0].rsplit(" ", 1)[1]) >= 7.0
    agent.runners["p2"].last_eval = time.monotonic()
    assert agent.health()[0]


def test_never_evaluated_counts_from_when_it_became_due_and_disabled_targets_do_not_count() -> None:
    agent = agent_with(POLICY, {**POLICY, "ID": "p2", "Enabled": False, "Target": {"Job": "b", "Group": "triton"}})
    agent.runners["p1"].since = time.monotonic() - 10
    agent.runners["p2"].since = time.monotonic() - 100
    ok, detail = agent.health()
    assert not ok and [s["target"] for s in detail["stalled"]] == ["default/a/triton"]
    agent.leading = False  # a standby evaluates nothing and is healthy while it waits
    assert agent.health()[0]


def test_group_endpoints_keeps_running_allocations_with_an_http_port() -> None:
    def alloc(aid: str, group: str = "triton", desired: str = "run", client: str = "running",
              ports: tuple[str, ...] = ("http", "metrics")) -> dict:
        return {"ID": aid, "JobID": "a", "TaskGroup": group, "DesiredStatus": desired, "ClientStatus": client,
                "AllocatedResources": {"Shared": {"Ports": [
                    {"Label": p, "Value": 8000 + i, "HostIP": "10.0.0.1"} for i, p in enumerate(ports)]}}}

    table = group_endpoints([alloc("b"), alloc("a", client="pending"), alloc("stop", desired="stop"),
                             alloc("done", client="complete"), alloc("noport", ports=("grpc",)),
                             alloc("other", group="g2")])
    assert [e.alloc_id for e in table[("a", "triton")]] == ["a", "b"]
    assert table[("a", "triton")][0].http == "10.0.0.1:8000" and table[("a", "triton")][0].metrics == "10.0.0.1:8001"
    assert [e.alloc_id for e in table[("a", "g2")]] == ["other"]


def test_repeated_holds_are_one_kind_of_reason() -> None:
    assert _kind("within band (load 0.43x target)") == _kind("within band (load 0.61x target)")
    assert _kind("within band (load 0.43x target)") != _kind("scale-in blocked: 1 unreachable")
