"""devcluster's scaling-policy endpoints end to end (real subprocess), through python-nomad's
Scaling API and its raw requester (for the X-Nomad-Index header and blocking queries), as an
autoscaler that discovers its targets from Nomad would use them. The official Go client reads
the same endpoints in tests/conformance (test_go_conformance.py)."""

from __future__ import annotations

import threading
import time

import nomad.api.exceptions as nexc
import pytest

from .conftest import Devcluster
from .devcluster_jobs import sleep_job

pytestmark = pytest.mark.e2e


def _with_scaling(job_id: str, lo: int, hi: int, *, enabled: bool = True) -> str:
    block = f"""
  group "main" {{
    scaling {{
      enabled = {str(enabled).lower()}
      min = {lo}
      max = {hi}
      policy {{
        cooldown = "30s"
      }}
    }}"""
    return sleep_job(job_id, count=lo).replace('\n  group "main" {', block, 1)


def test_policies_follow_register_change_stop_purge(devcluster: Devcluster) -> None:
    n = devcluster.nomad(timeout=30)
    assert n.scaling.get_scaling_policies() == []
    job = n.jobs.parse(_with_scaling("sp-a", 1, 3), canonicalize=True)
    reg = n.jobs.register_job({"Job": job})
    n.jobs.register_job({"Job": n.jobs.parse(sleep_job("sp-plain", count=0), canonicalize=True)})

    [stub] = n.scaling.get_scaling_policies()
    assert stub["Target"] == {"Namespace": "default", "Job": "sp-a", "Group": "main"}
    assert (stub["Type"], stub["Enabled"], stub["CreateIndex"]) == ("horizontal", True, reg["JobModifyIndex"])
    assert n.scaling.get_scaling_policies(job="sp-plain") == []
    assert [p["ID"] for p in n.scaling.get_scaling_policies(job="sp-a", type_="horizontal")] == [stub["ID"]]
    policy = n.scaling.get_scaling_policy(stub["ID"])
    assert (policy["Min"], policy["Max"], policy["Policy"]) == (1, 3, {"cooldown": "30s"})

    # A blocking list query (raw requester: python-nomad drops headers) wakes when the policy changes.
    first = n.scaling.request("policies", method="get")
    index = int(first.headers["X-Nomad-Index"])
    changed_at: list[float] = []

    def change() -> None:
        time.sleep(0.5)
        changed_at.append(time.monotonic())
        n.jobs.register_job({"Job": n.jobs.parse(_with_scaling("sp-a", 1, 5), canonicalize=True)})

    writer = threading.Thread(target=change)
    writer.start()
    t0 = time.monotonic()
    woke = n.scaling.request("policies", method="get", params={"index": index, "wait": "20s"})
    returned = time.monotonic()
    writer.join()
    assert returned - t0 >= 0.4 and returned - changed_at[0] < 2.0
    assert int(woke.headers["X-Nomad-Index"]) > index
    [moved] = woke.json()
    assert (moved["ID"], moved["CreateIndex"]) == (stub["ID"], stub["CreateIndex"])
    assert moved["ModifyIndex"] > stub["ModifyIndex"]
    assert n.scaling.get_scaling_policy(stub["ID"])["Max"] == 5

    # Stopped: kept but disabled. Purged: gone, and a read is 404.
    n.job.deregister_job("sp-a")
    [off] = n.scaling.get_scaling_policies(job="sp-a")
    assert off["Enabled"] is False and off["ID"] == stub["ID"]
    n.job.deregister_job("sp-a", purge=True)
    assert n.scaling.get_scaling_policies() == []
    with pytest.raises(nexc.URLNotFoundNomadException):
        n.scaling.get_scaling_policy(stub["ID"])


def test_disabled_policy_is_listed_disabled(devcluster: Devcluster) -> None:
    n = devcluster.nomad()
    n.jobs.register_job({"Job": n.jobs.parse(_with_scaling("sp-off", 0, 2, enabled=False), canonicalize=True)})
    [stub] = n.scaling.get_scaling_policies()
    assert stub["Enabled"] is False
    assert n.scaling.get_scaling_policy(stub["ID"])["Enabled"] is False
