"""Device attributes as Nomad's API types them, and constraints over them (pure)."""

from __future__ import annotations

import pytest

from nomad_triton.devcluster.feasibility import device_meets, typed_attribute


@pytest.mark.parametrize("text,typed", [
    ("40 GiB", {"Int": 40, "Unit": "GiB"}),
    ("40960 MiB", {"Int": 40960, "Unit": "MiB"}),
    ("1.5 GHz", {"Float": 1.5, "Unit": "GHz"}),
    ("300 W", {"Int": 300, "Unit": "W"}),
    ("7", {"Int": 7, "Unit": ""}),
    ("8.0", {"Float": 8.0, "Unit": ""}),
    ("true", {"Bool": True, "Unit": ""}),
    ("A100-SXM4-40GB", {"String": "A100-SXM4-40GB", "Unit": ""}),
    ("12 parsecs", {"String": "12 parsecs", "Unit": ""}),  # not a unit Nomad knows: text
    ("550.54.15", {"String": "550.54.15", "Unit": ""}),
])
def test_typed_attribute(text: str, typed: dict) -> None:
    assert typed_attribute(text) == typed


def _gpu(**attrs: str) -> dict:
    return {"Vendor": "nvidia", "Type": "gpu", "Name": "A100",
            "Attributes": {k: typed_attribute(v) for k, v in attrs.items()}}


def _req(*constraints: tuple[str, str, str]) -> dict:
    return {"Name": "nvidia/gpu", "Count": 1,
            "Constraints": [{"LTarget": lt, "Operand": op, "RTarget": rt} for lt, op, rt in constraints]}


@pytest.mark.parametrize("constraint,meets", [
    (("${device.attr.memory}", ">=", "16 GiB"), True),
    (("${device.attr.memory}", ">=", "80 GiB"), False),
    (("${device.attr.memory}", ">", "40000 MiB"), True),
    (("${device.attr.memory}", "=", "40960 MiB"), True),
    (("${device.attr.product}", "=", "A100-SXM4-40GB"), True),  # text compares exactly, case kept
    (("${device.attr.product}", "=", "a100-sxm4-40gb"), False),
    (("${device.attr.product}", "regexp", "^A100"), True),
    (("${device.attr.mig}", "=", "false"), True),
    (("${device.attr.missing}", "is_not_set", ""), True),
])
def test_constraints_on_typed_attributes(constraint: tuple[str, str, str], meets: bool) -> None:
    dev = _gpu(memory="40 GiB", product="A100-SXM4-40GB", mig="false")
    assert device_meets(_req(constraint), dev) is meets
