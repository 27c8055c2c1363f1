"""Fill a parsed Job's unset fields with Nomad's defaults (api/*.go `Canonicalize`, plus the few the
server applies at register: NodePool "default", Datacenters ["*"], Network Mode "host", check names).

Why here and not at use sites: the scheduler, deployment watcher and plan diff all need the same
effective values (a service job with no `update` block still runs rolling deployments with
MaxParallel 1 and MinHealthyTime 10s). Doing it once, on the stored job, is what Nomad does, and it
is what `GET /v1/job/:id` shows. The function is pure and idempotent (canonical(canonical(j)) ==
canonical(j)); inputs are never mutated.

Public: `canonicalize_job(job) -> dict`, and the default tables (`default_update`, ...).
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

SEC = 10**9
MIN = 60 * SEC
HOUR = 60 * MIN


def default_update() -> dict[str, Any]:
    """api.DefaultUpdateStrategy()."""
    return {"Stagger": 30 * SEC, "MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * SEC,
            "HealthyDeadline": 5 * MIN, "ProgressDeadline": 10 * MIN, "AutoRevert": False, "AutoPromote": False,
            "Canary": 0}


def default_migrate() -> dict[str, Any]:
    return {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * SEC, "HealthyDeadline": 5 * MIN}


def default_restart(job_type: str) -> dict[str, Any]:
    """Service/system jobs: 2 attempts in 30m; batch/sysbatch: 3 in 24h; both 15s delay, mode fail."""
    if job_type in ("service", "system"):
        return {"Attempts": 2, "Interval": 30 * MIN, "Delay": 15 * SEC, "Mode": "fail", "RenderTemplates": False}
    return {"Attempts": 3, "Interval": 24 * HOUR, "Delay": 15 * SEC, "Mode": "fail", "RenderTemplates": False}


def default_reschedule(job_type: str) -> dict[str, Any]:
    """api.NewDefaultReschedulePolicy(jobType)."""
    if job_type == "service":
        return {"Attempts": 0, "Interval": 0, "Delay": 30 * SEC, "DelayFunction": "exponential",
                "MaxDelay": 1 * HOUR, "Unlimited": True}
    if job_type == "batch":
        return {"Attempts": 1, "Interval": 24 * HOUR, "Delay": 5 * SEC, "DelayFunction": "constant",
                "MaxDelay": 0, "Unlimited": False}
    return {"Attempts": 0, "Interval": 0, "Delay": 0, "DelayFunction": "", "MaxDelay": 0, "Unlimited": False}


def _fill(target: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    for key, value in defaults.items():
        if target.get(key) is None:
            target[key] = value
    return target


def _merged(base: dict[str, Any] | None, override: dict[str, Any] | None) -> dict[str, Any]:
    """Go's `Merge`: fields set (non-null) in `override` win over `base`."""
    out = dict(base or {})
    out.update({k: v for k, v in (override or {}).items() if v is not None})
    return out


def _update_is_empty(u: dict[str, Any] | None) -> bool:
    """api.UpdateStrategy.Empty(): every field unset or zero/false."""
    return not u or not any(u.get(k) for k in default_update())


def canonicalize_job(job: dict) -> dict:
    """Return a canonical copy of `job` (API Job JSON) with Nomad's defaults filled in."""
    j = copy.deepcopy(job)
    _fill(j, {"ID": ""})  # `null` from Go clients counts as unset, like a nil pointer
    if j.get("Name") is None:
        j["Name"] = j["ID"]
    _fill(j, {"ParentID": "", "Namespace": "default", "Priority": 50, "Stop": False, "Region": "global",
              "Type": "service", "AllAtOnce": False, "ConsulToken": "", "VaultToken": "", "Status": "",
              "StatusDescription": "", "Stable": False, "Version": 0})
    if not j.get("NodePool"):
        j["NodePool"] = "default"
    if not j.get("Datacenters"):
        j["Datacenters"] = ["*"]
    if j.get("Update") is not None:
        _fill(j["Update"], default_update())
    elif j["Type"] == "service":
        j["Update"] = default_update()
    for a in j.get("Affinities") or []:
        _fill(a, {"Weight": 50})
    for s in j.get("Spreads") or []:
        _fill(s, {"Weight": 50})
    for tg in j.get("TaskGroups") or []:
        _canonicalize_group(tg, j)
    return j


def _canonicalize_group(g: dict[str, Any], job: dict[str, Any]) -> None:
    job_type = job["Type"]
    _fill(g, {"Name": ""})
    scaling = g.get("Scaling")
    if g.get("Count") is None:
        g["Count"] = scaling["Min"] if scaling and scaling.get("Min") is not None else 1
    if scaling is not None:
        _fill(scaling, {"Min": g["Count"], "Enabled": True, "Type": "horizontal"})
    g["EphemeralDisk"] = _fill(dict(g.get("EphemeralDisk") or {}), {"Sticky": False, "Migrate": False, "SizeMB": 300})

    ju, gu = job.get("Update"), g.get("Update")
    if ju is not None and gu is not None:
        g["Update"] = _merged(ju, gu)
    elif ju is not None and not _update_is_empty(ju):
        g["Update"] = dict(ju)
    if g.get("Update") is not None:
        _fill(g["Update"], default_update())

    jr, gr = job.get("Reschedule"), g.get("ReschedulePolicy")
    if jr is not None:
        g["ReschedulePolicy"] = _merged(jr, gr)
    if g.get("ReschedulePolicy") is None and job_type != "system":
        g["ReschedulePolicy"] = default_reschedule(job_type)
    if g.get("ReschedulePolicy") is not None:
        _fill(g["ReschedulePolicy"], default_reschedule(job_type))

    jm, gm = job.get("Migrate"), g.get("Migrate")
    if jm is not None:
        g["Migrate"] = _merged(jm, gm)
    if g.get("Migrate") is None and job_type == "service":
        g["Migrate"] = {}
    if g.get("Migrate") is not None:
        _fill(g["Migrate"], default_migrate())

    g["RestartPolicy"] = _merged(default_restart(job_type), g.get("RestartPolicy"))
    for t in g.get("Tasks") or []:
        _canonicalize_task(t, g, job)
    for s in g.get("Spreads") or []:
        _fill(s, {"Weight": 50})
    for a in g.get("Affinities") or []:
        _fill(a, {"Weight": 50})
    for n in g.get("Networks") or []:
        _fill(n, {"Mode": "host"})
    for s in g.get("Services") or []:
        _canonicalize_service(s, None, g, job)
    _fill(g, {"PreventRescheduleOnLost": False})


def _canonicalize_task(t: dict[str, Any], g: dict[str, Any], job: dict[str, Any]) -> None:
    res = t.get("Resources")
    if res is None:
        res = t["Resources"] = {}
    if res.get("Cores") is None:
        res["Cores"] = 0
        if res.get("CPU") is None:
            res["CPU"] = 100
    _fill(res, {"CPU": 0, "MemoryMB": 300})  # cores given and no cpu: cpu is 0, as in api Resources
    for dev in res.get("Devices") or []:
        _fill(dev, {"Count": 1})
        for a in dev.get("Affinities") or []:
            _fill(a, {"Weight": 50})
    _fill(t, {"KillTimeout": 5 * SEC})
    t["LogConfig"] = _fill(dict(t.get("LogConfig") or {}), {"MaxFiles": 10, "MaxFileSizeMB": 10, "Disabled": False})
    for a in t.get("Artifacts") or []:
        _fill(a, {"GetterMode": "any", "GetterInsecure": False, "GetterSource": ""})
        if a.get("RelativeDest") is None:
            a["RelativeDest"] = (
                posixpath.join("local", posixpath.basename(a["GetterSource"])) if a["GetterMode"] == "file"
                else "local/"
            )
    for tmpl in t.get("Templates") or []:
        _fill(tmpl, {"SourcePath": "", "DestPath": "", "EmbeddedTmpl": "", "ChangeMode": "restart"})
        if tmpl.get("ChangeSignal") is None:
            tmpl["ChangeSignal"] = "SIGHUP" if tmpl["ChangeMode"] == "signal" else ""
        else:
            tmpl["ChangeSignal"] = tmpl["ChangeSignal"].upper()
        _fill(tmpl, {"Splay": 5 * SEC, "Perms": "0644", "LeftDelim": "{{", "RightDelim": "}}", "Envvars": False,
                     "ErrMissingKey": False, "VaultGrace": 0})
    for s in t.get("Services") or []:
        _canonicalize_service(s, t, g, job)
    for a in t.get("Affinities") or []:
        _fill(a, {"Weight": 50})
    for vm in t.get("VolumeMounts") or []:
        _fill(vm, {"PropagationMode": "private", "ReadOnly": False, "SELinuxLabel": ""})
    if t.get("Lifecycle") is not None and not t["Lifecycle"].get("Hook"):
        t.pop("Lifecycle")
    t["RestartPolicy"] = _merged(g["RestartPolicy"], t.get("RestartPolicy"))


def _canonicalize_service(s: dict[str, Any], t: dict[str, Any] | None, g: dict[str, Any], job: dict[str, Any]) -> None:
    if not s.get("Name"):
        s["Name"] = f"{job['Name']}-{g['Name']}" + (f"-{t['Name']}" if t is not None else "")
    if not s.get("AddressMode"):
        s["AddressMode"] = "auto"
    if not s.get("OnUpdate"):
        s["OnUpdate"] = "require_healthy"
    if not s.get("Provider"):
        s["Provider"] = "consul"
    if not s.get("Meta"):
        s.pop("Meta", None)
    for c in s.get("Checks") or []:
        if not c.get("OnUpdate"):
            c["OnUpdate"] = s["OnUpdate"]
        if not c.get("Name"):
            c["Name"] = f'service: "{s["Name"]}" check'
        for key in ("SuccessBeforePassing", "FailuresBeforeCritical"):
            if (c.get(key) or 0) < 0:
                c[key] = 0
        if s.get("CheckRestart") is not None or c.get("CheckRestart") is not None:
            c["CheckRestart"] = _merged(s.get("CheckRestart"), c.get("CheckRestart"))
            _fill(c["CheckRestart"], {"Limit": 0, "Grace": 1 * SEC, "IgnoreWarnings": False})
