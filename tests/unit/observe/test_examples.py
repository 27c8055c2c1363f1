"""The committed examples are the generators' output, both discovery paths relabel identically, the
configs are valid for a real Prometheus (`promtool`, from Debian's prometheus package), and every
dashboard query is PromQL."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import promql_parser
import yaml

from nomad_triton.observe.dashboard import dashboard_queries
from nomad_triton.observe.examples import generated
from nomad_triton.observe.prometheus_config import prometheus_config, relabel_configs
from nomad_triton.observe.queries import ANNOTATION_QUERY, DASHBOARD

ROOT = Path(__file__).resolve().parents[3]


def test_committed_examples_equal_the_generators_output() -> None:
    for rel, text in generated().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: run `make examples`"


def test_both_discovery_paths_use_the_same_relabelling() -> None:
    nomad, http = (prometheus_config(d)["scrape_configs"] for d in ("nomad", "http"))
    assert [j["relabel_configs"] for j in nomad] == [j["relabel_configs"] for j in http]
    assert [j["relabel_configs"] for j in nomad] == [relabel_configs("triton"), relabel_configs("autoscaler")]
    assert "nomad_sd_configs" in nomad[0] and "http_sd_configs" in http[0]
    targets = {r.get("target_label") for r in relabel_configs("triton")}
    assert {"job", "pool", "alloc", "node"} <= targets


def test_http_sd_config_is_valid_for_a_real_prometheus(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    path = ROOT / "examples" / "prometheus" / "prometheus.http-sd.yml"
    r = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # Debian's build has no nomad_sd; the only complaint about the other file must be exactly that.
    other = ROOT / "examples" / "prometheus" / "prometheus.nomad-sd.yml"
    r = subprocess.run([promtool, "check", "config", str(other)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "field nomad_sd_configs not found" in r.stdout + r.stderr
    assert yaml.safe_load(other.read_text())["scrape_configs"][0]["nomad_sd_configs"][0]["server"]


def test_every_dashboard_query_is_promql() -> None:
    queries = dashboard_queries((ROOT / "examples" / "grafana" / "nomad-triton.json").read_text())
    assert len(queries) == sum(len(t) for t in DASHBOARD.values())
    for _, expr in [*queries, ("annotation", ANNOTATION_QUERY)]:
        promql_parser.parse(expr.replace("$pool", ".+").replace("$job", ".+").replace("$__rate_interval", "1m"))
    data = json.loads((ROOT / "examples" / "grafana" / "nomad-triton.json").read_text())
    assert [v["name"] for v in data["templating"]["list"]] == ["datasource", "pool", "job"]
    assert data["annotations"]["list"][0]["expr"] == ANNOTATION_QUERY
