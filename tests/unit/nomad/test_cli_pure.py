"""Pure helpers behind the commands: diff rendering, scale arithmetic, rollback target, canary inputs."""

from __future__ import annotations

import numpy as np
import pytest

from nomad_triton.cli.connection import settings_from_flags
from nomad_triton.cli.rollback import last_stable
from nomad_triton.cli.scale import bounds, resolve_group, target_count
from nomad_triton.cli.status import alloc_gpus, job_models
from nomad_triton.nomad.canary import alloc_http_address, sample_inputs
from nomad_triton.nomad.diff import allocation_changes, render_diff, render_updates

DIFF = {
    "Type": "Edited", "ID": "web",
    "Fields": [{"Type": "Edited", "Name": "Priority", "Old": "50", "New": "60", "Annotations": None},
               {"Type": "None", "Name": "Region", "Old": "global", "New": "global"}],
    "Objects": None,
    "TaskGroups": [{
        "Type": "Edited", "Name": "triton", "Updates": {"create/destroy update": 1},
        "Fields": [{"Type": "Edited", "Name": "Count", "Old": "1", "New": "2", "Annotations": ["forces create"]}],
        "Objects": [{"Type": "Added", "Name": "Update", "Fields": [
            {"Type": "Added", "Name": "Canary", "Old": "", "New": "1"}], "Objects": None}],
        "Tasks": [{"Type": "Edited", "Name": "server", "Annotations": ["forces create/destroy update"],
                   "Fields": [{"Type": "Deleted", "Name": "Env[A]", "Old": "x", "New": ""}], "Objects": None}],
    }],
}


def test_render_diff_marks_changes_and_hides_unchanged() -> None:
    lines = render_diff(DIFF)
    assert lines[0] == '+/- Job: "web"'
    assert '  +/- Priority: "50" => "60"' in lines
    assert not any("Region" in line for line in lines)
    assert '+/- Task Group: "triton" (1 create/destroy update)' in lines
    assert '    +/- Count: "1" => "2" (forces create)' in lines
    assert '    + Update {' in lines and '      + Canary: "1"' in lines
    assert '    +/- Task: "server" (forces create/destroy update)' in lines
    assert '      - Env[A]: "x"' in lines
    assert any("Region" in line for line in render_diff(DIFF, verbose=True))
    assert render_diff({"Type": "None", "ID": "web"}) == ['  Job: "web" (no changes)']


def test_plan_updates_and_exit_condition() -> None:
    assert allocation_changes({"triton": {"Place": 1, "Ignore": 0}})
    assert not allocation_changes({"triton": {"Ignore": 2, "InPlaceUpdate": 0}})
    assert render_updates({"triton": {"Place": 1, "Ignore": 2}}) == ["  triton: 1 create, 2 ignore"]


def test_scale_target_count() -> None:
    assert target_count(2, "5") == 5
    assert target_count(2, "+3") == 5
    assert target_count(2, "-1") == 1
    assert target_count(1, "-4") == 0
    with pytest.raises(ValueError, match="COUNT must be"):
        target_count(1, "two")


def test_scale_group_and_bounds() -> None:
    job = {"TaskGroups": [{"Name": "triton", "Scaling": {"Min": 1, "Max": 3}}]}
    assert resolve_group(job, None) == "triton"
    assert bounds(job, "triton") == (1, 3)
    with pytest.raises(ValueError, match="no group 'x'"):
        resolve_group(job, "x")
    two = {"TaskGroups": [{"Name": "a"}, {"Name": "b"}]}
    with pytest.raises(ValueError, match="name one"):
        resolve_group(two, None)
    assert bounds(two, "a") == (None, None)


def test_last_stable_skips_newer_and_unstable() -> None:
    versions = [{"Version": 3, "Stable": False}, {"Version": 2, "Stable": False},
                {"Version": 1, "Stable": True}, {"Version": 0, "Stable": True}]
    assert last_stable(versions, 3)["Version"] == 1
    assert last_stable(versions, 1)["Version"] == 0
    assert last_stable(versions, 0) is None


def test_connection_flags_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOMAD_ADDR", "http://env:4646")
    monkeypatch.setenv("NOMAD_TOKEN", "env-token")
    s = settings_from_flags({"address": "https://flag:4646", "token": None, "tls_skip_verify": False})
    assert s.address == "https://flag:4646" and s.token == "env-token" and s.verify() is True
    assert settings_from_flags({"tls_skip_verify": True}).verify() is False


def test_alloc_address_gpus_and_job_models() -> None:
    alloc = {"AllocatedResources": {
        "Shared": {"Ports": [{"Label": "grpc", "Value": 2}, {"Label": "http", "Value": 8123, "HostIP": "127.0.0.1"}]},
        "Tasks": {"server": {"Devices": [{"Vendor": "nvidia", "Type": "gpu", "DeviceIDs": ["GPU-1"]}]}}}}
    assert alloc_http_address(alloc) == "127.0.0.1:8123"
    legacy = {"Resources": {"Networks": [{"IP": "10.0.0.2", "DynamicPorts": [{"Label": "http", "Value": 9}]}]}}
    assert alloc_http_address(legacy) == "10.0.0.2:9"
    assert alloc_http_address({}) is None
    assert alloc_gpus(alloc) == ["nvidia/gpu/GPU-1"]
    job = {"TaskGroups": [{"Services": [{"Checks": [{"Path": "/v2/health/ready"}, {"Path": "/v2/models/mlp/ready"},
                                                    {"Path": "/v2/models/relu_onnx/ready"}]}]}]}
    assert job_models(job) == ["mlp", "relu_onnx"]


def test_sample_inputs_from_metadata() -> None:
    inputs = sample_inputs({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 16]}]})
    assert inputs is not None
    [(name, dtype, arr)] = inputs
    assert name == "x" and dtype == "FP32" and arr.shape == (1, 16) and arr.dtype == np.float32
    assert sample_inputs({"inputs": [{"name": "x", "datatype": "WEIRD", "shape": [1]}]}) is None
    assert sample_inputs({"inputs": []}) is None
