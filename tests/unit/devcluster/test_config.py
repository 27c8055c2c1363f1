"""devcluster.toml parsing: defaults, the example file, and one-line errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_triton.devcluster.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[3]


def test_defaults_give_one_loopback_cpu_node() -> None:
    cfg = parse_config({})
    assert cfg.server.bind == "127.0.0.1" and not cfg.server.acl
    assert [n.name for n in cfg.nodes] == ["local-1"]
    assert cfg.nodes[0].datacenter == "dc1"


def test_example_config_has_cpu_and_gpu_pools() -> None:
    cfg = load_config(REPO / "devcluster.toml")
    pools = {n.node_pool for n in cfg.nodes}
    assert pools == {"default", "gpu"}
    gpus = [d for n in cfg.nodes for d in n.devices]
    assert gpus and all(d.vendor == "nvidia" and d.type == "gpu" for d in gpus)
    assert set(cfg.acl.policies) >= {"deployer", "viewer"}


def test_node_ids_are_stable_and_distinct() -> None:
    a = parse_config({"nodes": [{"name": "a"}, {"name": "b"}]})
    b = parse_config({"nodes": [{"name": "a"}, {"name": "b"}]})
    assert [n.node_id() for n in a.nodes] == [n.node_id() for n in b.nodes]
    assert a.nodes[0].node_id() != a.nodes[1].node_id()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"server": {"bind": "0.0.0.0"}}, "server.bind: 0.0.0.0 is not a loopback address"),
        ({"server": {"bind": "10.1.2.3"}}, "server.bind"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"nodes": [{"name": "a", "cpu_mhz": 0}]}, "nodes[0].cpu_mhz"),
        ({"nodes": [{"name": "a", "devices": [{"name": "x", "count": 0}]}]}, "nodes[0].devices[0].count"),
        ({"nodes": [{"name": "a", "node_pool": "gpu"}]}, "undeclared node pool 'gpu'"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "node names must be unique"),
        ({"server": {"typo": 1}}, "server.typo: Extra inputs are not permitted"),
        ({"acl": {"tokens": [{"name": "t", "policies": ["nope"]}]}}, "unknown policies ['nope']"),
        ({"acl": {"policies": {"p": {"namespace": {"default": {"capabilities": ["fly"]}}}}}},
         "unknown capabilities ['fly']"),
        ({"acl": {"policies": {"p": {"node": "admin"}}}}, "node policy must be deny, read or write"),
        ({"acl": {"tokens": [{"name": "../x"}]}}, "it names a file"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_field(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "dc.toml")
    text = str(err.value)
    assert text.startswith("dc.toml: ") and needle in text and "\n" not in text


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: invalid TOML"):
        load_config(bad)
