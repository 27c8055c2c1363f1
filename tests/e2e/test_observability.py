"""Observability end to end against a REAL Prometheus (Debian's package, http_sd path).

One stack per module (tests/e2e/prometheus_stack.py): devcluster, the CPU example on real PyTriton
under load, the autoscaler as a Nomad job, `nomad-triton sd`, and `prometheus` with the generated
scrape config. The tests run in file order; the scale-out one changes the job and runs last.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import pytest

from nomad_triton.autoscale.controller import Controller, ControllerSettings
from nomad_triton.autoscale.policy import ScalingPolicyConfig
from nomad_triton.autoscale.sources import Target
from nomad_triton.autoscale.sources.direct import DirectSource
from nomad_triton.autoscale.sources.prometheus import (
    PrometheusSettings,
    PrometheusSource,
    QueryError,
    SourceUnavailable,
)
from nomad_triton.observe.dashboard import dashboard_queries
from nomad_triton.observe.queries import GPU_ONLY_PANELS
from nomad_triton.probe.triton import Prober
from nomad_triton.server.testing import free_ports
from tests.e2e.cli_helpers import ROOT, run_cli
from tests.e2e.prometheus_stack import JOB, REFRESH_S, Stack, wait_for

pytestmark = pytest.mark.e2e
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("observe"))
    try:
        s.start()
        yield s
    finally:
        problems = s.close()
        assert not problems, "; ".join(problems)


def _source(stack: Stack, address: str | None = None, **kw: object) -> PrometheusSource:
    settings = PrometheusSettings(address=address or stack.prom_url, window_s=5.0, max_age_s=5.0, timeout_s=3.0,
                                  **kw)  # type: ignore[arg-type]
    return PrometheusSource(stack.client, settings, policy=f"{JOB}/triton")


def test_series_arrive_with_job_pool_alloc_node_model_labels(stack: Stack) -> None:
    allocs = stack.triton_allocs()
    assert len(allocs) == 1
    wait_for(lambda: [t for t in stack.targets("nomad-triton-triton") if t["health"] == "up"], 60,
             "the Triton metrics target up in Prometheus")
    series = wait_for(lambda: stack.query(f'nv_inference_count{{job="{JOB}"}}'), 30, "nv_inference_count series")
    (alloc, node), = allocs.items()
    assert {s["metric"]["model"] for s in series} == {"mlp", "relu_onnx"}
    for s in series:
        m = s["metric"]
        assert (m["job"], m["pool"], m["group"], m["alloc"], m["node"]) == (JOB, "default", "triton", alloc, node), m
    # The autoscaler's own /metrics, found through its Nomad service and labelled with the job it scales.
    desired = wait_for(lambda: stack.query("nomad_triton_autoscaler_desired_count"), 60, "autoscaler metrics")
    assert desired[0]["metric"]["job"] == JOB and desired[0]["value"][1] == "1"
    assert UUID.match(desired[0]["metric"]["alloc"])


def test_prometheus_source_observes_what_the_direct_scrape_sees(stack: Stack) -> None:
    target = Target(job=JOB, group="triton", models=("mlp", "relu_onnx"))
    wait_for(lambda: stack.query(f'rate(nv_inference_request_success{{job="{JOB}",model="mlp"}}[5s]) > 0'), 60,
             "load visible in Prometheus")

    async def both() -> tuple[list, list]:
        prom = _source(stack)
        direct = DirectSource(stack.client, Prober(timeout_s=2.0))
        try:
            await prom.check(target)
            await direct.observe(target)  # first direct scrape has no rates yet
            await asyncio.sleep(3.0)
            return await prom.observe(target), await direct.observe(target)
        finally:
            await prom.aclose()
            await direct.aclose()

    p_obs, d_obs = asyncio.run(both())
    assert [o.alloc_id for o in p_obs] == [o.alloc_id for o in d_obs] == sorted(stack.triton_allocs())
    p, d = p_obs[0], d_obs[0]
    assert p.has_rates() and d.has_rates() and p.ready and d.ready
    assert set(p.models) == set(d.models) == {"mlp", "relu_onnx"}
    # ~10 req/s on mlp measured two ways over different windows: the same load, within noise.
    ps, ds = p.models["mlp"].success_per_s, d.models["mlp"].success_per_s
    assert ps is not None and ds is not None and 5 < ps < 15 and 5 < ds < 15, (ps, ds)
    # The same p95 (Triton's summary) through both: one number read two ways, a few seconds apart.
    pp, dp = p.models["mlp"].p95_latency_us, d.models["mlp"].p95_latency_us
    assert pp is not None and dp is not None and pp > 0 and dp > 0, (pp, dp)


def test_controller_runs_the_same_policy_on_the_prometheus_source(stack: Stack) -> None:
    cfg = ScalingPolicyConfig(min_count=1, max_count=3, window_s=5.0)
    ctl = Controller(stack.client, ControllerSettings(job=JOB, group="triton", dry_run=True), cfg, source=_source(stack))

    async def go() -> list:
        out = []
        for _ in range(3):
            out.append(await ctl.step())
            await asyncio.sleep(1.0)
        await ctl.aclose()
        return out

    decisions = asyncio.run(go())
    last = decisions[-1]
    assert last.signals["allocs_with_data"] == 1 and last.signals["demand"] is not None
    assert last.direction == "none" and "within band" in last.reason, last.reason


def test_unanswering_prometheus_is_reported_and_the_policy_holds(stack: Stack) -> None:
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    cfg = ScalingPolicyConfig(min_count=1, max_count=3)
    ctl = Controller(stack.client, ControllerSettings(job=JOB, group="triton", interval_s=0.2), cfg,
                     source=_source(stack, address=dead))
    failures = asyncio.run(ctl.run(max_steps=3))
    assert failures == 3 and ctl.last_decision is None
    assert ctl.metrics.scale_requests.labels(result="ok")._value.get() == 0

    async def step_error() -> str:
        try:
            await _source(stack, address=dead).observe(Target(job=JOB, group="triton"))
        except SourceUnavailable as exc:
            return str(exc)
        return ""

    msg = asyncio.run(step_error())
    assert msg.startswith(f"policy {JOB}/triton: Prometheus at {dead} did not answer query"), msg
    assert int(stack.client.scale_status(JOB)["TaskGroups"]["triton"]["Desired"]) == 1


def test_a_query_gone_bad_at_run_time_holds_the_policy_and_says_why(stack: Stack) -> None:
    many = ('nv_inference_pending_request_count{job="$job"} or '
            'label_replace(nv_inference_pending_request_count{job="$job"}, "x", "1", "", "")')
    cfg = ScalingPolicyConfig(min_count=1, max_count=3)
    ctl = Controller(stack.client, ControllerSettings(job=JOB, group="triton", interval_s=0.2), cfg,
                     source=_source(stack, queries={"pending": many}))
    assert asyncio.run(ctl.run(max_steps=2)) == 2 and ctl.last_decision is None

    async def why() -> str:
        src = _source(stack, queries={"pending": many})
        try:
            await src.observe(Target(job=JOB, group="triton"))
        except QueryError as exc:
            return str(exc)
        finally:
            await src.aclose()
        return ""

    assert "policy triton-cpu/triton: query pending" in asyncio.run(why())
    assert int(stack.client.scale_status(JOB)["TaskGroups"]["triton"]["Desired"]) == 1


def test_autoscale_run_cli_on_the_prometheus_source(stack: Stack, tmp_path: Path) -> None:
    base = (ROOT / "jobs" / "cpu-example.toml").read_text().replace(
        'path = "../examples/models"', f'path = "{ROOT / "examples" / "models"}"').replace(
        "[scaling.policy]\n", '[scaling.policy]\nsource = "prometheus"\n')
    spec = tmp_path / "prom.toml"
    spec.write_text(base + f'\n[scaling.policy.prometheus]\naddress = "{stack.prom_url}"\nwindow = "5s"\n'
                    'max_age = "5s"\n')
    r = run_cli(["autoscale", "run", JOB, "--spec", str(spec), "--dry-run", "--duration", "4", "--json"],
                stack.addr, timeout=90)
    assert r.code == 0, r.text
    out = r.json()
    assert out["failed_steps"] == 0 and out["desired"] == 1 and out["last_decision"], out


def test_bad_queries_exit_2_with_one_line_naming_policy_and_query(stack: Stack, tmp_path: Path) -> None:
    def spec(address: str, queries: str = "") -> Path:
        p = tmp_path / f"spec{len(list(tmp_path.iterdir()))}.toml"
        base = (ROOT / "jobs" / "cpu-example.toml").read_text().replace('path = "../examples/models"',
                                                                          f'path = "{ROOT / "examples" / "models"}"')
        p.write_text(base + f'\n[scaling.policy.prometheus]\naddress = "{address}"\nwindow = "5s"\n{queries}\n')
        return p

    cases = [
        (spec(f"http://127.0.0.1:{free_ports(1)[0]}"), "did not answer query"),
        (spec(stack.prom_url, '[scaling.policy.prometheus.queries]\npending = "sum by (alloc, model) (nope_missing{job=\\"$job\\"})"'),
         "returns no series"),
        (spec(stack.prom_url, '[scaling.policy.prometheus.queries]\npending = "sum(nv_inference_pending_request_count{job=\\"$job\\"})"'),
         "lack the alloc and model labels"),
        (spec(stack.prom_url, '[scaling.policy.prometheus.queries]\npending = "nv_inference_count{job=\\"$job\\"} or label_replace(nv_inference_count{job=\\"$job\\"}, \\"x\\", \\"1\\", \\"\\", \\"\\")"'),
         "many series"),
        (spec(stack.prom_url, '[scaling.policy.prometheus.queries]\npending = "sum by (alloc (x"'), "does not parse"),
    ]
    for path, expected in cases:
        text = path.read_text().replace('[scaling.policy]\n', '[scaling.policy]\nsource = "prometheus"\n')
        path.write_text(text)
        r = run_cli(["autoscale", "run", JOB, "--spec", str(path), "--duration", "1"], stack.addr, timeout=60)
        lines = r.err.strip().splitlines()
        assert r.code == 2 and len(lines) == 1, r.text
        assert expected in lines[0] and "Traceback" not in r.text, lines[0]
        if expected != "does not parse":  # caught when the spec loads: names the file, field and query
            assert f"policy {JOB}/triton: " in lines[0], lines[0]
            assert "query pending" in lines[0] or "query success_per_s" in lines[0], lines[0]


def test_every_dashboard_query_parses_and_answers_with_data(stack: Stack) -> None:
    wait_for(lambda: stack.query(f'nv_inference_request_summary_us{{job="{JOB}",quantile="0.95"}} > 0'), 60,
             "latency summaries under load")
    wait_for(lambda: stack.query("nomad_triton_autoscaler_decisions_total"), 30, "autoscaler decisions")
    queries = dashboard_queries()
    assert len(queries) >= 12
    empty = []
    for panel, expr in queries:
        concrete = expr.replace("$pool", ".+").replace("$job", ".+").replace("$__rate_interval", "20s")
        promql_parser.parse(concrete)
        result = stack.query(concrete)  # asserts Prometheus evaluated it (status success)
        if not result:
            empty.append(panel)
    # Triton exports nv_gpu_* only on a GPU host: those panels are empty here and nowhere else.
    assert stack.query('count({__name__=~"nv_gpu_.*"})') == []
    assert sorted(set(empty)) == sorted(GPU_ONLY_PANELS), empty


def test_scaling_adds_a_target_within_one_refresh_without_restart(stack: Stack) -> None:
    assert stack.prom is not None and stack.client is not None
    pid = stack.prom.pid
    before = set(stack.triton_allocs())
    stack.client.scale(JOB, "triton", 2, "e2e: observability scale-out")
    regs = wait_for(lambda: [r for r in stack.client.service(f"{JOB}-metrics") if r["AllocID"] not in before],
                    120, "the new allocation's metrics service in Nomad's catalogue", interval=0.1)
    registered_at = time.monotonic()
    new_alloc = regs[0]["AllocID"]
    # One http_sd refresh, plus Prometheus' discovery manager, which hands new targets to the scrape
    # manager on a fixed 5 s tick, plus 2 s for the SD long-poll's turnaround on a busy machine.
    # That stays under two refreshes, so a target that needed a second refresh fails this.
    budget = REFRESH_S + 5.0 + 2.0
    assert budget < 2 * REFRESH_S
    wait_for(lambda: [t for t in stack.targets("nomad-triton-triton") if t["labels"].get("alloc") == new_alloc],
             budget, f"Prometheus target for {new_alloc} within one refresh", interval=0.1)
    took = time.monotonic() - registered_at
    series = wait_for(lambda: stack.query(f'nv_inference_count{{alloc="{new_alloc}"}}'), 30, "the new alloc's series")
    assert {s["metric"]["job"] for s in series} == {JOB}
    assert stack.prom.poll() is None and stack.prom.pid == pid  # same process: no restart, no reload
    print(json.dumps({"new_target_after_registration_s": round(took, 2), "budget_s": budget}))
