"""Schema-driven decoding of one HCL block body, and the attribute type conversions.

Why: Nomad decodes each block into a Go struct with `hcl:"..."` tags, so an argument or block the
struct does not know is an error ("Unsupported argument" / "Unsupported block type"). `_Decoder`
mirrors that per block, so typos are never silently dropped and errors name the block path.
Converters follow cty's conversions (numbers to strings "2", "true"/"false" to bools) and Go's
`time.ParseDuration` for durations (int nanoseconds).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.hclvalues import Block, Body, Scope, evaluate, hcl_error

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}


def parse_duration(value: Any) -> int:
    """Go's time.ParseDuration ("10s", "1h30m", "1.5s", "-5m") -> int ns; numbers pass through as ns."""
    if isinstance(value, bool):
        raise ValueError(f"time: invalid duration {value!r}")
    if isinstance(value, int | float):
        return int(value)
    text = str(value)
    sign, body = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if body == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        if body and re.fullmatch(r"[\d.]+", body):
            raise ValueError(f'time: missing unit in duration "{text}"')
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * int(round(total))


# ---------------------------------------------------------------- value converters (attribute types)

Conv = Callable[[Any, str], Any]


def _type_error(where: str, expected: str, value: Any) -> ApiError:
    return hcl_error("Incorrect attribute value type", f"Inappropriate value for attribute {where}: {expected} required, got {value!r}.")


def _str(v: Any, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))  # cty renders the number 2.0 as "2"
    if isinstance(v, int | float):
        return str(v)
    if not isinstance(v, str):
        raise _type_error(where, "string", v)
    return v


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool):
        raise _type_error(where, "number", v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
        return int(v)
    raise _type_error(where, "number", v)


def _bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v in ("true", "false"):
        return v == "true"
    raise _type_error(where, "bool", v)


def _dur(v: Any, where: str) -> int:
    try:
        return parse_duration(v)
    except ValueError as exc:
        raise hcl_error("Unsuitable value type", f"Unsuitable duration value: {exc}", where) from None


def _strlist(v: Any, where: str) -> list[str]:
    if not isinstance(v, list):
        raise _type_error(where, "list of string", v)
    return [_str(x, where) for x in v]


def _strmap(v: Any, where: str) -> dict[str, str]:
    if not isinstance(v, dict):
        raise _type_error(where, "map of string", v)
    return {str(k): _str(x, where) for k, x in v.items()}


def _strlistmap(v: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(v, dict):
        raise _type_error(where, "map of list of string", v)
    return {str(k): _strlist(x if isinstance(x, list) else [x], where) for k, x in v.items()}


# ---------------------------------------------------------------- generic schema-driven decoder

# Known Nomad blocks that devcluster deliberately does not implement: named as unsupported.
_KNOWN_UNSUPPORTED = {
    "vault", "multiregion", "periodic", "parameterized", "consul", "csi_plugin",
    "connect", "identity", "dispatch_payload", "disconnect", "numa", "secret", "schedule", "action",
    "dynamic",
}


class _Decoder:
    """Walks one block body against a schema: attrs {hcl: (Api, conv)}, blocks {hcl: handler}."""

    def __init__(self, scope: Scope, where: str) -> None:
        self.scope = scope
        self.where = where

    def check(self, body: Body, attrs: set[str], blocks: set[str]) -> None:
        for name in body.attrs:
            if name not in attrs:
                raise hcl_error("Unsupported argument", f'An argument named "{name}" is not expected here.', self.where)
        for block in body.blocks:
            if block.type in blocks:
                continue
            if block.type in _KNOWN_UNSUPPORTED:
                raise hcl_error(
                    "Unsupported block type",
                    f'Blocks of type "{block.type}" are not supported by devcluster.', self.where,
                )
            raise hcl_error(
                "Unsupported block type", f'Blocks of type "{block.type}" are not expected here.', self.where
            )

    def attrs(self, body: Body, schema: dict[str, tuple[str, Conv]], out: dict[str, Any]) -> dict[str, Any]:
        for name, raw in body.attrs.items():
            if name not in schema:
                continue
            key, conv = schema[name]
            value = evaluate(raw, self.scope)
            if value is None:
                continue
            out[key] = conv(value, f'"{name}" in {self.where}')
        return out

    def sub(self, block: Block) -> _Decoder:
        label = "".join(f' "{lbl}"' for lbl in block.labels)
        return _Decoder(self.scope, f"{self.where} > {block.type}{label}")

    def one(self, body: Body, type_: str) -> Block | None:
        found = body.blocks_of(type_)
        if len(found) > 1:
            raise hcl_error(
                f"Duplicate {type_} block", f'Only one block of type "{type_}" is allowed.', self.where
            )
        return found[0] if found else None

    def labels(self, block: Block, names: list[str]) -> list[str]:
        if len(block.labels) != len(names):
            if not block.labels:
                raise hcl_error(
                    f"Missing {names[0]} for {block.type}",
                    f"All {block.type} blocks must have {len(names)} labels ({', '.join(names)}).", self.where,
                )
            raise hcl_error(
                f"Extraneous label for {block.type}",
                f"Only {len(names)} labels ({', '.join(names)}) are expected for {block.type} blocks.",
                self.where,
            )
        return block.labels

    def no_labels(self, block: Block) -> None:
        if block.labels:
            raise hcl_error(
                f"Extraneous label for {block.type}",
                f"No labels are expected for {block.type} blocks.", self.where,
            )

    def string_map(self, body: Body, name: str) -> dict[str, str] | None:
        """`meta`/`env`: Nomad accepts `meta { k = "v" }` and `meta = { "a.b" = "v" }`, not both."""
        blocks = body.blocks_of(name)
        if name in body.attrs:
            if blocks:
                raise hcl_error(f"Duplicate {name} block", f"{name} may not be defined more than once.", self.where)
            return _strmap(evaluate(body.attrs[name], self.scope), f'"{name}" in {self.where}')
        if not blocks:
            return None
        if len(blocks) > 1:
            raise hcl_error(f"Duplicate {name} block", f'Only one block of type "{name}" is allowed.', self.where)
        sub = self.sub(blocks[0])
        sub.no_labels(blocks[0])
        if blocks[0].body.blocks:
            raise hcl_error(
                "Unsupported block type",
                f'Blocks of type "{blocks[0].body.blocks[0].type}" are not expected here.', sub.where,
            )
        return {k: _str(evaluate(v, self.scope), f'"{k}" in {sub.where}') for k, v in blocks[0].body.attrs.items()}
