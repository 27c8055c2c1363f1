"""The Grafana dashboard (examples/grafana/nomad-triton.json), built with grafana-foundation-sdk.

Generated, not hand-written: the panels' PromQL is nomad_triton.observe.queries (what the
autoscaler's Prometheus source reads too), and a unit test checks the committed JSON equals this
module's output (`make examples` rewrites it). Variables: the Prometheus datasource, `pool`, `job`.
"""

from __future__ import annotations

import json

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

from nomad_triton.observe.queries import ANNOTATION_QUERY, DASHBOARD

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
UNITS = {
    "Throughput (req/s)": "reqps",
    "Latency (ms)": "ms",
    "GPU utilisation": "percentunit",
    "CPU utilisation": "percentunit",
    "GPU memory used (bytes)": "bytes",
}


def _variable(name: str, label: str, query: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(label).datasource(DS).query(query)
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).multi(True).include_all(True).all_value(".*"))


def build() -> object:
    """The dashboard model (grafana_foundation_sdk.models.dashboard.Dashboard)."""
    dash = (
        db.Dashboard("nomad-triton: Triton on Nomad")
        .uid("nomad-triton")
        .tags(["nomad", "triton", "nomad-triton"])
        .refresh("10s")
        .time("now-1h", "now")
        .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(_variable("pool", "Node pool", "label_values(nv_inference_count, pool)"))
        .with_variable(_variable("job", "Job", 'label_values(nv_inference_count{pool=~"$pool"}, job)'))
        .annotation(db.AnnotationQuery().name("Scaling events").datasource(DS).enable(True)
                    .icon_color("orange").expr(ANNOTATION_QUERY))
    )
    for title, targets in DASHBOARD.items():
        panel = (timeseries.Panel().title(title).datasource(DS).height(8).span(12)
                 .legend(cb.VizLegendOptions().display_mode(LegendDisplayMode.TABLE)
                         .placement(LegendPlacement.BOTTOM).show_legend(True).calcs(["lastNotNull", "max"]))
                 .tooltip(cb.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))
        if title in UNITS:
            panel = panel.unit(UNITS[title])
        for i, (legend, expr) in enumerate(targets.items()):
            panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend)
                                      .ref_id(chr(ord("A") + i)).datasource(DS))
        dash = dash.with_panel(panel)
    return dash.build()


def dashboard_json() -> str:
    """The committed file's exact text."""
    return json.dumps(build(), cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


def dashboard_queries(text: str | None = None) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target in the dashboard JSON (default: the generated one)."""
    data = json.loads(text if text is not None else dashboard_json())
    return [(p["title"], t["expr"]) for p in data.get("panels", []) for t in p.get("targets", [])]
