"""Rendered HCL through a running devcluster: POST /v1/jobs/parse (python-nomad) and /v1/validate/job.

Why end to end: the escaping filter is right only if a server parsing the job the way Nomad does
returns every tricky user value unchanged, with runtime interpolations still literal for the
client, and the server's job validation accepts what `render` produces.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from nomad_triton.render import render_job
from nomad_triton.spec import DeploymentSpec, load_spec

from .conftest import Devcluster, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

TRICKY = [
    'say "hi"',
    "back\\slash\\",
    "line1\nline2\ttab\r",
    "${NOMAD_PORT_http} ${attr.unique.hostname}",
    "$${already-escaped}",
    "%{ if true }x%{ endif } %%{y}",
    "unicode 日本語 ünïcødé 🚀",
    "ends with $",
    "ctl \x01",
]


def tricky_spec() -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": "tricky",
            "driver": {"type": "raw_exec", "command": "/opt/bin/nomad-triton", "args": TRICKY},
            "model_repository": {"path": "/srv/m ${x}", "models": ["m1", "m.2"]},
            "gpus": {"count": 1, "min_memory": "16 GiB", "model": 'A100|"H"${x}', "preferred_model": "H100"},
            "scaling": {"enabled": True, "min": 1, "max": 5},
            "rollout": {"canary": 1, "auto_promote": True, "min_healthy_time": "1m30s"},
            "env": {f"V{i}": v for i, v in enumerate(TRICKY)},
            "meta": {f"k.{i}": v for i, v in enumerate(TRICKY)},
        }
    )


def _task(job: dict[str, Any]) -> dict[str, Any]:
    (group,) = job["TaskGroups"]
    (task,) = group["Tasks"]
    return task


def test_rendered_jobs_round_trip_through_the_server(devcluster: Devcluster) -> None:
    n = devcluster.nomad()
    spec = tricky_spec()
    job = n.jobs.parse(render_job(spec))

    task = _task(job)
    assert task["Config"]["args"] == TRICKY
    assert {k: task["Env"][k] for k in spec.env} == spec.env
    assert task["Env"]["NOMAD_TRITON_MODEL_REPOSITORY"] == "/srv/m ${x}"
    assert job["Meta"] == spec.meta
    (device,) = task["Resources"]["Devices"]
    constraints = {c["LTarget"]: (c["Operand"], c["RTarget"]) for c in device["Constraints"]}
    assert constraints == {
        "${device.attr.memory}": (">=", "16 GiB"),
        "${device.model}": ("regexp", 'A100|"H"${x}'),
    }
    (group,) = job["TaskGroups"]
    assert group["Update"]["MinHealthyTime"] == 90 * 10**9 and group["Update"]["AutoPromote"] is True
    assert (group["Scaling"]["Min"], group["Scaling"]["Max"]) == (1, 5)
    paths = [c["Path"] for s in group["Services"] for c in (s.get("Checks") or [])]
    assert paths == ["/v2/health/ready", "/v2/models/m1/ready", "/v2/models/m.2/ready"]

    verdict = n.validate.validate_job({"Job": job}).json()  # python-nomad hands back the raw response here
    assert not verdict.get("ValidationErrors") and not verdict.get("Error"), verdict

    example = n.jobs.parse(render_job(load_spec(ROOT / "jobs" / "cpu-example.toml")), canonicalize=True)
    assert example["ID"] == "triton-cpu" and _task(example)["Driver"] == "raw_exec"
    verdict = n.validate.validate_job({"Job": example}).json()
    assert not verdict.get("ValidationErrors") and not verdict.get("Error"), verdict


def test_cpu_example_deploys_healthy_on_devcluster(devcluster: Devcluster) -> None:
    """jobs/cpu-example.toml as rendered: real `nomad-triton serve` allocation, checks pass, model ready."""
    command = str(Path(sys.executable).parent / "nomad-triton")  # independent of the devcluster's PATH
    spec = load_spec(
        ROOT / "jobs" / "cpu-example.toml",
        sets=[f"driver.command={command}", 'health.interval="1s"', 'health.timeout="1s"'],
    )
    n = devcluster.nomad()
    job = n.jobs.parse(render_job(spec))
    n.jobs.register_job({"Job": job})

    def deployed() -> str | None:
        deps = n.job.get_deployments(spec.name)
        status = deps[0]["Status"] if deps else None
        return status if status in ("successful", "failed") else None

    assert wait_until(deployed, 240, "the cpu example's deployment to finish", interval=1.0) == "successful"
    devcluster.remember_groups()  # teardown then proves serve and tritonserver are gone
    with devcluster.http() as http:
        (svc,) = http.get(f"/v1/service/{spec.service_name}").json()
    base = f"http://{svc['Address']}:{svc['Port']}"
    for model in spec.model_repository.models:
        assert httpx.get(f"{base}/v2/models/{model}/ready", timeout=5).status_code == 200
    n.job.deregister_job(spec.name, purge=True)
