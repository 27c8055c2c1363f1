"""Timestamps on the wire, as Nomad's Go API types declare them (github.com/hashicorp/nomad/api).

Go decodes strictly: a `time.Time` field must be an RFC 3339 string (an integer fails the whole
call: "Time.UnmarshalJSON: input is not a JSON string"), an `int64` nanosecond field must be a
number. tests/conformance checks the same through the Go client; this table runs without Go.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx

from nomad_triton.devcluster.api import Ctx, build_app
from nomad_triton.devcluster.config import parse_config
from nomad_triton.devcluster.server import seed_store
from nomad_triton.devcluster.store import Store

HCL = """
job "t" {
  datacenters = ["dc1"]
  group "g" {
    count = 1
    scaling {
      min = 1
      max = 2
    }
    task "s" {
      driver = "raw_exec"
      config {
        command = "sleep"
      }
    }
  }
}
"""


def rfc3339(value: Any) -> bool:
    return isinstance(value, str) and datetime.fromisoformat(value) is not None


def unix_ns(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 10**18


def unix_s(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 10**9 < value < 10**11


def test_timestamps_have_the_go_clients_types() -> None:
    async def main() -> None:
        config = parse_config({})
        store = Store()
        seed_store(store, config, "127.0.0.1:1")
        app = build_app(Ctx(store=store, config=config))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dc") as c:
            job = (await c.post("/v1/jobs/parse", json={"JobHCL": HCL, "Canonicalize": True})).json()
            reg = (await c.post("/v1/jobs", json={"Job": job})).json()
            await c.post("/v1/job/t/scale", json={"Target": {"Group": "g"}, "Message": "record only"})
            await c.put("/v1/var/a/b", json={"Items": {"k": "v"}})
            [stub] = (await c.get("/v1/nodes")).json()
            node = (await c.get(f"/v1/node/{stub['ID']}")).json()
            ev = (await c.get(f"/v1/evaluation/{reg['EvalID']}")).json()
            got = (await c.get("/v1/job/t")).json()
            [job_stub] = (await c.get("/v1/jobs")).json()
            event = (await c.get("/v1/job/t/scale")).json()["TaskGroups"]["g"]["Events"][0]
            var = (await c.get("/v1/var/a/b")).json()

        checks: list[tuple[str, Any, Any]] = [
            # DriverInfo.UpdateTime, NodeEvent.Timestamp, Evaluation.WaitUntil: time.Time
            *[(f"node stub driver {d} UpdateTime", rfc3339, i["UpdateTime"]) for d, i in stub["Drivers"].items()],
            *[(f"node driver {d} UpdateTime", rfc3339, i["UpdateTime"]) for d, i in node["Drivers"].items()],
            *[("node event Timestamp", rfc3339, e["Timestamp"]) for e in node["Events"]],
            ("eval WaitUntil (zero time, not null)", rfc3339, ev["WaitUntil"]),
            # Node.StatusUpdatedAt: unix seconds (int64)
            ("node StatusUpdatedAt", unix_s, node["StatusUpdatedAt"]),
            # unix nanoseconds (int64 / uint64)
            ("eval CreateTime", unix_ns, ev["CreateTime"]),
            ("eval ModifyTime", unix_ns, ev["ModifyTime"]),
            ("job SubmitTime", unix_ns, got["SubmitTime"]),
            ("job stub SubmitTime", unix_ns, job_stub["SubmitTime"]),
            ("scaling event Time", unix_ns, event["Time"]),
            ("variable CreateTime", unix_ns, var["CreateTime"]),
            ("variable ModifyTime", unix_ns, var["ModifyTime"]),
        ]
        assert len(checks) >= 12
        wrong = [(name, value) for name, ok, value in checks if not ok(value)]
        assert not wrong, wrong

    asyncio.run(main())
