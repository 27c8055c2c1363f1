"""`[scaling.policy.prometheus]`: where the autoscaler reads PromQL when `source = "prometheus"`.

Kept apart from models.py so the observation source stays a small, self-contained addition. The
queries are checked as PromQL and against Prometheus when the autoscaler starts
(nomad_triton.autoscale.sources.prometheus.PrometheusSource.check), not here: parsing needs no
network, but whether a query returns one series per allocation does.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nomad_triton.spec.durations import Duration


class PrometheusSourceSpec(BaseModel):
    """Prometheus address and optional query overrides (by observation field; see docs/observability.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)

    address: str = Field(description="Prometheus base URL, e.g. http://prometheus.service:9090.")
    queries: dict[str, str] = Field(default_factory=dict, description="Field name -> PromQL override.")
    window: Duration = Field(timedelta(seconds=30), description="rate() range: at least two scrapes.")
    max_age: Duration = Field(timedelta(seconds=30), description="Older scrapes are stale: no data.")
    timeout: Duration = Field(timedelta(seconds=5), description="Per-query deadline.")

    @field_validator("address")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("queries")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        """Known names, and PromQL that parses once its placeholders are filled (no network needed)."""
        from string import Template

        import promql_parser

        from nomad_triton.observe.queries import SOURCE_QUERIES

        unknown = sorted(set(v) - set(SOURCE_QUERIES))
        if unknown:
            raise ValueError(f"unknown query name {unknown[0]!r}; expected one of {', '.join(SOURCE_QUERIES)}")
        for name, query in v.items():
            try:
                filled = Template(query).substitute(job="j", group="g", namespace="n", window="30s")
            except (KeyError, ValueError) as exc:
                raise ValueError(f"query {name} ({query}): unknown placeholder {exc}; use $job, $group, "
                                 "$namespace, $window") from None
            try:
                promql_parser.parse(filled)
            except Exception as exc:  # noqa: BLE001 - promql_parser raises its own kinds
                raise ValueError(f"query {name} ({query}) does not parse: {' '.join(str(exc).split())}") from None
        return v

    def settings(self):  # type: ignore[no-untyped-def]  # -> PrometheusSettings (autoscale imports spec, not back)
        from nomad_triton.autoscale.sources.prometheus import PrometheusSettings

        return PrometheusSettings(address=self.address, queries=dict(self.queries),
                                  window_s=self.window.total_seconds(), max_age_s=self.max_age.total_seconds(),
                                  timeout_s=self.timeout.total_seconds())
