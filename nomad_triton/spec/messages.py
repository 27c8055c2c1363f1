"""Pydantic's validation errors in the toolkit's own words: the value given and what is expected.

Why a translation layer rather than pydantic's `msg`: pydantic's wording ("Input should be a valid
integer, unable to parse string as an integer") names neither the value nor the allowed range, and
changes between pydantic releases. Here every error is rebuilt from its *type*, its input and the
schema of the field it is about (type, bounds, allowed literals), so the line a user reads is e.g.
`count: expected a whole number from 0 to 10000, got 1e+20`. An error type this module does not
know still gets the field's expectation and the value, never pydantic's text.

Values are shown truncated, and masked where they may be secrets (a field named like a token or
password, credentials inside a URL), because error lines end up in CI logs.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from nomad_triton.spec.limits import MAX_DURATION_TEXT

Loc = Sequence[str | int]
MAX_SHOWN = 40
HIDDEN = "(hidden)"
_SECRET_NAME = re.compile(r"(?i)token|secret|passw|credential|api[_-]?key|private[_-]?key|auth")
# `user:password@` anywhere (also in a malformed URL), and a query string carrying key=value pairs
_URL_USERINFO = re.compile(r"[^\s/@:?]+:[^\s/@?]*@")
_URL_QUERY = re.compile(r"\?[^\s?=]+=\S*")


# ---------------------------------------------------------------- showing values


def is_secret_path(loc: Loc) -> bool:
    """A field whose name suggests a secret (env.HF_TOKEN, meta.db_password): never print its value."""
    return any(isinstance(seg, str) and _SECRET_NAME.search(seg) for seg in loc)


def mask_text(text: str) -> str:
    """Credentials inside URLs (`https://user:pw@host`, `?sig=...`) are replaced before printing."""
    text = _URL_USERINFO.sub("***@", text)
    return _URL_QUERY.sub("?***", text)


def show_value(value: Any, loc: Loc = ()) -> str:
    """The value as the user wrote it (TOML-ish), truncated and with secrets masked."""
    if is_secret_path(loc):
        return HIDDEN
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = json.dumps(mask_text(value), ensure_ascii=False)
    elif isinstance(value, timedelta):
        text = f"{value.total_seconds():g}s"
    elif isinstance(value, dict):
        text = "a table {" + ", ".join(map(str, list(value)[:5])) + (", …" if len(value) > 5 else "") + "}"
    elif isinstance(value, list | tuple):
        text = mask_text(json.dumps(value, ensure_ascii=False, default=str))
    else:
        text = type(value).__name__
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def kind_of(value: Any) -> str:
    """What a plain value is, in words ("a number", "text"), for `--set` path errors."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "a table" if isinstance(value, dict) else type(value).__name__


# ---------------------------------------------------------------- the schema at a location


class Slot(typing.NamedTuple):
    """What the schema allows at one location: the annotation plus the constraints attached to it."""

    annotation: Any
    metadata: tuple[Any, ...] = ()


def _alternatives(annotation: Any) -> list[Slot]:
    """Flatten Optional/Union/Annotated into plain alternatives (NoneType dropped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return [Slot(s.annotation, (*s.metadata, *meta)) for s in _alternatives(base)]
    if origin in (typing.Union, types.UnionType):
        return [s for arg in typing.get_args(annotation) for s in _alternatives(arg)]
    if annotation is type(None):
        return []
    return [Slot(annotation)]


def _field_slots(field: FieldInfo) -> list[Slot]:
    return [Slot(s.annotation, (*s.metadata, *field.metadata)) for s in _alternatives(field.annotation)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _tag_of(model: type[BaseModel]) -> Any:
    field = model.model_fields.get("type")
    return field.default if field is not None else None


def slots_at(root: type[BaseModel], loc: Loc) -> list[Slot]:
    """Every schema alternative at `loc` (a pydantic loc, or a user's dotted `--set` path)."""
    current = [Slot(root)]
    for seg in loc:
        nxt: list[Slot] = []
        for slot in current:
            for alt in _alternatives(slot.annotation) or [slot]:
                ann, origin = alt.annotation, typing.get_origin(alt.annotation)
                if _is_model(ann):
                    field = ann.model_fields.get(str(seg))
                    if field is not None:
                        nxt.extend(_field_slots(field))
                    elif _tag_of(ann) == seg:  # pydantic puts a union's tag in the loc
                        nxt.append(Slot(ann))
                elif origin is list and (isinstance(seg, int) or str(seg).isdigit()):
                    nxt.extend(_alternatives(typing.get_args(ann)[0]))
                elif origin is dict:
                    nxt.extend(_alternatives(typing.get_args(ann)[1]))
        current = nxt
    return current


def accepts_text(slots: list[Slot]) -> bool:
    """Whether a plain string is a plausible value here (text, duration, a string literal)."""
    for slot in slots:
        ann = slot.annotation
        if ann is str or ann is timedelta:
            return True
        if typing.get_origin(ann) is typing.Literal and any(isinstance(a, str) for a in typing.get_args(ann)):
            return True
    return False


def is_container(slots: list[Slot]) -> bool:
    """Whether the schema has fields or items below this location."""
    return any(_is_model(s.annotation) or typing.get_origin(s.annotation) in (list, dict) for s in slots)


def is_list(slots: list[Slot]) -> bool:
    return any(typing.get_origin(s.annotation) is list for s in slots)


# ---------------------------------------------------------------- what is expected, in words


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(metadata: Sequence[Any]) -> str:
    low = high = ""
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = f"at least {_num(m.ge)}"
        elif isinstance(m, annotated_types.Gt):
            low = f"above {_num(m.gt)}"
        elif isinstance(m, annotated_types.Le):
            high = f"at most {_num(m.le)}"
        elif isinstance(m, annotated_types.Lt):
            high = f"below {_num(m.lt)}"
    if low.startswith("at least ") and high.startswith("at most "):
        return f"from {low[9:]} to {high[8:]}"
    return " and ".join(p for p in (low, high) if p)


def _min_len(metadata: Sequence[Any]) -> int:
    return max([m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)], default=0)


def _describe_slot(slot: Slot) -> str:
    ann, origin = slot.annotation, typing.get_origin(slot.annotation)
    if ann is bool:
        return "true or false"
    if ann is int or ann is float:
        bounds = _bounds(slot.metadata)
        noun = "a whole number" if ann is int else "a number"
        return f"{noun} {bounds}" if bounds else noun
    if ann is timedelta:
        return f'a duration such as "500ms", "10s", "5m" (at most {MAX_DURATION_TEXT})'
    if ann is str:
        return "non-empty text" if _min_len(slot.metadata) else "text"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    if origin is list:
        items = [_describe_slot(s) for s in _alternatives(typing.get_args(ann)[0])]
        noun = "a non-empty list" if _min_len(slot.metadata) else "a list"
        return noun + (f" of {' or '.join(items)}" if items else "")
    if origin is dict:
        return "a table of text values"
    if _is_model(ann):
        tag = _tag_of(ann)
        return f'a table with type = "{tag}"' if isinstance(tag, str) else "a table"
    return getattr(ann, "__name__", str(ann))


def expected(slots: list[Slot]) -> str:
    """One phrase for everything the schema accepts at a location ("a whole number from 0 to 10000")."""
    seen: list[str] = []
    for slot in slots:
        text = _describe_slot(slot)
        if text not in seen:
            seen.append(text)
    return " or ".join(seen) if seen else "nothing (no such field)"


# ---------------------------------------------------------------- pydantic error -> our line

# pydantic error types that mean "wrong type": the fix is the field's expectation.
_TYPE_ERRORS = {
    "int_type",
    "int_parsing",
    "int_from_float",
    "float_type",
    "float_parsing",
    "string_type",
    "bool_type",
    "bool_parsing",
    "list_type",
    "dict_type",
    "model_type",
    "model_attributes_type",
    "timedelta_type",
    "literal_error",
    "enum",
    "finite_number",
    "is_instance_of",
    "none_required",
    "union_tag_invalid",
    "string_sub_type",
    "too_long",
    "string_too_long",
}
# bounds: the expectation already states the full range
_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"}


def translate(root: type[BaseModel], err: Any) -> str:
    """Our message for one pydantic error dict (loc as pydantic gave it, tags included)."""
    kind: str = err["type"]
    loc = list(err["loc"])
    given = err.get("input")
    ctx = err.get("ctx") or {}
    slots = slots_at(root, loc)
    want = expected(slots)
    shown = show_value(given, loc)
    if kind == "missing":
        return f"missing; expected {want}"
    if kind in _RANGE_ERRORS or kind in _TYPE_ERRORS:
        if kind == "finite_number":
            return f"expected a finite {want.removeprefix('a ')}, got {shown}"
        return f"expected {want}, got {shown}"
    if kind in ("too_short", "string_too_short"):
        if isinstance(given, str | list) and not given:
            return f"must not be empty; expected {want}"
        return f"too short: expected {want}, got {shown}"
    if kind == "string_pattern_mismatch":
        return f"expected text matching {ctx.get('pattern', '?')}, got {shown}"
    if kind == "value_error":
        cause = ctx.get("error")
        message = str(cause) if cause is not None else f"invalid value; expected {want}"
        scalar = isinstance(given, str | int | float) and not isinstance(given, bool)
        if scalar and not is_secret_path(loc) and repr(given) not in message and shown not in message:
            return f"{message}, got {shown}"
        return message
    return f"invalid value {shown}; expected {want}"
