"""HCL value handling of devcluster's jobspec parser: escapes, heredocs, interpolation, durations.

Why table-driven and exact: the renderer escapes user values for HCL and relies on the server-side
parse returning them byte-for-byte; one wrong unescape silently corrupts a model path or an env var.
"""

from __future__ import annotations

import pytest

from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.hclparse import parse_duration, parse_job_hcl


def _env(hcl_value: str, variables: str | dict | None = None, decls: str = "") -> str:
    text = f"""{decls}
job "j" {{
  group "g" {{
    task "t" {{
      driver = "raw_exec"
      env = {{ V = {hcl_value} }}
    }}
  }}
}}
"""
    return parse_job_hcl(text, variables)["TaskGroups"][0]["Tasks"][0]["Env"]["V"]


@pytest.mark.parametrize(
    ("hcl_value", "expected"),
    [
        (r'"plain"', "plain"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash\\"', "back\\slash\\"),
        (r'"line1\nline2\ttab\r"', "line1\nline2\ttab\r"),
        (r'"\u00e9 \U0001F680"', "é 🚀"),
        ('"unicode 日本語 ✓"', "unicode 日本語 ✓"),
        (r'"$${literal}"', "${literal}"),
        (r'"%%{ if x }"', "%{ if x }"),
        (r'"${NOMAD_PORT_http}"', "${NOMAD_PORT_http}"),
        (r'"a ${attr.kernel.name} b"', "a ${attr.kernel.name} b"),
        (r'"${node.datacenter}/${meta.rack}"', "${node.datacenter}/${meta.rack}"),
        (r'"${device.attr.memory}"', "${device.attr.memory}"),
        (r'"${NOMAD_ALLOC_DIR}/x $${y} \\${z}"', "${NOMAD_ALLOC_DIR}/x ${y} \\${z}"),
        (r'"end with $"', "end with $"),
        (r'"100%"', "100%"),
        (r'""', ""),
    ],
)
def test_quoted_strings_unescape_exactly(hcl_value: str, expected: str) -> None:
    assert _env(hcl_value) == expected


@pytest.mark.parametrize(
    ("heredoc", "expected"),
    [
        ("<<EOT\nhello\nEOT", "hello\n"),
        ('<<EOT\nq "x" \\n $${y} ${NOMAD_TASK_DIR}\n  two\nEOT', 'q "x" \\n ${y} ${NOMAD_TASK_DIR}\n  two\n'),
        ("<<-EOT\n    a\n      b\n\n    c\n    EOT", "a\n  b\n\nc\n"),
        ("<<EOT\nEOT", ""),
    ],
)
def test_heredocs_keep_newlines_and_backslashes(heredoc: str, expected: str) -> None:
    text = f'job "j" {{\n  group "g" {{\n    task "t" {{\n      driver = "x"\n      template {{\n        data = {heredoc}\n      }}\n    }}\n  }}\n}}\n'
    job = parse_job_hcl(text)
    assert job["TaskGroups"][0]["Tasks"][0]["Templates"][0]["EmbeddedTmpl"] == expected


def test_variables_defaults_var_file_and_dict() -> None:
    decls = 'variable "img" {\n  type = string\n  default = "d"\n}\nvariable "n" {\n  type = number\n}\n'
    assert _env('"${var.img}-${var.n}"', 'n = 3', decls) == "d-3"
    assert _env('"${var.img}-${var.n}"', 'img = "v\\"q"\nn = 4', decls) == 'v"q-4'
    assert _env("var.img", {"img": "from-dict", "n": "5"}, decls) == "from-dict"


def test_variable_keeps_its_type_for_numbers() -> None:
    text = """
variable "count" {
  type = number
  default = 3
}
locals {
  c = var.count
}
job "j" {
  group "g" {
    count = local.c
    task "t" { driver = "raw_exec" }
  }
}
"""
    assert parse_job_hcl(text)["TaskGroups"][0]["Count"] == 3
    assert parse_job_hcl(text, {"count": "7"})["TaskGroups"][0]["Count"] == 7


@pytest.mark.parametrize(
    ("variables", "decls", "needle"),
    [
        (None, 'variable "x" {\n  type = string\n}\n', 'Unset variable "x"'),
        ('y = "1"', 'variable "x" {\n  default = "a"\n}\n', 'A "y" variable was set but was not declared'),
        ({"n": "abc"}, 'variable "n" {\n  type = number\n}\n', 'not a valid number'),
    ],
)
def test_variable_errors(variables: str | dict | None, decls: str, needle: str) -> None:
    with pytest.raises(ApiError) as exc:
        _env('"${var.x}"', variables, decls)
    assert exc.value.status == 400
    assert needle in exc.value.message


@pytest.mark.parametrize(
    ("hcl_value", "needle"),
    [
        ('"${var.missing}"', 'no variable "missing"'),
        ('upper("a")', "Unsupported expression"),
        ("1 + 2", "Unsupported expression"),
        ('"%{ if true }x%{ endif }"', "Unsupported template directive"),
        (r'"bad \q escape"', "Invalid escape sequence"),
    ],
)
def test_unsupported_expressions_are_clear_400s(hcl_value: str, needle: str) -> None:
    with pytest.raises(ApiError) as exc:
        _env(hcl_value)
    assert exc.value.status == 400
    assert needle in exc.value.message
    assert exc.value.message.startswith("input.hcl")


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("10s", 10 * 10**9),
        ("5m", 300 * 10**9),
        ("1h30m", 5400 * 10**9),
        ("1.5s", 1_500_000_000),
        ("250ms", 250_000_000),
        ("3us", 3_000),
        ("3µs", 3_000),
        ("7ns", 7),
        ("0", 0),
        ("-5m", -300 * 10**9),
        ("2h45m30.5s", (2 * 3600 + 45 * 60) * 10**9 + 30_500_000_000),
        (15_000_000_000, 15_000_000_000),
    ],
)
def test_parse_duration_matches_go(text: str | int, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["10", "ten s", "", "5 m", "1d", "s"])
def test_parse_duration_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time: "):
        parse_duration(text)


def test_bad_duration_in_job_names_the_attribute() -> None:
    text = 'job "j" {\n  group "g" {\n    task "t" {\n      driver = "x"\n      kill_timeout = "5 parsecs"\n    }\n  }\n}\n'
    with pytest.raises(ApiError) as exc:
        parse_job_hcl(text)
    assert "Unsuitable duration value" in exc.value.message
    assert "kill_timeout" in exc.value.message


@pytest.mark.parametrize("variables", [["x"], 'x = = "v"', 'job "x" {\n}\n'])
def test_bad_variables_payload_is_a_400(variables: object) -> None:
    decls = 'variable "x" {\n  default = "d"\n}\n'
    with pytest.raises(ApiError) as exc:
        _env('"${var.x}"', variables, decls)  # type: ignore[arg-type]
    assert exc.value.status == 400
