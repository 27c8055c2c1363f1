"""`nomad-triton sd`: Prometheus HTTP service discovery from Nomad's service catalogue.

For a Prometheus without `nomad_sd_configs` (before 2.37, or distribution builds such as Debian's).
The work is in nomad_triton.observe.sd; this module parses flags, serves, and exits with our codes.
`--print-config nomad|http` prints the matching prometheus.yml (the same generator as
examples/prometheus/) for this Nomad address and this endpoint, and exits.
"""

from __future__ import annotations

import json

import typer

from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JSON_OPT, fail
from nomad_triton.cli.connection import Connection, with_connection


@with_connection
def sd(
    listen: str = typer.Option("127.0.0.1:9195", "--listen", help="host:port to serve http_sd on."),
    wait: float = typer.Option(30.0, "--wait", help="Blocking-query wait in seconds (Nomad caps it at 600)."),
    print_config: str = typer.Option(None, "--print-config", metavar="nomad|http",
                                     help="Print a prometheus.yml for this discovery path and exit."),
    scrape_interval: float = typer.Option(5.0, "--scrape-interval", help="With --print-config: seconds."),
    refresh: float = typer.Option(15.0, "--refresh", help="With --print-config: SD refresh interval, seconds."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Serve `GET /v1/targets` (Prometheus http_sd JSON, nomad_sd's labels) and `GET /healthz`."""
    from nomad_triton.observe.prometheus_config import prometheus_config, render_yaml

    assert conn is not None
    host, _, port_text = listen.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        fail(f"--listen: {listen!r} is not host:port (e.g. 127.0.0.1:9195)", EXIT_BAD_INPUT, as_json)
    if not 0 < wait <= 600:
        fail(f"--wait: {wait:g} is not between 0 and 600 seconds", EXIT_BAD_INPUT, as_json)
    if scrape_interval <= 0 or refresh <= 0:
        fail("--scrape-interval and --refresh must be > 0", EXIT_BAD_INPUT, as_json)
    if print_config is not None:
        if print_config not in ("nomad", "http"):
            fail(f"--print-config: {print_config!r} is not one of nomad, http", EXIT_BAD_INPUT, as_json)
        cfg = prometheus_config(print_config, nomad_addr=conn.settings.address,  # type: ignore[arg-type]
                                namespace=conn.settings.namespace or "default",
                                sd_url=f"http://{listen}/v1/targets", scrape_interval_s=scrape_interval,
                                refresh_s=refresh)
        typer.echo(render_yaml(cfg, print_config), nl=False)  # type: ignore[arg-type]
        return
    _serve(conn, host, int(port_text), wait, as_json)


def _serve(conn: Connection, host: str, port: int, wait: float, as_json: bool) -> None:
    import uvicorn

    from nomad_triton.observe.sd import ServiceCatalogue, sd_app

    cat = ServiceCatalogue(conn.client, namespace=conn.settings.namespace, wait_s=wait)
    cat.follow()
    first = cat.wait_ready(15.0)
    if first.updated_at is None:
        cat.close()
        fail(f"sd: Nomad at {conn.settings.address} did not answer: {first.error or 'no reply in 15s'}", EXIT_FAILED, as_json)
    url = f"http://{host}:{port}/v1/targets"
    if as_json:
        typer.echo(json.dumps({"event": "serving", "url": url, "registrations": len(first.registrations)}), err=True)
    else:
        typer.echo(f"sd: serving {url} ({len(first.registrations)} registrations)", err=True)
    try:
        uvicorn.run(sd_app(cat), host=host, port=port, log_level="warning", lifespan="off")
    finally:
        cat.close()


def register(app: typer.Typer) -> None:
    app.command("sd")(sd)
