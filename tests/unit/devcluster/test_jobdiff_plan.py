"""diff_jobs / annotate_diff: Nomad's plan Diff shape, diff types and scheduler annotations."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from nomad_triton.devcluster.hclparse import parse_job_hcl
from nomad_triton.devcluster.jobdiff import (
    FORCES_CREATE,
    FORCES_DESTROY,
    FORCES_DESTRUCTIVE,
    FORCES_INPLACE,
    annotate_diff,
    diff_jobs,
)

BASE = """
job "web" {
  datacenters = ["dc1"]
  meta {
    owner = "ml"
  }
  group "api" {
    count = 2
    network {
      port "http" {
        to = 8000
      }
    }
    service {
      name     = "api"
      port     = "http"
      provider = "nomad"
      tags     = ["v1"]
    }
    task "server" {
      driver       = "raw_exec"
      kill_timeout = "5s"
      config {
        command = "/bin/serve"
        args    = ["--port", "${NOMAD_PORT_http}"]
      }
      env {
        MODEL = "a"
      }
      meta {
        rev = "1"
      }
      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
"""


@pytest.fixture
def base() -> dict:
    return parse_job_hcl(BASE)


def _tg(j: dict) -> dict:
    return j["TaskGroups"][0]


def _task(j: dict) -> dict:
    return j["TaskGroups"][0]["Tasks"][0]


def _changed(fields: list[dict] | None) -> list[dict]:
    return [f for f in fields or [] if f["Type"] != "None"]


def test_identical_jobs_diff_none(base: dict) -> None:
    d = diff_jobs(base, copy.deepcopy(base))
    assert d["Type"] == "None" and d["ID"] == "web"
    assert d["Objects"] is None and _changed(d["Fields"]) == []
    assert [(g["Type"], [t["Type"] for t in g["Tasks"]]) for g in d["TaskGroups"]] == [("None", ["None"])]
    assert d["TaskGroups"][0]["Tasks"][0]["Annotations"] is None


def test_new_job_is_added_with_count_forcing_create(base: dict) -> None:
    d = diff_jobs(None, base)
    assert d["Type"] == "Added"
    assert {"Type": "Added", "Name": "Priority", "Old": "", "New": "50", "Annotations": None} in d["Fields"]
    g = d["TaskGroups"][0]
    assert g["Type"] == "Added"
    count = next(f for f in g["Fields"] if f["Name"] == "Count")
    assert count == {"Type": "Added", "Name": "Count", "Old": "", "New": "2", "Annotations": [FORCES_CREATE]}
    assert g["Tasks"][0]["Type"] == "Added" and g["Tasks"][0]["Annotations"] == [FORCES_CREATE]


def test_count_change(base: dict) -> None:
    new = copy.deepcopy(base)
    _tg(new)["Count"] = 1
    d = diff_jobs(base, new, contextual=False)
    assert d["Type"] == "Edited"
    g = d["TaskGroups"][0]
    assert g["Type"] == "Edited"
    assert g["Fields"] == [{"Type": "Edited", "Name": "Count", "Old": "2", "New": "1", "Annotations": [FORCES_DESTROY]}]
    assert g["Tasks"][0]["Type"] == "None"


def _env(j: dict) -> None:
    _task(j)["Env"]["MODEL"] = "b"


def _config(j: dict) -> None:
    _task(j)["Config"]["args"][0] = "--listen"


def _driver(j: dict) -> None:
    _task(j)["Driver"] = "exec"


def _resources(j: dict) -> None:
    _task(j)["Resources"]["MemoryMB"] = 512


def _meta(j: dict) -> None:
    _task(j)["Meta"]["rev"] = "2"


def _kill_timeout(j: dict) -> None:
    _task(j)["KillTimeout"] = 30 * 10**9


def _task_service(j: dict) -> None:
    _task(j)["Services"] = [{"Name": "side", "PortLabel": "http", "Provider": "nomad"}]


def _task_log(j: dict) -> None:
    _task(j)["LogConfig"] = {"MaxFiles": 3}


@pytest.mark.parametrize(
    ("mutate", "annotation", "where"),
    [
        (_env, FORCES_DESTRUCTIVE, ("Fields", "Env[MODEL]")),
        (_config, FORCES_DESTRUCTIVE, ("Objects", "Config")),
        (_driver, FORCES_DESTRUCTIVE, ("Fields", "Driver")),
        (_resources, FORCES_DESTRUCTIVE, ("Objects", "Resources")),
        # Nomad's annotate.go: any primitive field but KillTimeout (Meta[...] included) is destructive.
        (_meta, FORCES_DESTRUCTIVE, ("Fields", "Meta[rev]")),
        (_kill_timeout, FORCES_INPLACE, ("Fields", "KillTimeout")),
        (_task_service, FORCES_INPLACE, ("Objects", "Service")),
        (_task_log, FORCES_INPLACE, ("Objects", "LogConfig")),
    ],
)
def test_task_annotations(base: dict, mutate: Callable[[dict], None], annotation: str,
                          where: tuple[str, str]) -> None:
    new = copy.deepcopy(base)
    mutate(new)
    d = diff_jobs(base, new, contextual=False)
    task = d["TaskGroups"][0]["Tasks"][0]
    assert task["Type"] == "Edited"
    assert task["Annotations"] == [annotation]
    kind, name = where
    assert name in [x["Name"] for x in task[kind] or []]


def test_config_change_is_flattened_with_indices(base: dict) -> None:
    new = copy.deepcopy(base)
    _config(new)
    d = diff_jobs(base, new, contextual=False)
    (config,) = d["TaskGroups"][0]["Tasks"][0]["Objects"]
    assert config == {"Type": "Edited", "Name": "Config", "Objects": None, "Fields": [
        {"Type": "Edited", "Name": "args[0]", "Old": "--port", "New": "--listen", "Annotations": None}]}


def test_contextual_lists_unchanged_fields_as_none(base: dict) -> None:
    new = copy.deepcopy(base)
    _resources(new)
    d = diff_jobs(base, new, contextual=True)
    (res,) = d["TaskGroups"][0]["Tasks"][0]["Objects"]
    by_name = {f["Name"]: f for f in res["Fields"]}
    assert by_name["MemoryMB"] == {"Type": "Edited", "Name": "MemoryMB", "Old": "256", "New": "512", "Annotations": None}
    assert by_name["CPU"]["Type"] == "None" and by_name["CPU"]["Old"] == by_name["CPU"]["New"] == "500"


def test_job_level_fields_and_objects(base: dict) -> None:
    new = copy.deepcopy(base)
    new["Priority"] = 80
    new["Datacenters"] = ["dc1", "dc2"]
    new["Meta"] = {"owner": "ml", "tier": "gold"}
    new["Constraints"] = [{"LTarget": "${attr.kernel.name}", "RTarget": "linux", "Operand": "="}]
    d = diff_jobs(base, new, contextual=False)
    assert d["Type"] == "Edited"
    assert d["Fields"] == [
        {"Type": "Added", "Name": "Meta[tier]", "Old": "", "New": "gold", "Annotations": None},
        {"Type": "Edited", "Name": "Priority", "Old": "50", "New": "80", "Annotations": None},
    ]
    objects = {o["Name"]: o for o in d["Objects"]}
    assert objects["Datacenters"]["Type"] == "Edited"
    assert objects["Datacenters"]["Fields"] == [
        {"Type": "Added", "Name": "Datacenters", "Old": "", "New": "dc2", "Annotations": None}]
    assert objects["Constraint"]["Type"] == "Added"
    assert {f["Name"]: f["New"] for f in objects["Constraint"]["Fields"]} == {
        "LTarget": "${attr.kernel.name}", "Operand": "=", "RTarget": "linux"}


def test_group_objects_update_service_tags_and_network(base: dict) -> None:
    new = copy.deepcopy(base)
    _tg(new)["Update"] = {"Canary": 1}
    _tg(new)["Services"][0]["Tags"] = ["v2"]
    _tg(new)["Networks"][0]["DynamicPorts"][0]["To"] = 9000
    d = diff_jobs(base, new, contextual=False)
    objects = {o["Name"]: o for o in d["TaskGroups"][0]["Objects"]}
    assert objects["Update"]["Fields"] == [
        {"Type": "Edited", "Name": "Canary", "Old": "0", "New": "1", "Annotations": None}]
    tags = objects["Service"]["Objects"][0]
    assert tags["Name"] == "Tags" and [(f["Type"], f["Old"] or f["New"]) for f in tags["Fields"]] == [
        ("Deleted", "v1"), ("Added", "v2")]
    # Networks have no identity: Nomad's set diff reports the old one Deleted and the new one Added.
    nets = [o for o in d["TaskGroups"][0]["Objects"] if o["Name"] == "Network"]
    assert sorted(n["Type"] for n in nets) == ["Added", "Deleted"]
    added = next(n for n in nets if n["Type"] == "Added")
    (port,) = added["Objects"]
    assert port["Name"] == "Dynamic Port"
    assert {f["Name"]: f["New"] for f in port["Fields"]} == {"HostNetwork": "", "Label": "http", "To": "9000",
                                                             "Value": "0"}


def test_group_added_and_deleted(base: dict) -> None:
    new = copy.deepcopy(base)
    extra = copy.deepcopy(_tg(new))
    extra["Name"] = "batcher"
    new["TaskGroups"] = [extra]
    d = diff_jobs(base, new, contextual=False)
    by_name = {g["Name"]: g for g in d["TaskGroups"]}
    assert by_name["api"]["Type"] == "Deleted"
    assert by_name["api"]["Tasks"][0]["Annotations"] == [FORCES_DESTROY]
    assert by_name["batcher"]["Type"] == "Added"
    assert [f["Annotations"] for f in by_name["api"]["Fields"] if f["Name"] == "Count"] == [[FORCES_DESTROY]]
    assert [g["Name"] for g in d["TaskGroups"]] == ["api", "batcher"]


def test_task_added_to_existing_group_is_destructive(base: dict) -> None:
    new = copy.deepcopy(base)
    side = copy.deepcopy(_task(new))
    side["Name"] = "sidecar"
    _tg(new)["Tasks"].append(side)
    d = diff_jobs(base, new, contextual=False)
    tasks = {t["Name"]: t for t in d["TaskGroups"][0]["Tasks"]}
    assert tasks["sidecar"]["Type"] == "Added"
    assert tasks["sidecar"]["Annotations"] == [FORCES_DESTRUCTIVE]
    assert tasks["server"]["Type"] == "None"


def test_explicit_defaults_are_not_changes(base: dict) -> None:
    new = copy.deepcopy(base)
    new["Region"] = "global"
    new["Namespace"] = "default"
    _task(new)["KillTimeout"] = 5 * 10**9
    assert diff_jobs(base, new)["Type"] == "None"


def test_different_ids_refused(base: dict) -> None:
    other = copy.deepcopy(base)
    other["ID"] = "other"
    with pytest.raises(ValueError, match="different IDs"):
        diff_jobs(base, other)


def test_annotate_diff_adds_updates_and_is_idempotent(base: dict) -> None:
    new = copy.deepcopy(base)
    _tg(new)["Count"] = 3
    d = diff_jobs(base, new)
    annotate_diff(d, {"api": {"Place": 1, "Ignore": 2, "Stop": 0, "DestructiveUpdate": 0}})
    annotate_diff(d, {"api": {"Place": 1, "Ignore": 2, "Stop": 0, "DestructiveUpdate": 0}})
    g = d["TaskGroups"][0]
    assert g["Updates"] == {"create": 1, "ignore": 2}
    assert [f["Annotations"] for f in g["Fields"] if f["Name"] == "Count"] == [[FORCES_CREATE]]


def test_server_managed_fields_of_the_stored_job_are_not_changes(base: dict) -> None:
    stored = dict(copy.deepcopy(base), Status="running", Dispatched=False, SubmitTime=123, CreateIndex=5,
                  ModifyIndex=9, JobModifyIndex=9, Version=3, Stable=True)
    assert diff_jobs(stored, base)["Type"] == "None"
    stopped = dict(copy.deepcopy(base), Stop=True)
    d = diff_jobs(stopped, base, contextual=False)
    assert d["Type"] == "Edited"
    assert d["Fields"] == [{"Type": "Edited", "Name": "Stop", "Old": "true", "New": "false", "Annotations": None}]


def test_go_client_job_equals_the_same_job_parsed_from_hcl() -> None:
    # Go's api.Job JSON: unset pointers null, plain fields zero-valued (User "", Leader false, ...).
    go_client_job = {
        "ID": "web", "Name": None, "Region": None, "Type": None, "Priority": None, "Meta": None, "Update": None,
        "TaskGroups": [{"Name": "g", "Count": None, "Networks": None, "Services": None, "Tasks": [{
            "Name": "t", "Driver": "raw_exec", "User": "", "Config": {"command": "/bin/true"}, "Env": None,
            "Resources": None, "KillTimeout": None, "Leader": False, "ShutdownDelay": 0, "KillSignal": "",
        }]}],
    }
    parsed = parse_job_hcl('job "web" {\n  group "g" {\n    task "t" {\n      driver = "raw_exec"\n'
                           '      config {\n        command = "/bin/true"\n      }\n    }\n  }\n}\n')
    assert diff_jobs(parsed, go_client_job)["Type"] == "None"
    assert diff_jobs(go_client_job, parsed)["Type"] == "None"
