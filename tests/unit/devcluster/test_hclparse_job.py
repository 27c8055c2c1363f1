"""Every jobspec block devcluster supports, mapped to Nomad's API Job JSON field names, and the
errors for what it does not support (Nomad answers those with 400 and an HCL diagnostic)."""

from __future__ import annotations

import pytest

from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.hclparse import parse_job_hcl

S = 10**9

FULL = r"""
job "triton" {
  region      = "eu"
  namespace   = "ml"
  type        = "service"
  priority    = 70
  datacenters = ["dc1", "dc2"]
  node_pool   = "gpu"

  meta {
    team = "ml"
  }

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }
  constraint {
    distinct_hosts = true
  }
  constraint {
    operator  = "distinct_property"
    attribute = "${meta.rack}"
    value     = "2"
  }
  affinity {
    attribute = "${node.datacenter}"
    value     = "dc1"
    weight    = 80
  }
  spread {
    attribute = "${node.datacenter}"
    weight    = 100
    target "dc1" {
      percent = 60
    }
    target "dc2" {
      percent = 40
    }
  }

  update {
    max_parallel      = 2
    health_check      = "checks"
    min_healthy_time  = "15s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    auto_revert       = true
    auto_promote      = true
    canary            = 1
    stagger           = "20s"
  }

  group "server" {
    count = 2

    network {
      mode = "host"
      port "http" {
        to = 8000
      }
      port "metrics" {}
      port "admin" {
        static = 9999
      }
    }

    service {
      name     = "triton-http"
      port     = "http"
      provider = "nomad"
      tags     = ["a", "b"]
      check {
        name     = "ready"
        type     = "http"
        path     = "/v2/health/ready"
        protocol = "http"
        port     = "http"
        interval = "5s"
        timeout  = "2s"
        method   = "GET"
        header {
          X-Token = ["t1", "t2"]
        }
      }
      check {
        type     = "tcp"
        port     = "metrics"
        interval = "10s"
        timeout  = "1s"
      }
    }

    update {
      canary = 2
    }

    restart {
      attempts = 3
      interval = "10m"
      delay    = "20s"
      mode     = "delay"
    }

    reschedule {
      attempts       = 5
      interval       = "1h"
      delay          = "10s"
      delay_function = "constant"
      max_delay      = "2m"
      unlimited      = false
    }

    ephemeral_disk {
      size   = 500
      sticky = true
    }

    scaling {
      enabled = true
      min     = 1
      max     = 8
      policy {
        cooldown = "1m"
      }
    }

    meta = {
      "model.version" = "3"
    }

    task "triton" {
      driver       = "raw_exec"
      kill_timeout = "30s"
      kill_signal  = "SIGTERM"
      user         = "nobody"

      config {
        command = "/usr/bin/python3"
        args    = ["-m", "server", "--port", "${NOMAD_PORT_http}"]
        mount {
          type = "bind"
        }
      }

      env {
        LOG_LEVEL = "info"
        PORT      = "${NOMAD_PORT_http}"
      }

      resources {
        cpu    = 2000
        memory = 4096
        device "nvidia/gpu" {
          count = 2
          constraint {
            attribute = "${device.attr.memory}"
            operator  = ">="
            value     = "16 GiB"
          }
          affinity {
            attribute = "${device.model}"
            value     = "H100"
            weight    = 50
          }
        }
      }

      template {
        data        = "MODEL={{ env \"NOMAD_META_model\" }}\n"
        destination = "local/model.env"
        env         = true
        change_mode = "restart"
      }

      artifact {
        source      = "https://example.com/model.tar.gz"
        destination = "local/model"
        options {
          checksum = "sha256:abc"
        }
      }

      meta {
        role = "server"
      }

      restart {
        attempts = 1
      }

      logs {
        max_files     = 3
        max_file_size = 20
      }

      lifecycle {
        hook    = "prestart"
        sidecar = false
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def job() -> dict:
    return parse_job_hcl(FULL)


def test_job_level_fields(job: dict) -> None:
    assert job["ID"] == job["Name"] == "triton"
    assert (job["Region"], job["Namespace"], job["Type"], job["Priority"]) == ("eu", "ml", "service", 70)
    assert job["Datacenters"] == ["dc1", "dc2"]
    assert job["NodePool"] == "gpu"
    assert job["Meta"] == {"team": "ml"}


def test_constraints_affinities_spreads(job: dict) -> None:
    assert job["Constraints"] == [
        {"LTarget": "${attr.kernel.name}", "RTarget": "linux", "Operand": "="},
        {"LTarget": "", "RTarget": "", "Operand": "distinct_hosts"},
        {"LTarget": "${meta.rack}", "RTarget": "2", "Operand": "distinct_property"},
    ]
    assert job["Affinities"] == [{"LTarget": "${node.datacenter}", "RTarget": "dc1", "Operand": "=", "Weight": 80}]
    assert job["Spreads"] == [{"Attribute": "${node.datacenter}", "Weight": 100,
                               "SpreadTarget": [{"Value": "dc1", "Percent": 60}, {"Value": "dc2", "Percent": 40}]}]


def test_update_blocks(job: dict) -> None:
    assert job["Update"] == {"MaxParallel": 2, "HealthCheck": "checks", "MinHealthyTime": 15 * S,
                             "HealthyDeadline": 180 * S, "ProgressDeadline": 600 * S, "AutoRevert": True,
                             "AutoPromote": True, "Canary": 1, "Stagger": 20 * S}
    assert job["TaskGroups"][0]["Update"] == {"Canary": 2}


def test_group_policies(job: dict) -> None:
    g = job["TaskGroups"][0]
    assert g["Name"] == "server" and g["Count"] == 2
    assert g["RestartPolicy"] == {"Attempts": 3, "Interval": 600 * S, "Delay": 20 * S, "Mode": "delay"}
    assert g["ReschedulePolicy"] == {"Attempts": 5, "Interval": 3600 * S, "Delay": 10 * S,
                                     "DelayFunction": "constant", "MaxDelay": 120 * S, "Unlimited": False}
    assert g["EphemeralDisk"] == {"SizeMB": 500, "Sticky": True}
    assert g["Scaling"] == {"Enabled": True, "Min": 1, "Max": 8, "Type": "horizontal", "Policy": {"cooldown": "1m"}}
    assert g["Meta"] == {"model.version": "3"}


def test_network_ports_static_and_dynamic(job: dict) -> None:
    (net,) = job["TaskGroups"][0]["Networks"]
    assert net["Mode"] == "host"
    assert net["DynamicPorts"] == [{"Label": "http", "Value": 0, "To": 8000, "HostNetwork": ""},
                                   {"Label": "metrics", "Value": 0, "To": 0, "HostNetwork": ""}]
    assert net["ReservedPorts"] == [{"Label": "admin", "Value": 9999, "To": 0, "HostNetwork": ""}]


def test_service_and_checks(job: dict) -> None:
    (svc,) = job["TaskGroups"][0]["Services"]
    assert (svc["Name"], svc["PortLabel"], svc["Provider"], svc["Tags"]) == ("triton-http", "http", "nomad", ["a", "b"])
    http, tcp = svc["Checks"]
    assert http == {"Name": "ready", "Type": "http", "Path": "/v2/health/ready", "Protocol": "http",
                    "PortLabel": "http", "Interval": 5 * S, "Timeout": 2 * S, "Method": "GET",
                    "Header": {"X-Token": ["t1", "t2"]}}
    assert tcp == {"Type": "tcp", "PortLabel": "metrics", "Interval": 10 * S, "Timeout": 1 * S}


def test_task(job: dict) -> None:
    t = job["TaskGroups"][0]["Tasks"][0]
    assert (t["Name"], t["Driver"], t["KillTimeout"], t["KillSignal"], t["User"]) == (
        "triton", "raw_exec", 30 * S, "SIGTERM", "nobody")
    assert t["Config"] == {"command": "/usr/bin/python3", "args": ["-m", "server", "--port", "${NOMAD_PORT_http}"],
                           "mount": [{"type": "bind"}]}
    assert t["Env"] == {"LOG_LEVEL": "info", "PORT": "${NOMAD_PORT_http}"}
    assert t["Meta"] == {"role": "server"}
    assert t["RestartPolicy"] == {"Attempts": 1}
    assert t["LogConfig"] == {"MaxFiles": 3, "MaxFileSizeMB": 20}
    assert t["Lifecycle"] == {"Hook": "prestart", "Sidecar": False}


def test_resources_and_devices(job: dict) -> None:
    r = job["TaskGroups"][0]["Tasks"][0]["Resources"]
    assert (r["CPU"], r["MemoryMB"]) == (2000, 4096)
    assert r["Devices"] == [{
        "Name": "nvidia/gpu", "Count": 2,
        "Constraints": [{"LTarget": "${device.attr.memory}", "RTarget": "16 GiB", "Operand": ">="}],
        "Affinities": [{"LTarget": "${device.model}", "RTarget": "H100", "Operand": "=", "Weight": 50}],
    }]


def test_template_and_artifact(job: dict) -> None:
    t = job["TaskGroups"][0]["Tasks"][0]
    assert t["Templates"] == [{"EmbeddedTmpl": 'MODEL={{ env "NOMAD_META_model" }}\n', "DestPath": "local/model.env",
                               "Envvars": True, "ChangeMode": "restart",
                               # filled at parse time by jobspec2's normalizeTemplates:
                               "Perms": "0644", "Splay": 5 * S, "ErrMissingKey": False}]
    assert t["Artifacts"] == [{"GetterSource": "https://example.com/model.tar.gz", "RelativeDest": "local/model",
                               "GetterOptions": {"checksum": "sha256:abc"}}]


def test_canonicalize_flag_applies_defaults() -> None:
    job = parse_job_hcl('job "x" {\n  group "g" {\n    task "t" {\n      driver = "raw_exec"\n    }\n  }\n}\n',
                        canonicalize=True)
    assert (job["Region"], job["Namespace"], job["Priority"], job["Type"]) == ("global", "default", 50, "service")
    assert job["TaskGroups"][0]["Tasks"][0]["Resources"]["CPU"] == 100


def test_task_directly_in_job_becomes_its_own_group() -> None:
    job = parse_job_hcl('job "j" {\n  task "solo" {\n    driver = "raw_exec"\n  }\n  group "g" {\n  }\n}\n')
    assert [g["Name"] for g in job["TaskGroups"]] == ["solo", "g"]
    assert job["TaskGroups"][0]["Tasks"] == [{"Name": "solo", "Driver": "raw_exec"}]


def _wrap_task(inner: str) -> str:
    return f'job "j" {{\n  group "g" {{\n    task "t" {{\n      driver = "raw_exec"\n{inner}\n    }}\n  }}\n}}\n'


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (_wrap_task("      bogus {\n        x = 1\n      }"), ["Unsupported block type", 'Blocks of type "bogus"',
                                                              'task "t"']),
        (_wrap_task("      vault {\n        policies = [\"x\"]\n      }"), ['"vault" are not supported by devcluster']),
        (_wrap_task('      drivr = "x"'), ["Unsupported argument", 'An argument named "drivr"']),
        ('job "j" {\n  periodic {\n    cron = "* * * * *"\n  }\n}\n', ['"periodic" are not supported']),
        ('jobb "j" {\n}\n', ['Blocks of type "jobb" are not expected here']),
        ('variable "x" {\n  default = 1\n}\n', ["Missing job block"]),
        ('job "a" {\n}\njob "b" {\n}\n', ["Duplicate job block"]),
        ('job {\n}\n', ["Missing name for job"]),
        ('job "j" {\n  group {\n  }\n}\n', ["Missing name for group"]),
        ('job "j" {\n  group "g" {\n    count = "many"\n  }\n}\n', ["Incorrect attribute value type", '"count"']),
        ('job "j" {\n  group "g" {\n    scaling {\n      min = 1\n    }\n  }\n}\n', ['"max" is required']),
        ('job "j" {\n  update {\n    canary = 1\n  }\n  update {\n    canary = 2\n  }\n}\n', ["Duplicate update block"]),
        ('job "j" {\n  group "g" {\n', ["error parsing", "Invalid HCL syntax"]),
        ('job "j" {\n  x = = 1\n}\n', ["error parsing", "input.hcl:2"]),
        ("", ["error parsing"]),
    ],
)
def test_bad_jobspecs_are_400_with_nomad_like_text(text: str, needles: list[str]) -> None:
    with pytest.raises(ApiError) as exc:
        parse_job_hcl(text)
    assert exc.value.status == 400
    for needle in needles:
        assert needle in exc.value.message, exc.value.message


def test_env_block_and_attribute_together_is_an_error() -> None:
    text = _wrap_task('      env = { A = "1" }\n      env {\n        B = "2"\n      }')
    with pytest.raises(ApiError) as exc:
        parse_job_hcl(text)
    assert exc.value.status == 400
    assert "env" in exc.value.message


def test_host_volumes_and_mounts() -> None:
    text = """
job "j" {
  group "g" {
    volume "models" {
      type      = "host"
      source    = "triton-models"
      read_only = true
    }
    task "t" {
      driver = "docker"
      volume_mount {
        volume      = "models"
        destination = "/models"
        read_only   = true
      }
    }
  }
}
"""
    g = parse_job_hcl(text)["TaskGroups"][0]
    assert g["Volumes"] == {"models": {"Name": "models", "Type": "host", "Source": "triton-models", "ReadOnly": True}}
    assert g["Tasks"][0]["VolumeMounts"] == [{"Volume": "models", "Destination": "/models", "ReadOnly": True}]
    canonical = parse_job_hcl(text, canonicalize=True)["TaskGroups"][0]["Tasks"][0]["VolumeMounts"][0]
    assert (canonical["PropagationMode"], canonical["SELinuxLabel"]) == ("private", "")


def test_meta_values_convert_to_strings_like_cty() -> None:
    job = parse_job_hcl('job "j" {\n  meta {\n    a = 2.0\n    b = 1.5\n    c = true\n    d = 7\n  }\n}\n')
    assert job["Meta"] == {"a": "2", "b": "1.5", "c": "true", "d": "7"}
