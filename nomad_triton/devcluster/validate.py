"""`PUT /v1/validate/job` semantics: Nomad's structs `Job.Validate` / `Job.Warnings` in miniature.

Why mirror the wording: clients (the nomad CLI, our own `validate` command, CI logs) show these
texts to people, and tests in the wider toolkit match on them. Nested failures are wrapped the way
Nomad's go-multierror does ("Task group web validation failed: 1 error occurred:\\n\\t* ..."), so
`ValidationErrors` holds the top-level entries and `format_multierror(errors)` gives the `Error`.

Public: `validate_job(job) -> (errors, warnings)`, `format_multierror(errors) -> str`,
`go_duration(ns) -> str` (Go's time.Duration String(), used in messages).
"""

from __future__ import annotations

import re
from typing import Any

from nomad_triton.devcluster.canonical import canonicalize_job

JOB_TYPES = ("service", "batch", "system", "sysbatch")
_CONSTRAINT_OPS = {"=", "==", "is", "!=", "not", "<", "<=", ">", ">="}
_SET_OPS = {"set_contains", "set_contains_all", "set_contains_any"}
_OTHER_OPS = {"distinct_hosts", "distinct_property", "regexp", "version", "semver", "is_set", "is_not_set"}
_CHECK_TYPES = ("http", "tcp", "script", "grpc")
_SEC = 10**9


def go_duration(ns: int) -> str:
    """Go's time.Duration.String(): 0s, 1.5s, 5m0s, 1h30m0s, 250ms."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < _SEC:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return sign + _trim(ns / size) + unit
    h, rem = divmod(ns, 3600 * _SEC)
    m, rem = divmod(rem, 60 * _SEC)
    out = (f"{h}h" if h else "") + (f"{m}m" if h or m else "")
    return sign + out + _trim(rem / _SEC) + "s"


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


def format_multierror(errors: list[str]) -> str:
    """hashicorp/go-multierror's ListFormatFunc."""
    if len(errors) == 1:
        return f"1 error occurred:\n\t* {errors[0]}\n\n"
    points = "\n\t".join(f"* {e}" for e in errors)
    return f"{len(errors)} errors occurred:\n\t{points}\n\n"


def _nested(prefix: str, errors: list[str]) -> list[str]:
    return [f"{prefix}: {format_multierror(errors)}"] if errors else []


def _constraint_errors(c: dict[str, Any]) -> list[str]:
    op, lt, rt = c.get("Operand") or "", c.get("LTarget") or "", c.get("RTarget") or ""
    errs: list[str] = []
    if not op:
        errs.append("Missing constraint operand")
    require_ltarget = op != "distinct_hosts"
    if op in _SET_OPS and not rt:
        errs.append("Set contains constraint requires an RTarget")
    elif op == "regexp":
        try:
            re.compile(rt)
        except re.error as exc:
            errs.append(f"Regular expression failed to compile: {exc}")
    elif op in ("is_set", "is_not_set") and rt:
        errs.append(f'Operator "{op}" does not support an RTarget')
    elif op in _CONSTRAINT_OPS and not rt:
        errs.append(f'Operator "{op}" requires an RTarget')
    elif op and op not in _CONSTRAINT_OPS | _SET_OPS | _OTHER_OPS:
        errs.append(f'Unknown constraint type "{op}"')
    if require_ltarget and not lt:
        errs.append("No LTarget provided but is required by constraint")
    return errs


def _placement_errors(obj: dict[str, Any], job_type: str, task_level: bool = False) -> list[str]:
    errs: list[str] = []
    for i, c in enumerate(obj.get("Constraints") or [], 1):
        if task_level and c.get("Operand") in ("distinct_hosts", "distinct_property"):
            errs.append(f"Constraint {i} has disallowed Operand at task level: {c.get('Operand')}")
            continue
        errs += _nested(f"Constraint {i} validation failed", _constraint_errors(c))
    affinities = obj.get("Affinities") or []
    if job_type == "system" and affinities:
        errs.append("System jobs may not have an affinity block")
    else:
        for i, a in enumerate(affinities, 1):
            aerrs = _constraint_errors({**a, "Operand": a.get("Operand")})
            weight = a.get("Weight", 50)
            if weight == 0:
                aerrs.append("Affinity weight cannot be zero")
            elif weight is not None and not -100 <= weight <= 100:
                aerrs.append("Affinity weight must be within the range [-100,100]")
            errs += _nested(f"Affinity {i} validation failed", aerrs)
    spreads = obj.get("Spreads") or []
    if job_type == "system" and spreads:
        errs.append("System jobs may not have a spread block")
    else:
        for i, s in enumerate(spreads, 1):
            errs += _nested(f"Spread {i} validation failed", _spread_errors(s))
    return errs


def _spread_errors(s: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    if not s.get("Attribute"):
        errs.append("Missing spread attribute")
    weight = s.get("Weight", 50)
    if weight is None or weight <= 0 or weight > 100:
        errs.append("Spread block must have a positive weight from 0 to 100")
    seen: set[str] = set()
    total = 0
    for t in s.get("SpreadTarget") or []:
        if t.get("Value") in seen:
            errs.append(f'Spread target value "{t.get("Value")}" already defined')
        seen.add(t.get("Value"))
        total += t.get("Percent") or 0
    if total > 100:
        errs.append(f"Sum of spread target percentages must not be greater than 100%; got {total}%")
    return errs


def _update_errors(u: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    hc = u.get("HealthCheck")
    if hc not in ("checks", "task_states", "manual"):
        errs.append(f'Invalid health check given: "{hc}"')
    if u["MaxParallel"] < 0:
        errs.append(f"Max parallel can not be less than zero: {u['MaxParallel']} < 0")
    if u["Canary"] < 0:
        errs.append(f"Canary count can not be less than zero: {u['Canary']} < 0")
    if u["Canary"] == 0 and u["AutoPromote"]:
        errs.append("Auto Promote requires a Canary count greater than zero")
    mht, hd, pd = u["MinHealthyTime"], u["HealthyDeadline"], u["ProgressDeadline"]
    if mht < 0:
        errs.append(f"Minimum healthy time may not be less than zero: {go_duration(mht)}")
    if hd <= 0:
        errs.append(f"Healthy deadline must be greater than zero: {go_duration(hd)}")
    if pd < 0:
        errs.append(f"Progress deadline must be zero or greater: {go_duration(pd)}")
    if mht >= hd:
        errs.append(f"Minimum healthy time must be less than healthy deadline: {go_duration(mht)} > {go_duration(hd)}")
    if pd != 0 and hd >= pd:
        errs.append(f"Healthy deadline must be less than progress deadline: {go_duration(hd)} > {go_duration(pd)}")
    if u["Stagger"] <= 0:
        errs.append(f"Stagger must be greater than zero: {go_duration(u['Stagger'])}")
    return errs


def _restart_errors(r: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    if r["Mode"] not in ("delay", "fail"):
        errs.append(f'Unsupported restart mode: "{r["Mode"]}"')
    if r["Attempts"] == 0 and r["Mode"] != "fail":
        errs.append(f'Restart policy "{r["Mode"]}" with {r["Attempts"]} attempts is ambiguous')
    if r["Interval"] < 5 * _SEC:
        errs.append(f"Interval can not be less than 5s (got {go_duration(r['Interval'])})")
    if r["Attempts"] * r["Delay"] > r["Interval"]:
        errs.append(
            f"Nomad can't restart the TaskGroup {r['Attempts']} times in an interval of "
            f"{go_duration(r['Interval'])} with a delay of {go_duration(r['Delay'])}"
        )
    return errs


def _scaling_errors(tg: dict[str, Any]) -> list[str]:
    s = tg.get("Scaling")
    if s is None:
        return []
    errs: list[str] = []
    lo, hi, count = s.get("Min"), s.get("Max"), tg["Count"]
    if lo is None or lo < 0:
        errs.append("minimum count must be specified and non-negative")
    if hi is None or hi < 0:
        errs.append("maximum count must be specified and non-negative")
    if errs:
        return errs
    if lo > hi:
        errs.append("Scaling policy invalid: maximum count must not be less than minimum count")
    if lo > count:
        errs.append("Scaling policy invalid: task group count must not be less than minimum count in scaling policy")
    if hi < count:
        errs.append(
            "Scaling policy invalid: task group count must not be greater than maximum count in scaling policy"
        )
    return errs


def _port_labels(tg: dict[str, Any]) -> set[str]:
    labels: set[str] = set()
    task_nets = [n for t in tg.get("Tasks") or [] for n in ((t.get("Resources") or {}).get("Networks") or [])]
    for n in (tg.get("Networks") or []) + task_nets:
        for p in (n.get("DynamicPorts") or []) + (n.get("ReservedPorts") or []):
            labels.add(p.get("Label"))
    return labels


def _service_errors(s: dict[str, Any], ports: set[str]) -> list[str]:
    errs: list[str] = []
    name = s.get("Name") or ""
    # Nomad strips runtime interpolations first (ReplaceEnvWithPlaceHolder), then checks RFC 1123.
    stripped = re.sub(r"\$\{[^}]*\}", "ENV-VAR", name)
    if not re.fullmatch(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]{0,61}[A-Za-z0-9]", stripped):
        errs.append(
            "Service name must be valid per RFC 1123 and can contain only alphanumeric characters or dashes "
            f'and must be no longer than 63 characters: "{name}"'
        )
    if s.get("Provider") not in ("consul", "nomad"):
        errs.append('Service provider must be "consul", or "nomad"')
    label = s.get("PortLabel") or ""
    if label and not label.isdigit() and label not in ports:
        errs.append(f'Port label "{label}" referenced by service "{name}" does not exist')
    for i, c in enumerate(s.get("Checks") or [], 1):
        cerrs: list[str] = []
        ctype = c.get("Type") or ""
        if ctype not in _CHECK_TYPES:
            cerrs.append(f'invalid type ("{ctype}"), must be one of {", ".join(repr(t) for t in _CHECK_TYPES)}')
        if (c.get("Interval") or 0) < _SEC:
            cerrs.append(f"interval ({go_duration(c.get('Interval') or 0)}) cannot be lower than 1s")
        if (c.get("Timeout") or 0) < _SEC:
            cerrs.append(f"timeout ({go_duration(c.get('Timeout') or 0)}) is lower than required minimum timeout 1s")
        if ctype == "http" and not c.get("Path"):
            cerrs.append("http type must have http path")
        clabel = c.get("PortLabel") or ""
        if clabel and not clabel.isdigit() and clabel not in ports:
            cerrs.append(f'port label "{clabel}" does not exist')
        errs += [f"Check {c.get('Name') or i} invalid: {e}" for e in cerrs]
    return errs


def _task_errors(t: dict[str, Any], job_type: str, ports: set[str]) -> list[str]:
    errs: list[str] = []
    name = t.get("Name") or ""
    if not name:
        errs.append("Missing task name")
    if "/" in name or "\\" in name:
        errs.append("Task name cannot include slashes")
    if not t.get("Driver"):
        errs.append("Missing task driver")
    if t["KillTimeout"] < 0:
        errs.append("KillTimeout must be a positive value")
    r = t["Resources"]
    if r.get("Cores") and r.get("CPU"):
        errs.append("Task can only ask for 'cpu' or 'cores' resource, not both.")
    if not r.get("Cores") and (r.get("CPU") or 0) < 1:
        errs.append(f"minimum CPU value is 1; got {r.get('CPU')}")
    if r["MemoryMB"] < 10:
        errs.append(f"minimum MemoryMB value is 10; got {r['MemoryMB']}")
    if r.get("MemoryMaxMB") and r["MemoryMaxMB"] < r["MemoryMB"]:
        errs.append(f"MemoryMaxMB value ({r['MemoryMaxMB']}) should be larger than MemoryMB value ({r['MemoryMB']})")
    for i, d in enumerate(r.get("Devices") or [], 1):
        derrs = []
        if not d.get("Name"):
            derrs.append("device name must be given as one of the following: type, vendor/type, or vendor/type/name")
        for k, c in enumerate(d.get("Constraints") or [], 1):
            derrs += _nested(f"device constraint {k} validation failed", _constraint_errors(c))
        errs += _nested(f"device {i} failed validation", derrs)
    errs += _placement_errors({"Constraints": t.get("Constraints"), "Affinities": t.get("Affinities")}, job_type,
                              task_level=True)
    for s in t.get("Services") or []:
        errs += _service_errors(s, ports)
    for i, tmpl in enumerate(t.get("Templates") or [], 1):
        terrs = []
        if not tmpl.get("SourcePath") and not tmpl.get("EmbeddedTmpl"):
            terrs.append("Must specify a source path or have an embedded template")
        if not tmpl.get("DestPath"):
            terrs.append("Must specify a destination for the template")
        if tmpl.get("ChangeMode") not in ("noop", "restart", "signal", "script"):
            terrs.append(f'Invalid change mode "{tmpl.get("ChangeMode")}"')
        errs += _nested(f"Template {i} validation failed", terrs)
    for i, a in enumerate(t.get("Artifacts") or [], 1):
        if not a.get("GetterSource"):
            errs += _nested(f"Artifact {i} validation failed", ["source must be specified"])
    return errs


def _group_errors(tg: dict[str, Any], job: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    job_type = job["Type"]
    if not tg.get("Name"):
        errs.append("Missing task group name")
    if tg["Count"] < 0:
        errs.append("Task group count can't be negative")
    tasks = tg.get("Tasks") or []
    if not tasks:
        errs.append("Missing tasks for task group")
    errs += _placement_errors(tg, job_type)
    errs += _restart_errors(tg["RestartPolicy"])
    if tg["EphemeralDisk"]["SizeMB"] < 0:
        errs.append(f"Minimum DiskMB value is 0; got {tg['EphemeralDisk']['SizeMB']}")
    if tg.get("Update") is not None:
        if job_type in ("service", "system"):
            errs += _update_errors(tg["Update"])
        else:
            errs.append(f'Job type "{job_type}" does not allow update block')
    seen: dict[str, int] = {}
    leaders = 0
    for i, t in enumerate(tasks):
        name = t.get("Name") or ""
        if not name:
            errs.append(f"Task {i + 1} missing name")
        elif name in seen:
            errs.append(f"Task {i + 1} redefines '{name}' from task {seen[name] + 1}")
        else:
            seen[name] = i
        leaders += 1 if t.get("Leader") else 0
    if leaders > 1:
        errs.append("Only one task may be marked as leader")
    ports = _port_labels(tg)
    static: dict[int, str] = {}
    net_errs = []
    for n in tg.get("Networks") or []:
        for p in n.get("ReservedPorts") or []:
            if p["Value"] in static:
                net_errs.append(f"Static port {p['Value']} already reserved by {static[p['Value']]}")
            static[p["Value"]] = p["Label"]
            if not 0 < p["Value"] <= 65535:
                net_errs.append(f"Port {p['Label']} ({p['Value']}) cannot be greater than 65535")
    errs += _nested("Task group network validation failed", net_errs)
    svc_errs = [e for s in tg.get("Services") or [] for e in _service_errors(s, ports)]
    errs += _nested("Task group service validation failed", svc_errs)
    errs += _nested("Task group scaling policy validation failed", _scaling_errors(tg))
    for t in tasks:
        errs += _nested(f"Task {t.get('Name')} validation failed", _task_errors(t, job_type, ports))
    return errs


def _warnings(job: dict[str, Any]) -> list[str]:
    warns: list[str] = []
    for tg in job.get("TaskGroups") or []:
        u = tg.get("Update")
        if u and u["MaxParallel"] > tg["Count"]:
            warns.append(
                f'Group "{tg["Name"]}" has warnings: 1 error occurred:\n\t* Update max parallel count is greater '
                f"than task group count ({u['MaxParallel']} > {tg['Count']}). A destructive change would result "
                "in the simultaneous replacement of all allocations.\n\n"
            )
    return warns


def validate_job(job: dict) -> tuple[list[str], list[str]]:
    """(ValidationErrors, warnings) for an API Job (canonicalized here first, as Nomad does)."""
    if not isinstance(job, dict):
        return ["Job must be specified"], []
    try:
        return _validate(canonicalize_job(job))
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        # A malformed job (wrong JSON types) is a validation failure, never a 500.
        return [f"Job is malformed: {type(exc).__name__}: {exc}"], []


def _validate(j: dict[str, Any]) -> tuple[list[str], list[str]]:
    errs: list[str] = []
    if not j.get("Region"):
        errs.append("Missing job region")
    if not j.get("ID"):
        errs.append("Missing job ID")
    elif " " in j["ID"]:
        errs.append("Job ID contains a space")
    elif "\x00" in j["ID"]:
        errs.append("Job ID contains a null character")
    if not j.get("Name"):
        errs.append("Missing job name")
    if not j.get("Namespace"):
        errs.append("Job must be in a namespace")
    if j["Type"] not in JOB_TYPES:
        errs.append(f'Invalid job type: "{j["Type"]}"')
    if not 1 <= j["Priority"] <= 100:
        errs.append("Job priority must be between [1, 100]")
    if any(not dc for dc in j["Datacenters"]):
        errs.append("Job datacenter must be non-empty string")
    groups = j.get("TaskGroups") or []
    if not groups:
        errs.append("Missing job task groups")
    errs += _placement_errors(j, j["Type"])
    seen: dict[str, int] = {}
    for i, tg in enumerate(groups):
        name = tg.get("Name") or ""
        if not name:
            errs.append(f"Job task group {i + 1} missing name")
        elif name in seen:
            errs.append(f"Job task group {i + 1} redefines '{name}' from group {seen[name] + 1}")
        else:
            seen[name] = i
        if j["Type"] == "system" and tg["Count"] > 1:
            errs.append(
                f"Job task group {name} has count {tg['Count']}. Count cannot exceed 1 with system scheduler"
            )
    if j["Type"] in JOB_TYPES:
        for tg in groups:
            errs += _nested(f"Task group {tg.get('Name')} validation failed", _group_errors(tg, j))
    return errs, _warnings(j)
