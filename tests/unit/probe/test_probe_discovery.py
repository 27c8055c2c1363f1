"""Endpoint discovery from allocation JSON shaped as Nomad returns it (pure data, no network)."""

from __future__ import annotations

from typing import Any

from nomad_triton.probe.discovery import alloc_ports, job_endpoints


def _alloc(aid: str, http: int, metrics: int, group: str = "triton") -> dict[str, Any]:
    return {
        "ID": aid, "TaskGroup": group,
        "AllocatedResources": {"Shared": {"Ports": [
            {"Label": "http", "Value": http, "To": 0, "HostIP": "127.0.0.1"},
            {"Label": "metrics", "Value": metrics, "To": 0, "HostIP": "127.0.0.1"},
        ]}},
    }


class FakeNomad:
    def __init__(self) -> None:
        self.allocs = {
            "a1": _alloc("a1", 1001, 2001),
            "a2": _alloc("a2", 1002, 2002, group="other"),
            "a3": _alloc("a3", 1003, 2003),
            "a4": _alloc("a4", 1004, 2004),
        }
        self.stubs = [
            {"ID": "a1", "TaskGroup": "triton", "DesiredStatus": "run", "ClientStatus": "running"},
            {"ID": "a2", "TaskGroup": "other", "DesiredStatus": "run", "ClientStatus": "running"},
            {"ID": "a3", "TaskGroup": "triton", "DesiredStatus": "stop", "ClientStatus": "complete"},
            {"ID": "a4", "TaskGroup": "triton", "DesiredStatus": "run", "ClientStatus": "pending"},
        ]

    def job_allocations(self, job_id: str, all_versions: bool = False) -> list[dict[str, Any]]:
        return self.stubs

    def allocation(self, alloc_id: str) -> dict[str, Any]:
        return self.allocs[alloc_id]


def test_running_and_pending_allocations_of_the_group() -> None:
    eps = job_endpoints(FakeNomad(), "job", group="triton", models=("m",))
    assert [(e.alloc_id, e.http, e.metrics, e.models) for e in eps] == [
        ("a1", "127.0.0.1:1001", "127.0.0.1:2001", ("m",)),
        ("a4", "127.0.0.1:1004", "127.0.0.1:2004", ("m",)),
    ]


def test_legacy_network_ports() -> None:
    alloc = {"Resources": {"Networks": [{"IP": "10.0.0.5", "DynamicPorts": [{"Label": "http", "Value": 25000}]}]}}
    assert alloc_ports(alloc) == {"http": "10.0.0.5:25000"}
