"""Render Nomad's plan diff (JobDiff JSON) as readable text, in the spirit of `nomad job plan`.

Pure functions so the rendering is unit-tested on recorded diff shapes. Markers as in the nomad
CLI: "+" added, "-" deleted, "+/-" edited; unchanged fields are omitted unless verbose.
"""

from __future__ import annotations

from typing import Any

MARK = {"Added": "+", "Deleted": "-", "Edited": "+/-", "None": " "}


def _field_line(f: dict[str, Any], indent: str) -> str:
    kind = f.get("Type", "None")
    mark = MARK.get(kind, "?")
    name = f.get("Name", "")
    old, new = f.get("Old", ""), f.get("New", "")
    notes = f" ({', '.join(f['Annotations'])})" if f.get("Annotations") else ""
    if kind == "Added":
        value = f'"{new}"'
    elif kind == "Deleted":
        value = f'"{old}"'
    elif kind == "Edited":
        value = f'"{old}" => "{new}"'
    else:
        value = f'"{new or old}"'
    return f"{indent}{mark} {name}: {value}{notes}"


def _object_lines(obj: dict[str, Any], indent: str, verbose: bool) -> list[str]:
    kind = obj.get("Type", "None")
    if kind == "None" and not verbose:
        return []
    out = [f"{indent}{MARK.get(kind, '?')} {obj.get('Name', '')} {{"]
    out.extend(_body(obj, indent + "  ", verbose))
    out.append(f"{indent}  }}")
    return out


def _body(node: dict[str, Any], indent: str, verbose: bool) -> list[str]:
    out: list[str] = []
    for f in node.get("Fields") or []:
        if f.get("Type", "None") != "None" or verbose:
            out.append(_field_line(f, indent))
    for obj in node.get("Objects") or []:
        out.extend(_object_lines(obj, indent, verbose))
    return out


def render_diff(diff: dict[str, Any] | None, verbose: bool = False) -> list[str]:
    """Lines describing a JobDiff; an unchanged job gives one line saying so."""
    if not diff or diff.get("Type", "None") == "None":
        return [f'  Job: "{(diff or {}).get("ID", "")}" (no changes)']
    out = [f'{MARK.get(diff["Type"], "?")} Job: "{diff.get("ID", "")}"']
    out.extend(_body(diff, "  ", verbose))
    for tg in diff.get("TaskGroups") or []:
        if tg.get("Type", "None") == "None" and not verbose and not tg.get("Updates"):
            continue
        updates = ", ".join(f"{n} {k}" for k, n in sorted((tg.get("Updates") or {}).items()) if n)
        out.append(
            f'{MARK.get(tg.get("Type", "None"), "?")} Task Group: "{tg.get("Name", "")}"'
            + (f" ({updates})" if updates else "")
        )
        out.extend(_body(tg, "    ", verbose))
        for task in tg.get("Tasks") or []:
            if task.get("Type", "None") == "None" and not verbose:
                continue
            notes = f" ({', '.join(task['Annotations'])})" if task.get("Annotations") else ""
            out.append(f'    {MARK.get(task.get("Type", "None"), "?")} Task: "{task.get("Name", "")}"{notes}')
            out.extend(_body(task, "      ", verbose))
    return out


def allocation_changes(desired_updates: dict[str, dict[str, int]]) -> bool:
    """True when the plan creates, stops or replaces allocations (nomad plan's exit-1 condition)."""
    keys = ("Place", "Stop", "Migrate", "DestructiveUpdate", "Canary", "Preemptions")
    return any(int(u.get(k) or 0) > 0 for u in desired_updates.values() for k in keys)


def render_updates(desired_updates: dict[str, dict[str, int]]) -> list[str]:
    """Per group scheduler dry-run summary, e.g. 'triton: 1 create/destroy update, 2 ignore'."""
    words = {
        "Place": "create",
        "Stop": "destroy",
        "Migrate": "migrate",
        "InPlaceUpdate": "in-place update",
        "DestructiveUpdate": "create/destroy update",
        "Canary": "canary",
        "Ignore": "ignore",
        "Preemptions": "preemption",
    }
    out = []
    for group, upd in sorted(desired_updates.items()):
        parts = [f"{int(upd[k])} {w}" for k, w in words.items() if int(upd.get(k) or 0) > 0]
        out.append(f"  {group}: {', '.join(parts) if parts else 'no changes'}")
    return out
