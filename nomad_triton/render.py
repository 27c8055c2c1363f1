"""Render a DeploymentSpec into a Nomad HCL2 job with a sandboxed jinja2 environment.

Why a sandbox and StrictUndefined: templates may be customised by users, and a misspelt variable
must fail the render instead of silently emitting an empty string into a production job.
Why the `hcl` filter: every user value becomes a valid HCL2 literal, so a `${` or quote in a value
can never turn into an interpolation or break the file. Runtime interpolations that Nomad fills
in (`${NOMAD_PORT_http}`, `${device.attr.memory}`) are written literally in the templates only.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import hcl2
from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from nomad_triton.spec import DeploymentSpec
from nomad_triton.spec.durations import format_duration

MAIN_TEMPLATE = "triton.nomad.hcl.j2"
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def hcl_string(value: str) -> str:
    """Quote `value` as an HCL2 string literal whose parsed value is exactly `value`."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out).replace("${", "$${").replace("%{", "%%{")
    return f'"{text}"'


def unquote_hcl_string(literal: str) -> str:
    """Inverse of `hcl_string` for python-hcl2's output (which keeps quotes and escapes verbatim)."""
    if len(literal) < 2 or literal[0] != '"' or literal[-1] != '"':
        raise ValueError(f"not a quoted HCL string: {literal!r}")
    body, out, i = literal[1:-1], [], 0
    simple = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1]
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
            elif nxt == "u":
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
            elif nxt == "U":
                out.append(chr(int(body[i + 2 : i + 10], 16)))
                i += 10
            else:
                raise ValueError(f"unknown escape \\{nxt} in {literal!r}")
        elif body.startswith("$${", i) or body.startswith("%%{", i):
            out.append(body[i] + "{")
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def to_hcl(value: Any, indent: int = 0) -> str:
    """Any spec value as an HCL2 expression: strings escaped, durations in Go form, lists and maps."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, timedelta):
        return hcl_string(format_duration(value))
    if isinstance(value, str):
        return hcl_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(to_hcl(v, indent) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        pad = " " * (indent + 2)
        width = max(len(hcl_string(str(k))) for k in value)
        rows = [f"{pad}{hcl_string(str(k)).ljust(width)} = {to_hcl(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + "\n".join(rows) + "\n" + " " * indent + "}"
    raise TypeError(f"cannot render {type(value).__name__} as HCL")


def _templates_dir() -> Path:
    """Installed package data first (wheel), the source tree's templates/ as a fallback."""
    try:
        candidate = Path(str(importlib.resources.files("nomad_triton.templates")))
        if (candidate / MAIN_TEMPLATE).is_file():
            return candidate
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "templates"


def make_environment(templates_dir: Path | None = None) -> SandboxedEnvironment:
    """A fresh sandboxed environment with the HCL filters (cached by `environment()`)."""
    env = SandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir or _templates_dir())),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["hcl"] = to_hcl
    env.filters["duration"] = lambda v: hcl_string(format_duration(v))
    env.filters["hcl_list"] = lambda v: to_hcl(list(v))
    env.filters["hcl_map"] = lambda v, indent=0: to_hcl(dict(v), indent)
    return env


@functools.cache
def environment() -> SandboxedEnvironment:
    """The process-wide environment: templates compile once, renders reuse them."""
    return make_environment()


def template_context(spec: DeploymentSpec) -> dict[str, Any]:
    """Everything the templates use, derived once here so templates stay declarative."""
    repo = spec.model_repository
    driver = spec.driver
    bridge = driver.type == "docker" and driver.network_mode == "bridge"
    container_ports = {"http": 8000, "grpc": 8001, "metrics": 8002}
    ports = []
    for label in ("http", "grpc", "metrics"):
        port = getattr(spec.ports, label)
        to = port.to or (container_ports[label] if bridge else None)
        ports.append({"label": label, "static": port.static, "to": to})
    args = driver.args if driver.args is not None else ["serve", "--models", spec.repository_path]
    env = {
        "NOMAD_TRITON_MODEL_REPOSITORY": spec.repository_path,
        "NOMAD_TRITON_MODELS": ",".join(repo.models),
        "NOMAD_TRITON_SERVICE": spec.service_name,
        **spec.env,
    }
    policy = {k: v for k, v in spec.scaling.policy.model_dump(mode="python").items() if v is not None}
    return {
        "spec": spec,
        "repo": repo,
        "driver": driver,
        "bridge": bridge,
        "ports": ports,
        "args": args,
        "task_env": env,
        "policy": policy,
        "policy_width": max(map(len, policy), default=0),
        "env_width": max(len(hcl_string(k)) for k in [*env, "PYTRITON_HOME"]),
        "ulimit_width": max(map(len, getattr(driver, "ulimits", {}) or {}), default=0),
        "checks": _checks(spec),
    }


def _checks(spec: DeploymentSpec) -> list[dict[str, str]]:
    checks = [{"name": "triton-ready", "path": spec.health.ready_path}]
    if spec.health.per_model:
        checks += [
            {"name": f"model-{m}-ready", "path": f"/v2/models/{m}/ready"}
            for m in spec.model_repository.models
        ]
    return checks


def render_job(spec: DeploymentSpec, env: SandboxedEnvironment | None = None) -> str:
    """The HCL2 job text for `spec` (what `nomad-triton render` prints)."""
    template = (env or environment()).get_template(MAIN_TEMPLATE)
    return template.render(**template_context(spec))


def parse_rendered(hcl_text: str) -> dict[str, Any]:
    """python-hcl2's view of a rendered job (quotes kept; see unquote_hcl_string)."""
    return hcl2.loads(hcl_text)


def validate_local(spec: DeploymentSpec) -> list[str]:
    """Local checks short of asking a Nomad server: render, parse back, compare key values.

    Returns a list of problems (empty when fine). Server-side parsing/validation lives in the
    deploy commands; this catches template and escaping defects before any network call.
    """
    try:
        text = render_job(spec)
    except Exception as exc:  # a template defect must be reported, not crash validate
        return [f"render failed: {type(exc).__name__}: {exc}"]
    try:
        doc = parse_rendered(text)
    except Exception as exc:
        return [f"rendered HCL does not parse: {' '.join(str(exc).split())[:300]}"]
    problems: list[str] = []
    jobs = doc.get("job") or []
    if len(jobs) != 1 or len(jobs[0]) != 1:
        return ["rendered HCL must contain exactly one job block"]
    ((label, job),) = jobs[0].items()
    if unquote_hcl_string(label) != spec.name:
        problems.append(f"job label {label} does not match name {spec.name!r}")
    groups = job.get("group") or []
    if len(groups) != 1:
        return [*problems, "rendered job must contain exactly one group"]
    ((_, group),) = groups[0].items()
    if group.get("count") != spec.count:
        problems.append(f"group count {group.get('count')} != spec count {spec.count}")
    services = group.get("service") or []
    paths = {unquote_hcl_string(c["path"]) for s in services for c in s.get("check", [])}
    for check in _checks(spec):
        if check["path"] not in paths:
            problems.append(f"missing health check on {check['path']}")
    tasks = group.get("task") or []
    if len(tasks) != 1:
        problems.append("rendered group must contain exactly one task")
    else:
        ((_, task),) = tasks[0].items()
        env = {unquote_hcl_string(k): unquote_hcl_string(v) for k, v in (task.get("env") or {}).items()}
        for key, value in spec.env.items():
            if env.get(key) != value:
                problems.append(f"env {key} did not survive rendering")
    return problems
