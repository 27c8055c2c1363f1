"""validate_job: the errors and warnings `PUT /v1/validate/job` reports, worded as Nomad words them."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from nomad_triton.devcluster.hclparse import parse_job_hcl
from nomad_triton.devcluster.validate import format_multierror, go_duration, validate_job

S = 10**9

GOOD = """
job "web" {
  group "api" {
    count = 2
    network {
      port "http" {}
    }
    service {
      name     = "api"
      port     = "http"
      provider = "nomad"
      check {
        type     = "http"
        path     = "/v2/health/ready"
        interval = "5s"
        timeout  = "2s"
      }
    }
    scaling {
      min = 1
      max = 4
    }
    task "server" {
      driver = "raw_exec"
      config {
        command = "/bin/true"
      }
    }
  }
}
"""


def good() -> dict:
    return parse_job_hcl(GOOD)


def _tg(j: dict) -> dict:
    return j["TaskGroups"][0]


def _task(j: dict) -> dict:
    return j["TaskGroups"][0]["Tasks"][0]


def test_good_job_validates_clean() -> None:
    assert validate_job(good()) == ([], [])


def _set(path: Callable[[dict], dict], key: str, value: object) -> Callable[[dict], None]:
    def mutate(j: dict) -> None:
        path(j)[key] = value
    return mutate


def _dup_task(j: dict) -> None:
    _tg(j)["Tasks"].append(copy.deepcopy(_task(j)))


def _dup_group(j: dict) -> None:
    j["TaskGroups"].append(copy.deepcopy(_tg(j)))


@pytest.mark.parametrize(
    ("mutate", "top", "inner"),
    [
        (_set(lambda j: j, "ID", ""), "Missing job ID", None),
        (_set(lambda j: j, "ID", "a b"), "Job ID contains a space", None),
        (_set(lambda j: j, "Type", "cron"), 'Invalid job type: "cron"', None),
        (_set(lambda j: j, "Priority", 101), "Job priority must be between [1, 100]", None),
        (_set(lambda j: j, "TaskGroups", []), "Missing job task groups", None),
        (_dup_group, "Job task group 2 redefines 'api' from group 1", None),
        (_set(lambda j: j, "Constraints", [{"LTarget": "${attr.x}", "Operand": "=", "RTarget": ""}]),
         "Constraint 1 validation failed", 'Operator "=" requires an RTarget'),
        (_set(lambda j: j, "Constraints", [{"LTarget": "x", "Operand": "near", "RTarget": "y"}]),
         "Constraint 1 validation failed", 'Unknown constraint type "near"'),
        (_set(_tg, "Count", -1), "Task group api validation failed", "Task group count can't be negative"),
        (_set(_task, "Driver", ""), "Task group api validation failed", "Missing task driver"),
        (_dup_task, "Task group api validation failed", "Task 2 redefines 'server' from task 1"),
        (_set(_tg, "Update", {"MaxParallel": -1}), "Task group api validation failed",
         "Max parallel can not be less than zero: -1 < 0"),
        (_set(_tg, "Update", {"MinHealthyTime": 600 * S}), "Task group api validation failed",
         "Minimum healthy time must be less than healthy deadline: 10m0s > 5m0s"),
        (_set(_tg, "Update", {"AutoPromote": True}), "Task group api validation failed",
         "Auto Promote requires a Canary count greater than zero"),
        (_set(_tg, "Scaling", {"Min": 5, "Max": 2}), "Task group api validation failed",
         "maximum count must not be less than minimum count"),
        (_set(_tg, "Count", 9), "Task group api validation failed",
         "task group count must not be greater than maximum count in scaling policy"),
        (_set(_tg, "Count", 0), "Task group api validation failed",
         "task group count must not be less than minimum count in scaling policy"),
        (_set(_tg, "RestartPolicy", {"Mode": "sometimes"}), "Task group api validation failed",
         'Unsupported restart mode: "sometimes"'),
        (_set(_task, "Resources", {"CPU": 100, "MemoryMB": 5}), "Task group api validation failed",
         "minimum MemoryMB value is 10; got 5"),
        (_set(_task, "Resources", {"Devices": [{"Name": ""}]}), "Task group api validation failed",
         "device name must be given"),
        (_set(_task, "Constraints", [{"Operand": "distinct_hosts"}]), "Task group api validation failed",
         "Constraint 1 has disallowed Operand at task level: distinct_hosts"),
        (_set(_task, "Templates", [{"EmbeddedTmpl": "x"}]), "Task group api validation failed",
         "Must specify a destination for the template"),
        (_set(_tg, "Services", [{"Name": "api", "PortLabel": "grpc", "Provider": "nomad"}]),
         "Task group api validation failed", 'Port label "grpc" referenced by service "api" does not exist'),
        (_set(_tg, "Services", [{"Name": "api", "Provider": "nomad",
                                 "Checks": [{"Name": "c", "Type": "http", "Interval": 5 * S, "Timeout": S}]}]),
         "Task group api validation failed", "Check c invalid: http type must have http path"),
        (_set(_tg, "Services", [{"Name": "api", "Provider": "nomad",
                                 "Checks": [{"Name": "c", "Type": "udp", "Interval": 5 * S, "Timeout": S}]}]),
         "Task group api validation failed", 'invalid type ("udp")'),
    ],
)
def test_validation_errors(mutate: Callable[[dict], None], top: str, inner: str | None) -> None:
    job = good()
    mutate(job)
    errors, _ = validate_job(job)
    assert any(top in e for e in errors), errors
    if inner is not None:
        assert any(inner in e for e in errors), errors


def test_batch_job_refuses_update_block() -> None:
    job = good()
    job["Type"] = "batch"
    job["TaskGroups"][0]["Update"] = {"Canary": 1}
    errors, _ = validate_job(job)
    assert any('Job type "batch" does not allow update block' in e for e in errors)


def test_system_job_count_and_affinity() -> None:
    job = good()
    job["Type"] = "system"
    job["Affinities"] = [{"LTarget": "${node.class}", "RTarget": "x", "Operand": "="}]
    job["TaskGroups"][0].pop("Scaling")
    errors, _ = validate_job(job)
    assert "System jobs may not have an affinity block" in errors
    assert "Job task group api has count 2. Count cannot exceed 1 with system scheduler" in errors


def test_nested_errors_use_go_multierror_format() -> None:
    job = good()
    _task(job)["Driver"] = ""
    errors, _ = validate_job(job)
    assert errors == [
        "Task group api validation failed: 1 error occurred:\n\t* Task server validation failed: "
        "1 error occurred:\n\t* Missing task driver\n\n\n\n"
    ]


def test_warning_when_max_parallel_exceeds_count() -> None:
    job = good()
    _tg(job)["Update"] = {"MaxParallel": 5}
    errors, warnings = validate_job(job)
    assert errors == []
    assert len(warnings) == 1 and "Update max parallel count is greater than task group count (5 > 2)" in warnings[0]


def test_malformed_job_is_an_error_not_a_crash() -> None:
    job = good()
    _tg(job)["Count"] = "two"
    errors, _ = validate_job(job)
    assert errors and errors[0].startswith("Job is malformed")


def test_format_multierror() -> None:
    assert format_multierror(["a"]) == "1 error occurred:\n\t* a\n\n"
    assert format_multierror(["a", "b"]) == "2 errors occurred:\n\t* a\n\t* b\n\n"


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0s"), (S, "1s"), (90 * S, "1m30s"), (300 * S, "5m0s"), (3600 * S, "1h0m0s"), (1_500_000_000, "1.5s"),
     (250_000_000, "250ms"), (-S, "-1s")],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


@pytest.mark.parametrize("spec_file", ["cpu-example.toml", "gpu-example.toml"])
def test_the_projects_example_specs_render_parse_and_validate_clean(spec_file: str) -> None:
    """devcluster must accept what nomad-triton itself renders (register refuses invalid jobs)."""
    from pathlib import Path

    from nomad_triton.render import render_job
    from nomad_triton.spec import load_spec

    root = Path(__file__).resolve().parents[3]
    job = parse_job_hcl(render_job(load_spec(root / "jobs" / spec_file)))
    assert validate_job(job) == ([], [])
    assert job["TaskGroups"][0]["Services"][0]["Provider"] == "nomad"


@pytest.mark.parametrize(
    ("name", "ok"),
    [("api", True), ("${NOMAD_JOB_NAME}-http", True), ("a" * 63, True), ("a" * 64, False), ("bad_name", False),
     ("-lead", False)],
)
def test_service_names_follow_rfc1123_after_interpolation(name: str, ok: bool) -> None:
    job = good()
    _tg(job)["Services"][0]["Name"] = name
    errors, _ = validate_job(job)
    assert (errors == []) is ok, errors
    if not ok:
        assert "Service name must be valid per RFC 1123" in errors[0]
