"""canonicalize_job: Nomad's api Canonicalize defaults, job->group merges, idempotence, no mutation."""

from __future__ import annotations

import copy

import pytest

from nomad_triton.devcluster.canonical import (
    canonicalize_job,
    default_reschedule,
    default_restart,
    default_update,
)
from nomad_triton.devcluster.hclparse import parse_job_hcl

S = 10**9


def _job(job_type: str | None = None, **group: object) -> dict:
    job: dict = {"ID": "j", "TaskGroups": [{"Name": "g", "Tasks": [{"Name": "t", "Driver": "raw_exec"}], **group}]}
    if job_type:
        job["Type"] = job_type
    return job


def test_job_defaults() -> None:
    j = canonicalize_job({"ID": "web", "TaskGroups": []})
    assert j["Name"] == "web"
    assert (j["Region"], j["Namespace"], j["Type"], j["Priority"]) == ("global", "default", "service", 50)
    assert (j["NodePool"], j["Datacenters"], j["AllAtOnce"], j["Stop"]) == ("default", ["*"], False, False)
    assert j["Update"] == default_update()


def test_update_defaults_values() -> None:
    assert default_update() == {"Stagger": 30 * S, "MaxParallel": 1, "HealthCheck": "checks",
                                "MinHealthyTime": 10 * S, "HealthyDeadline": 300 * S, "ProgressDeadline": 600 * S,
                                "AutoRevert": False, "AutoPromote": False, "Canary": 0}


def test_job_update_merges_into_group_update() -> None:
    job = _job(Update={"Canary": 1})
    job["Update"] = {"MaxParallel": 3, "AutoRevert": True}
    g = canonicalize_job(job)["TaskGroups"][0]
    assert g["Update"] == {**default_update(), "MaxParallel": 3, "AutoRevert": True, "Canary": 1}


def test_batch_job_has_no_update_and_batch_policies() -> None:
    j = canonicalize_job(_job("batch"))
    g = j["TaskGroups"][0]
    assert "Update" not in j and "Update" not in g
    assert g["RestartPolicy"] == {"Attempts": 3, "Interval": 24 * 3600 * S, "Delay": 15 * S, "Mode": "fail",
                                  "RenderTemplates": False}
    assert g["ReschedulePolicy"] == {"Attempts": 1, "Interval": 24 * 3600 * S, "Delay": 5 * S,
                                     "DelayFunction": "constant", "MaxDelay": 0, "Unlimited": False}
    assert "Migrate" not in g


@pytest.mark.parametrize(
    ("job_type", "restart_attempts", "reschedule"),
    [
        ("service", 2, {"Attempts": 0, "Interval": 0, "Delay": 30 * S, "DelayFunction": "exponential",
                        "MaxDelay": 3600 * S, "Unlimited": True}),
        ("system", 2, None),
        ("sysbatch", 3, default_reschedule("sysbatch")),
    ],
)
def test_policies_per_job_type(job_type: str, restart_attempts: int, reschedule: dict | None) -> None:
    g = canonicalize_job(_job(job_type))["TaskGroups"][0]
    assert g["RestartPolicy"]["Attempts"] == restart_attempts
    assert g.get("ReschedulePolicy") == reschedule


def test_group_and_task_restart_merge() -> None:
    job = _job(RestartPolicy={"Attempts": 7})
    job["TaskGroups"][0]["Tasks"][0]["RestartPolicy"] = {"Mode": "delay"}
    g = canonicalize_job(job)["TaskGroups"][0]
    assert g["RestartPolicy"] == {**default_restart("service"), "Attempts": 7}
    assert g["Tasks"][0]["RestartPolicy"] == {**default_restart("service"), "Attempts": 7, "Mode": "delay"}


def test_group_task_resource_and_service_defaults() -> None:
    job = _job(Services=[{"PortLabel": "http", "Checks": [{"Type": "http", "Path": "/"}]}],
               Networks=[{"DynamicPorts": [{"Label": "http", "Value": 0, "To": 0, "HostNetwork": ""}]}],
               Scaling={"Max": 5})
    job["TaskGroups"][0]["Tasks"][0]["Resources"] = {"Devices": [{"Name": "nvidia/gpu"}]}
    job["TaskGroups"][0]["Tasks"][0]["Templates"] = [{"EmbeddedTmpl": "x", "ChangeMode": "signal"}]
    job["TaskGroups"][0]["Tasks"][0]["Artifacts"] = [{"GetterSource": "https://h/m.onnx", "GetterMode": "file"}]
    g = canonicalize_job(job)["TaskGroups"][0]
    t = g["Tasks"][0]
    assert g["Count"] == 1
    assert g["Scaling"] == {"Max": 5, "Min": 1, "Enabled": True, "Type": "horizontal"}
    assert g["EphemeralDisk"] == {"Sticky": False, "Migrate": False, "SizeMB": 300}
    assert g["Networks"][0]["Mode"] == "host"
    svc = g["Services"][0]
    assert (svc["Name"], svc["Provider"], svc["AddressMode"], svc["OnUpdate"]) == (
        "j-g", "consul", "auto", "require_healthy")
    assert svc["Checks"][0]["Name"] == 'service: "j-g" check'
    assert t["Resources"] == {"CPU": 100, "Cores": 0, "MemoryMB": 300, "Devices": [{"Name": "nvidia/gpu", "Count": 1}]}
    assert t["KillTimeout"] == 5 * S
    assert t["LogConfig"] == {"MaxFiles": 10, "MaxFileSizeMB": 10, "Disabled": False}
    assert t["Templates"][0]["ChangeSignal"] == "SIGHUP" and t["Templates"][0]["Splay"] == 5 * S
    assert t["Artifacts"][0]["RelativeDest"] == "local/m.onnx"


def test_count_defaults_to_scaling_min() -> None:
    g = canonicalize_job(_job(Scaling={"Min": 3, "Max": 5}))["TaskGroups"][0]
    assert g["Count"] == 3


def test_explicit_values_are_kept() -> None:
    job = _job(Count=0, EphemeralDisk={"SizeMB": 10})
    job.update(Region="eu", Priority=90, NodePool="gpu", Datacenters=["dc9"])
    j = canonicalize_job(job)
    assert (j["Region"], j["Priority"], j["NodePool"], j["Datacenters"]) == ("eu", 90, "gpu", ["dc9"])
    assert j["TaskGroups"][0]["Count"] == 0
    assert j["TaskGroups"][0]["EphemeralDisk"]["SizeMB"] == 10


FULL_HCL = """
job "web" {
  update {
    max_parallel = 2
  }
  reschedule {
    attempts = 4
  }
  migrate {
    max_parallel = 2
  }
  affinity {
    attribute = "${node.class}"
    value     = "gpu"
  }
  group "g" {
    scaling {
      min = 2
      max = 4
    }
    network {
      port "http" {}
    }
    service {
      port = "http"
      check_restart {
        limit = 3
      }
      check {
        type     = "http"
        path     = "/"
        interval = "5s"
        timeout  = "1s"
      }
    }
    task "t" {
      driver = "raw_exec"
      resources {
        cores = 2
      }
      template {
        data          = "x"
        change_mode   = "signal"
        change_signal = "sighup"
      }
      artifact {
        source = "https://h/x.tgz"
      }
      lifecycle {
        sidecar = true
      }
      service {
        port = "http"
      }
    }
  }
}
"""


def test_idempotent_and_pure_on_a_full_job() -> None:
    raw = parse_job_hcl(FULL_HCL)
    before = copy.deepcopy(raw)
    once = canonicalize_job(raw)
    assert raw == before, "canonicalize_job must not mutate its input"
    assert canonicalize_job(once) == once
    assert once != raw
    g = once["TaskGroups"][0]
    assert g["Count"] == 2 and g["Update"]["MaxParallel"] == 2
    assert g["ReschedulePolicy"]["Attempts"] == 4 and g["ReschedulePolicy"]["Unlimited"] is True
    assert g["Migrate"] == {"MaxParallel": 2, "HealthCheck": "checks", "MinHealthyTime": 10 * S,
                            "HealthyDeadline": 300 * S}
    assert once["Affinities"][0]["Weight"] == 50
    assert g["Services"][0]["Checks"][0]["CheckRestart"] == {"Limit": 3, "Grace": 1 * S, "IgnoreWarnings": False}
    t = g["Tasks"][0]
    assert t["Resources"]["CPU"] == 0 and t["Resources"]["Cores"] == 2
    assert t["Templates"][0]["ChangeSignal"] == "SIGHUP"
    assert t["Artifacts"][0]["RelativeDest"] == "local/"
    assert "Lifecycle" not in t, "a lifecycle without a hook is dropped, as Nomad does"
    assert t["Services"][0]["Name"] == "web-g-t"


@pytest.mark.parametrize("job_type", ["service", "batch", "system", "sysbatch"])
def test_idempotent_per_type(job_type: str) -> None:
    once = canonicalize_job(_job(job_type))
    assert canonicalize_job(once) == once


# What Go's api.Job marshals to (the nomad CLI, Terraform, Go clients): unset pointers are null,
# non-pointer fields carry zero values.
GO_CLIENT_JOB = {
    "ID": "web", "Name": None, "Region": None, "Namespace": None, "Type": None, "Priority": None,
    "AllAtOnce": None, "Datacenters": None, "NodePool": None, "Constraints": None, "Affinities": None,
    "Update": None, "Spreads": None, "Meta": None, "Stop": None, "Reschedule": None, "Migrate": None,
    "TaskGroups": [{
        "Name": "g", "Count": None, "Constraints": None, "Affinities": None, "Spreads": None,
        "RestartPolicy": None, "ReschedulePolicy": None, "EphemeralDisk": None, "Update": None,
        "Migrate": None, "Networks": None, "Meta": None, "Services": None, "Scaling": None,
        "Tasks": [{
            "Name": "t", "Driver": "raw_exec", "User": "", "Config": {"command": "/bin/true"},
            "Constraints": None, "Env": None, "Services": None, "Resources": None, "RestartPolicy": None,
            "Meta": None, "KillTimeout": None, "LogConfig": None, "Artifacts": None, "Templates": None,
            "Leader": False, "ShutdownDelay": 0, "KillSignal": "", "Kind": "", "Lifecycle": None,
        }],
    }],
}


def test_nulls_from_go_clients_count_as_unset() -> None:
    from nomad_triton.devcluster.validate import validate_job

    j = canonicalize_job(GO_CLIENT_JOB)
    assert (j["Name"], j["Region"], j["Type"], j["Priority"], j["NodePool"]) == ("web", "global", "service", 50,
                                                                                 "default")
    g = j["TaskGroups"][0]
    assert g["Count"] == 1 and g["Update"] == default_update()
    assert g["Tasks"][0]["Resources"]["MemoryMB"] == 300 and g["Tasks"][0]["KillTimeout"] == 5 * S
    assert canonicalize_job(j) == j
    assert validate_job(GO_CLIENT_JOB) == ([], [])
