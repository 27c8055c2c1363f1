"""Rendered jobs through devcluster's server-side HCL parser (the /v1/jobs/parse code path).

Why here and not only against python-hcl2: the escaping filter is only correct if a parser that
follows Nomad's jobspec2 rules returns every tricky user value byte-for-byte, and leaves runtime
interpolations (${device.attr.memory}) as text for the client. The HTTP round trip via
/v1/jobs/parse is covered in tests/e2e once the devcluster fixture exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nomad_triton.devcluster.hclparse import parse_job_hcl
from nomad_triton.render import render_job
from nomad_triton.spec import DeploymentSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]

TRICKY = [
    'say "hi"',
    "back\\slash\\",
    "line1\nline2\ttab\r",
    "${NOMAD_PORT_http} and ${attr.unique.hostname}",
    "$${already-escaped}",
    "%{ if true }x%{ endif } %%{y}",
    "unicode 日本語 ünïcødé 🚀",
    "end with $",
]


def tricky_spec() -> DeploymentSpec:
    env = {f"V{i}": v for i, v in enumerate(TRICKY)}
    meta = {f"k.{i}": v for i, v in enumerate(TRICKY)}
    return DeploymentSpec.model_validate(
        {
            "name": "tricky",
            "driver": {"type": "raw_exec", "command": "/opt/bin/nomad-triton", "args": TRICKY},
            "model_repository": {"path": "/srv/m ${x}", "models": ["m1", "m.2"]},
            "gpus": {"count": 1, "min_memory": "16 GiB", "model": 'A100|"H"${x}', "preferred_model": "H100"},
            "scaling": {"enabled": True, "min": 1, "max": 5},
            "rollout": {"canary": 1, "auto_promote": True, "min_healthy_time": "1m30s"},
            "env": env,
            "meta": meta,
        }
    )


def _task(job: dict[str, Any]) -> dict[str, Any]:
    (group,) = job["TaskGroups"]
    (task,) = group["Tasks"]
    return task


def test_every_tricky_value_survives_the_server_side_parse() -> None:
    spec = tricky_spec()
    job = parse_job_hcl(render_job(spec))
    task = _task(job)
    assert task["Config"]["args"] == TRICKY
    assert task["Config"]["command"] == "/opt/bin/nomad-triton"
    for key, value in spec.env.items():
        assert task["Env"][key] == value
    assert task["Env"]["NOMAD_TRITON_MODEL_REPOSITORY"] == "/srv/m ${x}"
    assert (
        task["Env"]["PYTRITON_HOME"] == "/tmp/pytriton-${NOMAD_SHORT_ALLOC_ID}"
    )  # left for the client to fill in
    assert job["Meta"] == spec.meta
    (device,) = task["Resources"]["Devices"]
    constraints = {c["LTarget"]: c for c in device["Constraints"]}
    assert constraints["${device.attr.memory}"]["RTarget"] == "16 GiB"
    assert constraints["${device.attr.memory}"]["Operand"] == ">="
    assert constraints["${device.model}"]["RTarget"] == 'A100|"H"${x}'
    assert device["Affinities"][0]["RTarget"] == "H100"


def test_group_settings_arrive_as_nomad_api_fields() -> None:
    job = parse_job_hcl(render_job(tricky_spec()))
    (group,) = job["TaskGroups"]
    assert job["ID"] == "tricky" and job["Type"] == "service"
    assert group["Update"]["Canary"] == 1 and group["Update"]["AutoPromote"] is True
    assert group["Update"]["MinHealthyTime"] == 90 * 10**9
    assert group["Scaling"]["Min"] == 1 and group["Scaling"]["Max"] == 5
    checks = [c["Path"] for s in group["Services"] for c in (s.get("Checks") or [])]
    assert checks == ["/v2/health/ready", "/v2/models/m1/ready", "/v2/models/m.2/ready"]


@pytest.mark.parametrize("name", ["cpu-example.toml"])
def test_shipped_devcluster_example_parses(name: str) -> None:
    job = parse_job_hcl(render_job(load_spec(ROOT / "jobs" / name)), canonicalize=True)
    assert job["NodePool"] == "default" and _task(job)["Driver"] == "raw_exec"
