"""`autoscale simulate --report FILE.html`: one self-contained page that shows why a policy lags or flaps.

A plot answers at a glance what the numbers table cannot: when load rose, when capacity followed,
where latency broke the SLO (shaded spans), and which scaling action each replica change was and
why (hover a marker for its reason). plotly.js is inlined (no network needed to open the page); the
same numbers table as the terminal's sits beneath, then every action with its reason.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nomad_triton.autoscale.simulate import SimResult, Tick

COLORS = {"ours": "#1f77b4", "baseline": "#d62728"}
SPAN_FILL = {"ours": "rgba(31,119,180,0.15)", "baseline": "rgba(214,39,40,0.12)"}


def _color(policy: str) -> str:
    return COLORS.get(policy.split("@")[0], "#2ca02c")


def violation_spans(timeline: Sequence[Tick]) -> list[tuple[float, float]]:
    """Contiguous (start, end) times where the SLO was violated."""
    spans: list[tuple[float, float]] = []
    start = prev = None
    for tick in timeline:
        if tick.violating and start is None:
            start = prev if prev is not None else tick.t
        elif not tick.violating and start is not None:
            spans.append((start, tick.t))
            start = None
        prev = tick.t
    if start is not None and prev is not None:
        spans.append((start, prev))
    return spans


def figure(results: Sequence[SimResult], title: str) -> go.Figure:
    """Top: load and each policy's serving capacity (req/s); bottom: replicas, actions marked."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("load and capacity (req/s)", "replicas (markers: scaling actions)"))
    first = results[0].timeline
    fig.add_trace(go.Scatter(x=[k.t for k in first], y=[k.load_rps for k in first], name="load",
                             line={"color": "#555", "width": 1}), row=1, col=1)
    for r in results:
        c = _color(r.policy)
        xs = [k.t for k in r.timeline]
        fig.add_trace(go.Scatter(x=xs, y=[k.capacity_rps for k in r.timeline], name=f"capacity ({r.policy})",
                                 line={"color": c, "shape": "hv"}), row=1, col=1)
        fig.add_trace(go.Scatter(x=xs, y=[k.replicas for k in r.timeline], name=f"replicas ({r.policy})",
                                 line={"color": c, "shape": "hv"}), row=2, col=1)
        fig.add_trace(go.Scatter(
            x=[a[0] for a in r.actions], y=[a[1] for a in r.actions], mode="markers", name=f"actions ({r.policy})",
            marker={"color": c, "size": 9, "symbol": ["triangle-up" if a[2] == "up" else "triangle-down"
                                                       for a in r.actions]},
            text=[f"{r.policy}: {a[2]} to {a[1]} at t={a[0]:.0f}s<br>{html.escape(a[3])}" for a in r.actions],
            hoverinfo="text"), row=2, col=1)
        for x0, x1 in violation_spans(r.timeline):
            fig.add_vrect(x0=x0, x1=x1, fillcolor=SPAN_FILL.get(r.policy.split("@")[0], "rgba(44,160,44,0.12)"),
                          line_width=0, layer="below")
    fig.update_layout(title=title + " (shaded: SLO violated; blue ours, red baseline)", height=720,
                      hovermode="closest", legend={"orientation": "h", "y": -0.08})
    fig.update_xaxes(title_text="t (s)", row=2, col=1)
    return fig


def _table(rows: list[dict[str, object]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(results: Sequence[SimResult], title: str) -> str:
    """The whole page: figure (plotly.js inlined), numbers table, actions with reasons."""
    if not results or not results[0].timeline:
        raise ValueError("nothing to plot: the simulation produced no ticks")
    plot = figure(results, title).to_html(full_html=False, include_plotlyjs=True, div_id="simulation",
                                          config={"displaylogo": False})
    cols = ("policy", "replica_seconds", "slo_violation_s", "scale_actions", "reversals", "max_replicas")
    summary = _table([r.summary() for r in results], cols)
    actions = _table([{"policy": r.policy, "t (s)": f"{t:.1f}", "to": c, "direction": d, "reason": why}
                      for r in results for t, c, d, why in r.actions],
                     ("policy", "t (s)", "to", "direction", "reason"))
    ratio = ""
    if len(results) == 2 and results[1].replica_seconds:
        ratio = (f"<p>replica-seconds {html.escape(results[0].policy)}/{html.escape(results[1].policy)}: "
                 f"{results[0].replica_seconds / results[1].replica_seconds:.2f}</p>")
    style = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}")
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{plot}"
            f"<h2>Numbers</h2>{summary}{ratio}<h2>Scaling actions</h2>{actions}</body></html>\n")


def trace_count(results: Sequence[SimResult]) -> int:
    """How many traces the figure draws (load + capacity, replicas and actions per policy)."""
    return 1 + 3 * len(results)
