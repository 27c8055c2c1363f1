"""Nomad HCL2 job text -> the API Job JSON that `POST /v1/jobs/parse` returns.

Public functions of the jobspec package (devcluster's stand-in for Nomad's jobspec2 + api structs):

- `parse_job_hcl(text, variables=None, canonicalize=False) -> dict`        (this module)
- `parse_duration(value) -> int`  Go `time.ParseDuration` semantics, nanoseconds (this module)
- `canonicalize_job(job) -> dict`                                           (canonical.py)
- `validate_job(job) -> tuple[list[str], list[str]]`  (errors, warnings)    (validate.py)
- `diff_jobs(old, new) -> dict`, `annotate_count_changes(diff)`             (jobdiff.py)

Layout: hclvalues.py (python-hcl2 source forms -> values: escapes, heredocs, `${..}`),
jobspec_decode.py (schema-driven block decoder, type conversions), jobspec_blocks.py (one decoder
per Nomad block), this module (variables, locals, the entry point).

Unset fields are omitted (Nomad returns them as null); `canonicalize_job` fills the defaults.
Errors raise `ApiError(400, ...)` with HCL-diagnostic-shaped texts as Nomad's parse endpoint does.
"""

from __future__ import annotations

from typing import Any

from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.hclvalues import Body, Scope, evaluate, hcl_error, load_hcl, to_body
from nomad_triton.devcluster.jobspec_blocks import decode_job
from nomad_triton.devcluster.jobspec_decode import _Decoder, parse_duration

__all__ = ["parse_duration", "parse_job_hcl"]


def _coerce_var(name: str, type_: str | None, value: Any) -> Any:
    """CLI-style string values (`-var x=1`) are converted to the declared type, as HCL does."""
    if not isinstance(value, str) or type_ in (None, "string", "any"):
        return value
    try:
        if type_ == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if type_ == "bool" and value in ("true", "false"):
            return value == "true"
    except ValueError:
        pass
    raise hcl_error("Invalid value for input variable", f'The value for variable "{name}" is not a valid {type_}.')


def _declare_variables(top: Body, supplied: dict[str, Any]) -> dict[str, Any]:
    scope = Scope()
    declared: dict[str, Any] = {}
    types: dict[str, str | None] = {}
    missing = object()
    for block in top.blocks_of("variable"):
        d = _Decoder(scope, f'variable "{block.labels[0] if block.labels else ""}"')
        (name,) = d.labels(block, ["name"])
        d.check(block.body, {"type", "default", "description", "sensitive", "nullable"}, {"validation"})
        if block.body.blocks_of("validation"):
            raise hcl_error("Unsupported block type", 'Blocks of type "validation" are not supported by devcluster.',
                            d.where)
        if name in declared:
            raise hcl_error("Duplicate variable", f'Duplicate "{name}" variable definition found.')
        raw_type = block.body.attrs.get("type")
        types[name] = raw_type.strip("${}") if isinstance(raw_type, str) else None
        declared[name] = evaluate(block.body.attrs["default"], scope) if "default" in block.body.attrs else missing
    for block in top.blocks_of("variables"):
        for name, raw in block.body.attrs.items():
            declared[name] = evaluate(raw, scope)
            types[name] = None
    for name, value in supplied.items():
        if name not in declared:
            raise hcl_error(
                "Undefined variable", f'A "{name}" variable was set but was not declared in the job file.'
            )
        declared[name] = _coerce_var(name, types.get(name), value)
    for name, value in declared.items():
        if value is missing:
            raise hcl_error(f'Unset variable "{name}"', "A used variable must be set or have a default value.")
    return declared


def _supplied_variables(variables: str | dict[str, Any] | None) -> dict[str, Any]:
    if variables is None or variables == "":
        return {}
    if isinstance(variables, dict):
        return dict(variables)
    if not isinstance(variables, str):
        raise ApiError(400, "error parsing: Variables must be variable-file text such as 'x = \"v\"'")
    body = to_body(load_hcl(variables))
    if body.blocks:
        raise hcl_error("Unexpected block in variables", f'Blocks of type "{body.blocks[0].type}" are not allowed '
                        "in a variables file.")
    return {k: evaluate(v, Scope()) for k, v in body.attrs.items()}


def parse_job_hcl(text: str, variables: str | dict[str, Any] | None = None, canonicalize: bool = False) -> dict:
    """Nomad HCL2 job text (+ var-file text or dict) -> API Job JSON; optionally canonicalized.

    Raises ApiError(400, ...) for syntax errors, unknown/unsupported blocks or arguments, bad types,
    unset or undeclared variables and unsupported expressions.
    """
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "error parsing: job HCL is empty")
    top = to_body(load_hcl(text))
    supplied = _supplied_variables(variables)
    root = _Decoder(Scope(), "")
    root.check(top, set(), {"job", "variable", "variables", "locals"})
    scope = Scope(_declare_variables(top, supplied))
    for block in top.blocks_of("locals"):
        for name, raw in block.body.attrs.items():
            if name in scope.locals:
                raise hcl_error("Duplicate value in locals", f"Duplicate {name} definition found.")
            scope.locals[name] = evaluate(raw, scope)
    jobs = top.blocks_of("job")
    if not jobs:
        raise hcl_error("Missing job block", "A job block is required")
    if len(jobs) > 1:
        raise hcl_error("Duplicate job block", 'Only one block of type "job" is allowed.')
    job = decode_job(jobs[0], scope)
    if canonicalize:
        from nomad_triton.devcluster.canonical import canonicalize_job

        job = canonicalize_job(job)
    return job
