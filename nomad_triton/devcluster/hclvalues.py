"""HCL2 text -> plain Python values, the way Nomad's jobspec2 evaluates them.

python-hcl2 hands back *source forms*: quoted strings keep their quotes and escapes, bare
expressions come wrapped as `${...}`, blocks are marked with `__is_block__` and labelled blocks are
wrapped as `{"\"label\"": {...}}`. This module turns that into values deliberately:

- `unquote_template` resolves HCL escapes (`\\n`, `\\"`, `\\\\`, `\\uXXXX`), turns `$${` into a
  literal `${` and `%%{` into `%{`, and evaluates `${...}` interpolations;
- interpolations of `var.x` / `local.x` are substituted; any other reference (`NOMAD_PORT_http`,
  `attr.kernel.name`, `node.datacenter`, `meta.x`, `device.attr.memory`, `env["X"]`) stays as the
  literal text `${...}`, exactly what Nomad's `UnknownVariable` hook does, so the client fills it in
  at run time;
- function calls, operators and template directives are refused with a clear 400 rather than being
  silently mis-evaluated (devcluster is a test substrate, not an HCL evaluator).

`Body` is the normalised block body (attributes + ordered blocks with labels) the job decoder walks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import hcl2
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from nomad_triton.devcluster.errors import ApiError

FILENAME = "input.hcl"

_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\s*(?:\d+|\"[^\"]*\")\s*\])*$")
_NUMBER_RE = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_HEREDOC_RE = re.compile(r'^"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n(.*?)[ \t]*\2"$', re.DOTALL)
_META_KEYS = {"__is_block__", "__start_line__", "__end_line__", "__comments__", "__inline_comments__"}


def hcl_error(summary: str, detail: str, where: str = "") -> ApiError:
    """A 400 shaped like an HCL diagnostic (`input.hcl: Summary; Detail`), as Nomad's parse returns.

    python-hcl2 8.1 keeps no source positions for blocks, so the block path stands in for Nomad's
    `line,col` range: `input.hcl (job "j" > group "g"): Unsupported argument; ...`."""
    loc = f"{FILENAME} ({where})" if where else FILENAME
    return ApiError(400, f"{loc}: {summary}; {detail}")


def load_hcl(text: str) -> dict[str, Any]:
    """Parse HCL2 text with python-hcl2; syntax errors become Nomad-like 400s with line and column."""
    opts = hcl2.SerializationOptions(with_comments=False, preserve_heredocs=True)
    try:
        return hcl2.loads(text, serialization_options=opts)
    except UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        found = f"unexpected {token!r}" if token is not None else "unexpected input"
        if isinstance(exc, UnexpectedCharacters):
            found = f"unexpected character {exc.char!r}"
        if isinstance(exc, UnexpectedEOF):
            found = "unexpected end of input"
        raise ApiError(
            400, f"error parsing: {FILENAME}:{exc.line},{exc.column}: Invalid HCL syntax; {found}"
        ) from None
    except (LarkError, ValueError, RuntimeError) as exc:
        raise ApiError(400, f"error parsing: {FILENAME}: Invalid HCL syntax; {exc}") from None


@dataclass
class Block:
    """One HCL block: its type, labels and body."""

    type: str
    labels: list[str]
    body: Body


@dataclass
class Body:
    """A block body: attributes (raw python-hcl2 values, unevaluated) and blocks in source order."""

    attrs: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def blocks_of(self, type_: str) -> list[Block]:
        return [b for b in self.blocks if b.type == type_]


def _is_block_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_block_entry(v) for v in value)


def _is_block_entry(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("__is_block__") is True:
        return True
    keys = [k for k in entry if k not in _META_KEYS]
    return len(keys) == 1 and isinstance(entry[keys[0]], dict) and _is_block_entry(entry[keys[0]])


def to_body(raw: dict[str, Any]) -> Body:
    """Normalise a python-hcl2 body dict into `Body` (labels unquoted, metadata keys dropped)."""
    body = Body()
    for key, value in raw.items():
        if key in _META_KEYS:
            continue
        if _is_block_list(value):
            for entry in value:
                labels: list[str] = []
                while entry.get("__is_block__") is not True:
                    (label,) = [k for k in entry if k not in _META_KEYS]
                    labels.append(unquote_literal(label))
                    entry = entry[label]
                body.blocks.append(Block(key, labels, to_body(entry)))
        else:
            body.attrs[key] = value
    return body


def unquote_literal(text: str) -> str:
    """Unquote a label or object key: a quoted string without interpolation, or a bare name."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _unescape_and_interpolate(text[1:-1], None)  # type: ignore[return-value]
    return text


class Scope:
    """Values that `var.*` and `local.*` resolve to while evaluating a job."""

    def __init__(self, variables: dict[str, Any] | None = None, locals_: dict[str, Any] | None = None):
        self.variables = variables or {}
        self.locals = locals_ or {}

    def resolve(self, expr: str) -> Any:
        """Evaluate one expression's source text (the inside of `${...}` or a bare expression)."""
        expr = expr.strip()
        if expr in ("true", "false"):
            return expr == "true"
        if expr == "null":
            return None
        if _NUMBER_RE.match(expr):
            return float(expr) if any(c in expr for c in ".eE") else int(expr)
        if len(expr) >= 2 and expr[0] == '"' and expr[-1] == '"':
            return unquote_template(expr, self)
        if not _REF_RE.match(expr):
            raise hcl_error(
                "Unsupported expression",
                f'devcluster evaluates variable references only, not "{expr}" '
                "(functions, operators and conditionals are not supported)",
            )
        root, _, rest = expr.partition(".")
        root = root.split("[", 1)[0]
        if root in ("var", "local"):
            table = self.variables if root == "var" else self.locals
            name = re.split(r"[.\[]", expr[len(root) + 1 :], maxsplit=1)[0] if rest else ""
            if name not in table:
                kind = "variable" if root == "var" else "local value"
                raise hcl_error(
                    "Unsupported attribute",
                    f'This object does not have an attribute named "{name}" (no {kind} "{name}").',
                )
            return _traverse(table[name], expr[len(root) + 1 + len(name) :], expr)
        # Nomad's UnknownVariable hook: runtime interpolations stay as their own text.
        return "${" + expr + "}"


def _traverse(value: Any, path: str, expr: str) -> Any:
    for m in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[\s*(\d+|\"[^\"]*\")\s*\]", path):
        key: Any = m.group(1) if m.group(1) is not None else m.group(2)
        try:
            if isinstance(key, str) and key.startswith('"'):
                value = value[key[1:-1]]
            elif isinstance(key, str) and key.isdigit() and isinstance(value, list):
                value = value[int(key)]
            else:
                value = value[key]
        except (KeyError, IndexError, TypeError):
            raise hcl_error("Invalid index", f'The expression "{expr}" does not resolve to a value.') from None
    return value


def evaluate(raw: Any, scope: Scope) -> Any:
    """Evaluate a python-hcl2 attribute value (source form) into a plain Python value."""
    if isinstance(raw, bool | int | float) or raw is None:
        return raw
    if isinstance(raw, str):
        heredoc = _HEREDOC_RE.match(raw)
        if heredoc:
            return _heredoc(heredoc.group(3), heredoc.group(1) == "-", scope)
        if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
            return unquote_template(raw, scope)
        if raw.startswith("${") and raw.endswith("}"):
            return scope.resolve(raw[2:-1])
        return scope.resolve(raw)
    if isinstance(raw, list):
        return [evaluate(v, scope) for v in raw]
    if isinstance(raw, dict):
        if raw.get("__is_block__"):
            return body_to_map(to_body(raw), scope)
        return {unquote_literal(k): evaluate(v, scope) for k, v in raw.items() if k not in _META_KEYS}
    raise hcl_error("Unsupported value", f"cannot evaluate {raw!r}")


def body_to_map(body: Body, scope: Scope) -> dict[str, Any]:
    """Free-form body (task config, scaling policy) -> map; nested blocks become lists, like Nomad's
    BlocksAsAttrs: `mount { .. }` -> `"mount": [{..}]`, `check "x" { .. }` -> `"check": [{"x": [{..}]}]`."""
    out: dict[str, Any] = {k: evaluate(v, scope) for k, v in body.attrs.items()}
    for block in body.blocks:
        value: Any = body_to_map(block.body, scope)
        for label in reversed(block.labels):
            value = {label: [value]}
        out.setdefault(block.type, []).append(value)
    return out


def _heredoc(text: str, trim: bool, scope: Scope) -> Any:
    """Heredoc body -> value: every line keeps its newline, `<<-` strips the common indentation, and
    only template sequences (`$${`, `%%{`, `${..}`) are processed: backslashes are literal in heredocs."""
    lines = text.split("\n")
    if lines and lines[-1].strip() == "":
        lines.pop()  # the closing marker's own line
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if trim:
        indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()]
        cut = min(indents) if indents else 0
        lines = [ln[cut:] for ln in lines]
    return _unescape_and_interpolate("".join(ln + "\n" for ln in lines), scope, escapes=False)


def unquote_template(quoted: str, scope: Scope) -> Any:
    """Evaluate a quoted HCL template string (with its quotes) into its value."""
    return _unescape_and_interpolate(quoted[1:-1], scope)


def _unescape_and_interpolate(src: str, scope: Scope | None, escapes: bool = True) -> Any:
    parts: list[Any] = []
    buf: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "\\" and escapes:
            if i + 1 >= n:
                raise hcl_error("Invalid escape sequence", "The string ends with a lone backslash.")
            m = src[i + 1]
            if m in _SIMPLE_ESCAPES:
                buf.append(_SIMPLE_ESCAPES[m])
                i += 2
                continue
            width = {"u": 4, "U": 8}.get(m)
            digits = src[i + 2 : i + 2 + width] if width else ""
            if width and len(digits) == width and all(d in "0123456789abcdefABCDEF" for d in digits):
                buf.append(chr(int(digits, 16)))
                i += 2 + width
                continue
            raise hcl_error(
                "Invalid escape sequence",
                f'The symbol "{m}" is not a valid escape sequence selector.',
            )
        if src.startswith("$${", i) or src.startswith("%%{", i):
            buf.append(src[i + 1 : i + 3])
            i += 3
            continue
        if src.startswith("%{", i):
            raise hcl_error("Unsupported template directive", "devcluster does not evaluate %{ } directives.")
        if src.startswith("${", i):
            end = _matching_brace(src, i + 2)
            expr = src[i + 2 : end]
            if scope is None:
                raise hcl_error("Invalid label", "Labels and keys may not contain interpolations.")
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(scope.resolve(expr.strip().strip("~").strip()))
            i = end + 1
            continue
        buf.append(c)
        i += 1
    if buf:
        parts.append("".join(buf))
    if len(parts) == 1 and not isinstance(parts[0], str):
        return parts[0]  # "${var.n}" alone keeps the variable's type, as in HCL
    return "".join(_template_str(p) for p in parts)


def _template_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))
    raise hcl_error("Invalid template interpolation value", "Cannot include a list or map in a string template.")


def _matching_brace(src: str, start: int) -> int:
    depth, i, in_str = 0, start, False
    while i < len(src):
        c = src[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    raise hcl_error("Unterminated template string", "No closing '}' for an interpolation.")
