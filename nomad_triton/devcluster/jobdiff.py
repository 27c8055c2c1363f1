"""Nomad's plan `Diff` (nomad/structs/diff.go) and its annotations (scheduler/annotate.go).

Shape (all names as in Nomad's api.JobDiff):
    {Type, ID, Fields: [FieldDiff], Objects: [ObjectDiff], TaskGroups: [{Type, Name, Fields, Objects,
     Tasks: [{Type, Name, Fields, Objects, Annotations}], Updates}]}
    FieldDiff = {Type, Name, Old, New, Annotations}; ObjectDiff = {Type, Name, Fields, Objects}
Types are "Added" | "Deleted" | "Edited" | "None". Values are strings, as Go's flatmap renders them
(ints and nanosecond durations in decimal, bools "true"/"false"); maps flatten to `Meta[key]`.

How it is flattened (the way Nomad's structs diff does, so plan output reads the same):
- primitive fields of a struct are `Fields`; nested structs are `Objects` (RestartPolicy, Update,
  EphemeralDisk, Resources, Config, LogConfig, ...);
- sets without identity (Constraint, Affinity, Spread, Network, Template, Artifact) diff as sets:
  identical members vanish, the rest are Added/Deleted objects; keyed lists (groups, tasks,
  services, checks, devices) pair by Name and may be Edited;
- `contextual=True` (what the plan endpoint uses) also lists unchanged fields as "None" inside
  edited objects.

`annotate_diff` adds what Nomad's scheduler adds: "forces create"/"forces destroy" on Count changes,
per-task "forces create/destroy update" (any primitive field other than KillTimeout, or any object
other than Service/Constraint/LogConfig) vs "forces in-place update", and the group `Updates` map
from the plan's DesiredTGUpdates. Public: `diff_jobs`, `annotate_diff` (alias `annotate_count_changes`).
"""

from __future__ import annotations

from typing import Any

from nomad_triton.devcluster.canonical import canonicalize_job

ADDED, DELETED, EDITED, NONE = "Added", "Deleted", "Edited", "None"
FORCES_CREATE = "forces create"
FORCES_DESTROY = "forces destroy"
FORCES_INPLACE = "forces in-place update"
FORCES_DESTRUCTIVE = "forces create/destroy update"

# Job primitives that appear as Fields (user-set ones; server-managed fields such as Status,
# Version, Stable, SubmitTime and the indexes are Nomad's Job.Diff filter and never show).
_JOB_FIELDS = {"Region", "Namespace", "Name", "Type", "Priority", "AllAtOnce", "NodePool", "Stop", "ParentID",
               "Meta", "ConsulNamespace", "VaultNamespace"}
_MAP_FIELDS = {"Meta", "Env", "CanaryMeta", "GetterOptions", "GetterHeaders", "TaggedAddresses"}
# DesiredUpdates field -> TaskGroupDiff.Updates key (structs UpdateType* constants).
_UPDATE_KEYS = {"Ignore": "ignore", "Place": "create", "Migrate": "migrate", "Stop": "destroy",
                "InPlaceUpdate": "in-place update", "DestructiveUpdate": "create/destroy update",
                "Canary": "canary", "Preemptions": "preemption"}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _primitives(obj: dict[str, Any] | None, skip: set[str] | frozenset[str] = frozenset()) -> dict[str, str]:
    """flatmap.Flatten(obj, filter, primitiveOnly=true): scalars and string maps, no nested structs/lists."""
    out: dict[str, str] = {}
    for key, value in (obj or {}).items():
        if key in skip or value is None:
            continue
        if isinstance(value, str | int | float | bool):
            out[key] = _fmt(value)
        elif key in _MAP_FIELDS and isinstance(value, dict):
            for k, v in value.items():
                if v is not None and not isinstance(v, dict | list):
                    out[f"{key}[{k}]"] = _fmt(v)
    return out


def _flatten_all(value: Any, prefix: str = "", out: dict[str, str] | None = None) -> dict[str, str]:
    """flatmap.Flatten(obj, nil, primitiveOnly=false): used for free-form maps like task Config."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_all(v, f"{prefix}[{k}]" if prefix else str(k), out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten_all(v, f"{prefix}[{i}]", out)
    elif value is not None:
        out[prefix] = _fmt(value)
    return out


_ZERO = ("", "0", "false")


def _field_diffs(old: dict[str, str], new: dict[str, str], contextual: bool,
                 both: bool = True) -> list[dict[str, Any]]:
    """`both`: the object exists on both sides (an Added/Deleted object lists every field)."""
    diffs = []
    for name in sorted(set(old) | set(new)):
        o, n = old.get(name), new.get(name)
        # Go structs have zero values where JSON from a parse omits keys: absent == zero value.
        if both and ((o is None and n in _ZERO) or (n is None and o in _ZERO)):
            o = n = o if o is not None else n
        if o == n:
            if not contextual:
                continue
            kind = NONE
        elif o is None:
            kind = ADDED
        elif n is None:
            kind = DELETED
        else:
            kind = EDITED
        diffs.append({"Type": kind, "Name": name, "Old": o or "", "New": n or "", "Annotations": None})
    return diffs


def _type_of(old: Any, new: Any, fields: list[dict[str, Any]], objects: list[dict[str, Any]]) -> str:
    if old is None and new is not None:
        return ADDED
    if new is None and old is not None:
        return DELETED
    changed = any(f["Type"] != NONE for f in fields) or any(o["Type"] != NONE for o in objects)
    return EDITED if changed else NONE


# Nested object specs: API key -> (diff name, kind, child spec). kind: "one" | "set" | "keyed" | "strset" | "all"
_CHECK_SPEC = {"Header": ("Header", "all", None), "CheckRestart": ("CheckRestart", "one", {})}
_SERVICE_SPEC = {"Tags": ("Tags", "strset", None), "CanaryTags": ("CanaryTags", "strset", None),
                 "Checks": ("Check", "keyed", _CHECK_SPEC), "CheckRestart": ("CheckRestart", "one", {})}
_PLACEMENT = {"Constraints": ("Constraint", "set", {}), "Affinities": ("Affinity", "set", {})}
_NETWORK_SPEC = {"DynamicPorts": ("Dynamic Port", "set", {}), "ReservedPorts": ("Static Port", "set", {}),
                 "DNS": ("DNS", "one", {})}
_DEVICE_SPEC = dict(_PLACEMENT)
_RESOURCES_SPEC = {"Devices": ("Device", "keyed", _DEVICE_SPEC), "Networks": ("Network", "set", _NETWORK_SPEC)}
_SPREAD_SPEC = {"SpreadTarget": ("SpreadTarget", "set", {})}
_GROUP_SPEC: dict[str, tuple[str, str, Any]] = {
    **_PLACEMENT, "Spreads": ("Spread", "set", _SPREAD_SPEC),
    "RestartPolicy": ("RestartPolicy", "one", {}), "ReschedulePolicy": ("ReschedulePolicy", "one", {}),
    "EphemeralDisk": ("EphemeralDisk", "one", {}), "Update": ("Update", "one", {}),
    "Migrate": ("Migrate", "one", {}), "Networks": ("Network", "set", _NETWORK_SPEC),
    "Services": ("Service", "keyed", _SERVICE_SPEC), "Scaling": ("Scaling", "one", {"Policy": ("Policy", "all", None)}),
    "Volumes": ("Volume", "keyed", {}),
}
_TASK_SPEC: dict[str, tuple[str, str, Any]] = {
    **_PLACEMENT, "Config": ("Config", "all", None), "Resources": ("Resources", "one", _RESOURCES_SPEC),
    "LogConfig": ("LogConfig", "one", {}), "Artifacts": ("Artifact", "set", {}), "Templates": ("Template", "set", {}),
    "Services": ("Service", "keyed", _SERVICE_SPEC), "Lifecycle": ("Lifecycle", "one", {}),
    "VolumeMounts": ("VolumeMount", "set", {}),
}
_JOB_SPEC: dict[str, tuple[str, str, Any]] = {
    "Datacenters": ("Datacenters", "strset", None), **_PLACEMENT, "Spreads": ("Spread", "set", _SPREAD_SPEC),
}


def _object_diff(name: str, old: Any, new: Any, spec: dict[str, Any] | None, contextual: bool) -> dict | None:
    """One nested struct: primitive fields + its own nested objects; None when nothing differs."""
    if old is None and new is None:
        return None
    both = old is not None and new is not None
    if spec is None:  # free-form map (Config, Policy, Header): flatten everything
        fields = _field_diffs(_flatten_all(old or {}), _flatten_all(new or {}), contextual, both)
        objects: list[dict[str, Any]] = []
    else:
        fields = _field_diffs(_primitives(old, set(spec)), _primitives(new, set(spec)), contextual, both)
        objects = _objects(old or {}, new or {}, spec, contextual)
    kind = _type_of(old, new, fields, objects)
    if kind == NONE:
        return None
    return {"Type": kind, "Name": name, "Fields": fields or None, "Objects": objects or None}


def _objects(old: dict[str, Any], new: dict[str, Any], spec: dict[str, Any], contextual: bool) -> list[dict]:
    out: list[dict[str, Any]] = []
    for key, (name, kind, child) in spec.items():
        o, n = old.get(key), new.get(key)
        if kind in ("one", "all"):
            d = _object_diff(name, o, n, child if kind == "one" else None, contextual)
            if d:
                out.append(d)
        elif kind == "strset":
            d = _string_set_diff(name, o or [], n or [], contextual)
            if d:
                out.append(d)
        elif kind == "set":
            out += _set_diff(name, o or [], n or [], child, contextual)
        elif kind == "keyed":
            out += _keyed_diff(name, o or [], n or [], child, contextual)
    return sorted(out, key=lambda d: d["Name"])


def _string_set_diff(name: str, old: list[Any], new: list[Any], contextual: bool) -> dict | None:
    olds, news = {_fmt(x) for x in old}, {_fmt(x) for x in new}
    fields = []
    for v in sorted(olds | news):
        if v in olds and v in news:
            if contextual:
                fields.append({"Type": NONE, "Name": name, "Old": v, "New": v, "Annotations": None})
        elif v in olds:
            fields.append({"Type": DELETED, "Name": name, "Old": v, "New": "", "Annotations": None})
        else:
            fields.append({"Type": ADDED, "Name": name, "Old": "", "New": v, "Annotations": None})
    if all(f["Type"] == NONE for f in fields):
        return None
    kind = EDITED if olds and news else (ADDED if news else DELETED)
    return {"Type": kind, "Name": name, "Fields": fields, "Objects": None}


def _set_diff(name: str, old: list[dict], new: list[dict], child: Any, contextual: bool) -> list[dict]:
    """primitiveObjectSetDiff: members present on both sides vanish; the rest are Added/Deleted."""
    out = []
    for member in old:
        if member not in new:
            d = _object_diff(name, member, None, child, contextual)
            if d:
                out.append(d)
    for member in new:
        if member not in old:
            d = _object_diff(name, None, member, child, contextual)
            if d:
                out.append(d)
    return out


def _keyed_diff(name: str, old: list[dict] | dict, new: list[dict] | dict, child: Any, contextual: bool) -> list[dict]:
    """Members paired by Name; a map (TaskGroup.Volumes) is keyed by its keys."""
    olds = dict(old) if isinstance(old, dict) else {o.get("Name", ""): o for o in old}
    news = dict(new) if isinstance(new, dict) else {n.get("Name", ""): n for n in new}
    out = []
    for key in sorted(set(olds) | set(news)):
        d = _object_diff(name, olds.get(key), news.get(key), child, contextual)
        if d:
            out.append(d)
    return out


def _task_diff(old: dict | None, new: dict | None, contextual: bool) -> dict[str, Any]:
    skip = set(_TASK_SPEC) | {"Name", "RestartPolicy"}
    fields = _field_diffs(_primitives(old, skip), _primitives(new, skip), contextual, None not in (old, new))
    objects = _objects(old or {}, new or {}, _TASK_SPEC, contextual)
    name = (new or old or {}).get("Name", "")
    return {"Type": _type_of(old, new, fields, objects), "Name": name, "Fields": fields or None,
            "Objects": objects or None, "Annotations": None}


def _group_diff(old: dict | None, new: dict | None, contextual: bool) -> dict[str, Any]:
    skip = set(_GROUP_SPEC) | {"Name", "Tasks"}
    fields = _field_diffs(_primitives(old, skip), _primitives(new, skip), contextual, None not in (old, new))
    objects = _objects(old or {}, new or {}, _GROUP_SPEC, contextual)
    olds = {t.get("Name", ""): t for t in (old or {}).get("Tasks") or []}
    news = {t.get("Name", ""): t for t in (new or {}).get("Tasks") or []}
    tasks = [_task_diff(olds.get(k), news.get(k), contextual) for k in sorted(set(olds) | set(news))]
    kind = _type_of(old, new, fields, objects)
    if kind == NONE and any(t["Type"] != NONE for t in tasks):
        kind = EDITED
    name = (new or old or {}).get("Name", "")
    return {"Type": kind, "Name": name, "Fields": fields or None, "Objects": objects or None, "Tasks": tasks,
            "Updates": None}


def _job_fields(job: dict[str, Any] | None) -> dict[str, str]:
    return _primitives({k: v for k, v in (job or {}).items() if k in _JOB_FIELDS})


def diff_jobs(old: dict | None, new: dict, contextual: bool = True) -> dict[str, Any]:
    """Nomad's `old.Diff(new, contextual)` for API Job dicts, with Count and task annotations applied.

    Both jobs are canonicalized first (as the server does before planning), so a default written out
    explicitly is not reported as a change. Raises ValueError when the job IDs differ.
    """
    new_c = canonicalize_job(new)
    old_c = canonicalize_job(old) if old is not None else None
    if old_c is not None and old_c.get("ID") != new_c.get("ID"):
        raise ValueError(f'can not diff jobs with different IDs: "{old_c.get("ID")}" and "{new_c.get("ID")}"')
    fields = _field_diffs(_job_fields(old_c), _job_fields(new_c), False, old_c is not None)
    objects = _objects(old_c or {}, new_c, _JOB_SPEC, contextual)
    olds = {g.get("Name", ""): g for g in (old_c or {}).get("TaskGroups") or []}
    news = {g.get("Name", ""): g for g in new_c.get("TaskGroups") or []}
    groups = [_group_diff(olds.get(k), news.get(k), contextual) for k in sorted(set(olds) | set(news))]
    kind = _type_of(old_c, new_c, fields, objects)
    if kind == NONE and any(g["Type"] != NONE for g in groups):
        kind = EDITED
    diff = {"Type": kind, "ID": new_c.get("ID", ""), "Fields": fields or None, "Objects": objects or None,
            "TaskGroups": groups}
    return annotate_diff(diff)


def annotate_diff(diff: dict[str, Any], desired_tg_updates: dict[str, dict[str, int]] | None = None) -> dict:
    """scheduler/annotate.go: Count and task annotations, plus group `Updates` from DesiredTGUpdates.

    Idempotent: annotations already present are not repeated. Mutates and returns `diff`.
    """
    for tg in diff.get("TaskGroups") or []:
        desired = (desired_tg_updates or {}).get(tg["Name"])
        if desired:
            tg["Updates"] = {_UPDATE_KEYS[k]: v for k, v in desired.items() if k in _UPDATE_KEYS and v}
        _annotate_count(tg)
        for task in tg.get("Tasks") or []:
            _annotate_task(task, tg)
    return diff


annotate_count_changes = annotate_diff


def _add(target: dict[str, Any], annotation: str) -> None:
    notes = target.get("Annotations") or []
    if annotation not in notes:
        notes.append(annotation)
    target["Annotations"] = notes


def _annotate_count(tg: dict[str, Any]) -> None:
    count = next((f for f in tg.get("Fields") or [] if f["Name"] == "Count"), None)
    if count is None or count["Type"] == NONE:
        return
    old = int(count["Old"]) if count["Type"] != ADDED and count["Old"] else 0
    new = int(count["New"]) if count["Type"] != DELETED and count["New"] else 0
    if new > old:
        _add(count, FORCES_CREATE)
    elif new < old:
        _add(count, FORCES_DESTROY)


def _annotate_task(task: dict[str, Any], tg: dict[str, Any]) -> None:
    if task["Type"] == NONE:
        return
    if tg["Type"] in (ADDED, DELETED):  # the whole group is changing
        if task["Type"] == ADDED:
            _add(task, FORCES_CREATE)
            return
        if task["Type"] == DELETED:
            _add(task, FORCES_DESTROY)
            return
    destructive = any(f["Name"] != "KillTimeout" for f in task.get("Fields") or [] if f["Type"] != NONE)
    if not destructive:
        destructive = any(o["Name"] not in ("LogConfig", "Service", "Constraint") for o in task.get("Objects") or [])
    _add(task, FORCES_DESTRUCTIVE if destructive else FORCES_INPLACE)
