"""Load a spec from TOML/YAML/JSON, layer `--values` files and `--set` overrides, validate it.

Why provenance: a value can come from the spec file, any of several values files or a `--set`
flag. When it is wrong the user must be told *where* it came from, in one line, e.g.
`--set rollout.canary=-1: rollout.canary: expected a whole number from 0 to 10000, got -1`.
The wording comes from nomad_triton.spec.messages, never from pydantic.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nomad_triton.spec import messages
from nomad_triton.spec.models import DeploymentSpec, FieldError

Key = tuple[str | int, ...]


class SpecError(Exception):
    """Bad spec input. `source` is a file (or `--set ...`), `field` a dotted path ("" if none)."""

    def __init__(self, source: str, field: str, message: str, more: int = 0) -> None:
        self.source, self.field, self.message, self.more = source, field, message, more
        super().__init__(self.line())

    def line(self) -> str:
        """The one line the CLI prints."""
        parts = [self.source] + ([self.field] if self.field else []) + [self.message]
        tail = f" (and {self.more} more error{'s' if self.more > 1 else ''})" if self.more else ""
        return ": ".join(parts) + tail


class _Provenance:
    """Which source last wrote each leaf path of the merged document."""

    def __init__(self) -> None:
        self._by_path: dict[Key, str] = {}

    def record(self, prefix: Key, value: Any, label: str) -> None:
        for key in [k for k in self._by_path if k[: len(prefix)] == prefix]:
            del self._by_path[key]
        self._walk(prefix, value, label)

    def _walk(self, prefix: Key, value: Any, label: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                self._walk((*prefix, k), v, label)
        elif isinstance(value, list) and value:
            for i, v in enumerate(value):
                self._walk((*prefix, i), v, label)
        else:
            self._by_path[prefix] = label

    def source_of(self, loc: Key, default: str) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in self._by_path:
                return self._by_path[loc[:n]]
        under = [label for key, label in self._by_path.items() if key[: len(loc)] == loc]
        return under[-1] if under else default


def read_document(path: Path) -> dict[str, Any]:
    """Parse one TOML/YAML/JSON file into a dict; SpecError names the file on any problem."""
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SpecError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(path),
            "",
            f"not a text file (byte {exc.start} is not UTF-8); expected a UTF-8 {suffix[1:] or 'spec'} file",
        ) from None
    if "\x00" in text:
        raise SpecError(
            str(path),
            "",
            f"not a text file (it contains NUL bytes); expected a UTF-8 {suffix[1:] or 'spec'} file",
        )
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise SpecError(
                str(path), "", f"unsupported file type {suffix or '(none)'!r}; use .toml, .yaml or .json"
            )
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise SpecError(str(path), "", f"invalid {suffix[1:].upper()}: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(str(path), "", "top level must be a table/mapping")
    return _plain(data)


def _plain(value: Any) -> Any:
    """TOML/YAML dates and times become strings: the spec has no date fields, only text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


def deep_merge(
    base: dict[str, Any], overlay: dict[str, Any], label: str, prov: _Provenance, prefix: Key = ()
) -> None:
    """Merge `overlay` into `base` in place: tables merge key by key, anything else replaces."""
    for key, value in overlay.items():
        here = (*prefix, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value, label, prov, here)
        else:
            base[key] = copy.deepcopy(value)
            prov.record(here, value, label)


def parse_set_value(raw: str) -> Any:
    """A `--set` value is a TOML literal when it parses as one (1, true, [..], "x"), else a string."""
    try:
        return _plain(tomllib.loads(f"v = {raw}")["v"])
    except tomllib.TOMLDecodeError:
        return raw


def _set_value(raw: str, path: list[str], label: str) -> Any:
    """The TOML literal; a bare word only where the field takes text (names, durations, choices).

    Why: `--set count=abc` used to become the string "abc" and fail later with a type error that
    hid the cause; a field that is not text gets told that its value is no TOML literal.
    """
    try:
        return _plain(tomllib.loads(f"v = {raw}")["v"])
    except tomllib.TOMLDecodeError:
        pass
    slots = messages.slots_at(DeploymentSpec, path)
    if not slots or messages.accepts_text(slots):
        return raw  # unknown paths are reported by validation (with a did-you-mean)
    shown = messages.show_value(raw, path)
    raise SpecError(
        label,
        ".".join(path),
        f'{shown} is not a TOML value (numbers, true/false, [lists], "quoted text"); '
        f"expected {messages.expected(slots)}",
    )


def set_label(item: str) -> str:
    """`--set KEY=VALUE` as shown in errors: the value masked when KEY names a secret, else truncated."""
    key, sep, value = item.partition("=")
    if not sep:
        return f"--set {messages.mask_text(item)}"
    if messages.is_secret_path(key.strip().split(".")):
        return f"--set {key}={messages.HIDDEN}"
    value = messages.mask_text(value)
    if len(value) > messages.MAX_SHOWN:
        value = value[: messages.MAX_SHOWN - 1] + "…"
    return f"--set {key}={value}"


def _no_field_below(label: str, loc: list[str | int], seg: str, what: str) -> SpecError:
    name = ".".join(map(str, loc[-2:])) if loc and isinstance(loc[-1], int) else str(loc[-1])
    return SpecError(label, ".".join(map(str, [*loc, seg])), f"{name} is {what} and has no field {seg!r}")


def apply_set(data: dict[str, Any], item: str, prov: _Provenance) -> None:
    """Apply one `a.b.0.c=value` override; numeric segments index lists (== len appends)."""
    label = set_label(item)
    key, sep, raw = item.partition("=")
    path = key.strip().split(".")
    if not sep or not key.strip() or any(not p.strip() for p in path):
        raise SpecError(
            label, key.strip() or "(empty)", "expected KEY=VALUE with a dotted KEY such as rollout.canary=1"
        )
    path = [p.strip() for p in path]
    value = _set_value(raw.strip(), path, label)
    node: Any = data
    loc: list[str | int] = []
    for i, seg in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            name = str(loc[-1]) if loc else "(top)"
            if not seg.isdigit():
                raise SpecError(
                    label,
                    ".".join(map(str, [*loc, seg])),
                    f"{name} is a list and {seg!r} is not an index (use 0..{len(node)}; {len(node)} appends)",
                )
            if int(seg) > len(node):
                raise SpecError(
                    label,
                    ".".join(map(str, [*loc, seg])),
                    f"{name} is a list of {len(node)} and {seg} is past its end "
                    f"(use 0..{len(node)}; {len(node)} appends)",
                )
            idx = int(seg)
            if idx == len(node):
                node.append(None)
            if last:
                node[idx] = value
            else:
                node[idx] = _descend(node[idx], [*loc, idx], path[i + 1], label)
            node, seg_key = node[idx], idx
        else:
            if last:
                node[seg] = value
            else:
                node[seg] = _descend(node.get(seg), [*loc, seg], path[i + 1], label)
            node, seg_key = node[seg], seg
        loc.append(seg_key)
    prov.record(tuple(loc), value, label)


def _descend(current: Any, loc: list[str | int], below: str, label: str) -> Any:
    """The container at `loc` that `--set` writes into; a scalar there (or in the schema) is an error.

    Why: `--set count.sub=1` used to replace `count` by a table and fail with an unrelated message.
    An absent field becomes what the schema says it is (a list for `datacenters.0=...`).
    """
    if isinstance(current, dict | list):
        return current
    if current is not None:
        raise _no_field_below(label, loc, below, messages.kind_of(current))
    slots = messages.slots_at(DeploymentSpec, loc)
    if slots and not messages.is_container(slots):
        raise _no_field_below(label, loc, below, messages.expected(slots))
    return [] if slots and messages.is_list(slots) and below.isdigit() else {}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated) or origin is not None:
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
    return found


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """Field names of the model(s) at `loc` (for did-you-mean suggestions)."""
    models: list[type[BaseModel]] = [DeploymentSpec]
    for seg in loc:
        tagged = [m for m in models if "type" in m.model_fields and m.model_fields["type"].default == seg]
        if tagged and not any(str(seg) in m.model_fields for m in models):
            models = tagged  # a discriminated-union tag in pydantic's path selects the variant
            continue
        nxt: list[type[BaseModel]] = []
        for model in models:
            field = model.model_fields.get(str(seg))
            if field is not None:
                nxt.extend(_models_in(field.annotation))
        models = nxt
    return sorted({name for m in models for name in m.model_fields})


_UNION_TAGS = {("driver",): {"docker", "raw_exec"}}


def _clean_loc(loc: Sequence[str | int]) -> list[str | int]:
    out: list[str | int] = []
    for seg in loc:
        if tuple(out) in _UNION_TAGS and seg in _UNION_TAGS[tuple(out)]:
            continue  # pydantic puts the discriminator's tag in the path; users never wrote it
        out.append(seg)
    return out


def _describe(err: Any) -> tuple[list[str | int], str]:
    raw_loc = list(err["loc"])
    loc = _clean_loc(raw_loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, FieldError):
        loc = [*loc, *cause.field.split(".")]
        msg = str(cause)
    elif kind == "extra_forbidden":
        name = str(loc[-1])
        candidates = [f for f in _fields_at(raw_loc[:-1]) if f != name]
        close = difflib.get_close_matches(name, candidates, n=1)
        msg = f"unknown key {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif kind in ("union_tag_not_found", "union_tag_invalid"):
        loc = [*loc, "type"]
        tags = ctx.get("expected_tags", "'docker', 'raw_exec'")
        msg = (
            f"expected one of {tags}, got {messages.show_value(ctx.get('tag'), loc)}"
            if kind == "union_tag_invalid"
            else f"missing; expected one of {tags}"
        )
    else:
        msg = messages.translate(DeploymentSpec, err)
    return loc, msg


def _resolve_relative_repo(data: dict[str, Any], prov: _Provenance, default_src: str) -> None:
    """raw_exec runs on this host: a relative repository path means 'next to the spec that said it'."""
    driver, repo = data.get("driver"), data.get("model_repository")
    if not (isinstance(driver, dict) and driver.get("type") == "raw_exec" and isinstance(repo, dict)):
        return
    path = repo.get("path")
    if isinstance(path, str) and path and not Path(path).is_absolute():
        src = prov.source_of(("model_repository", "path"), default_src)
        base = Path.cwd() if src.startswith("--set ") else Path(src).resolve().parent
        repo["path"] = str((base / path).resolve())


def load_spec_data(
    path: str | Path, sets: Iterable[str] = (), values: Iterable[str | Path] = ()
) -> tuple[dict[str, Any], _Provenance]:
    """Merged raw document (file, then values files in order, then --set) plus its provenance."""
    path = Path(path)
    prov = _Provenance()
    data: dict[str, Any] = {}
    deep_merge(data, read_document(path), str(path), prov)
    for vfile in values:
        deep_merge(data, read_document(Path(vfile)), str(vfile), prov)
    for item in sets:
        apply_set(data, item, prov)
    _resolve_relative_repo(data, prov, str(path))
    return data, prov


def validate_data(data: dict[str, Any], source: str, prov: _Provenance | None = None) -> DeploymentSpec:
    """Validate a merged document; the first error becomes a one-line SpecError."""
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        loc, msg = _describe(errors[0])
        origin = prov.source_of(tuple(loc), source) if prov else source
        raise SpecError(origin, ".".join(map(str, loc)), msg, more=len(errors) - 1) from None


def check_local_repository(spec: DeploymentSpec, prov: _Provenance | None, source: str) -> None:
    """A raw_exec job serves from a folder on this host: it must exist and hold every named model.

    Why: otherwise the job renders, registers and only fails minutes later as an unhealthy
    allocation whose log says a model is missing. Only raw_exec with `path`: a docker path lives
    in the image, a host volume or artifact on the client, none of which this host can see.
    """
    repo = spec.model_repository
    if spec.driver.type != "raw_exec" or not repo.path:
        return
    where = prov.source_of(("model_repository", "path"), source) if prov else source
    root = Path(repo.path)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise SpecError(
            where, "model_repository.path", f"{root} {what}; expected the model repository folder"
        )
    for i, model in enumerate(repo.models):
        if not (root / model).is_dir():
            origin = prov.source_of(("model_repository", "models", i), source) if prov else source
            raise SpecError(
                origin,
                f"model_repository.models.{i}",
                f"model {model!r} is not in {root} (expected a folder {root / model})",
            )


def load_spec(
    path: str | Path,
    sets: Iterable[str] = (),
    values: Iterable[str | Path] = (),
    *,
    check_repository: bool = False,
) -> DeploymentSpec:
    """Load, layer and validate a deployment spec. Raises SpecError (never a traceback-worthy error).

    `check_repository` (what `validate` asks for) also checks a raw_exec job's model repository
    on this host (check_local_repository).
    """
    data, prov = load_spec_data(path, sets, values)
    spec = validate_data(data, str(path), prov)
    if check_repository:
        check_local_repository(spec, prov, str(path))
    return spec
