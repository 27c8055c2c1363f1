"""devcluster.toml: the simulated cluster's shape (listen address, ACLs, namespaces, nodes, devices).

Why a file rather than flags: the e2e tests and `make demo` need reproducible clusters with
particular node pools and GPU devices (so that GPU placement and exhaustion behave as on a real
GPU pool) and particular ACL tokens. Validation is pydantic; a bad file is reported as one line
naming the file and the field (ConfigError), never a traceback.

Example (see devcluster.toml in the repository root):

    [server]
    port = 4646
    acl = true
    event_heartbeat_s = 10

    [[node_pools]]
    name = "gpu"

    [[nodes]]
    name = "gpu-1"
    node_pool = "gpu"
    cpu_mhz = 16000
    memory_mb = 65536
    [[nodes.devices]]
    vendor = "nvidia"
    type = "gpu"
    name = "A100"
    count = 2
    memory = "40 GiB"
"""

from __future__ import annotations

import ipaddress
import tomllib
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Namespace capabilities Nomad's ACL system knows (policy "namespace" rules).
NAMESPACE_CAPABILITIES = frozenset(
    {
        "deny",
        "list-jobs",
        "parse-job",
        "read-job",
        "submit-job",
        "dispatch-job",
        "read-logs",
        "read-fs",
        "alloc-exec",
        "alloc-lifecycle",
        "alloc-node-exec",
        "csi-list-volume",
        "csi-read-volume",
        "csi-write-volume",
        "list-scaling-policies",
        "read-scaling-policy",
        "read-job-scaling",
        "scale-job",
        "submit-recommendation",
        "sentinel-override",
        "host-volume-read",
        "host-volume-write",
    }
)
# Nomad's namespace `policy = "read" | "write"` shorthands expand to these capabilities.
POLICY_SHORTHAND = {
    "deny": {"deny"},
    "read": {"list-jobs", "parse-job", "read-job", "csi-list-volume", "csi-read-volume",
             "read-job-scaling", "list-scaling-policies", "read-scaling-policy"},
    "write": {"list-jobs", "parse-job", "read-job", "submit-job", "dispatch-job", "read-logs",
              "read-fs", "alloc-exec", "alloc-lifecycle", "csi-list-volume", "csi-read-volume",
              "csi-write-volume", "read-job-scaling", "list-scaling-policies", "read-scaling-policy",
              "scale-job", "submit-recommendation"},
}
VARIABLE_CAPABILITIES = frozenset({"read", "write", "list", "destroy", "deny"})
COARSE_POLICIES = frozenset({"deny", "read", "write"})


class ConfigError(Exception):
    """A devcluster config problem, already phrased as one line naming the file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    bind: str = "127.0.0.1"
    port: int = Field(default=4646, ge=0, le=65535)
    region: str = "global"
    datacenter: str = "dc1"
    acl: bool = False
    # Event-stream `{}` heartbeat interval; Nomad uses 10 s. Tests shorten it.
    event_heartbeat_s: float = Field(default=10.0, gt=0)
    # Default namespace always exists; these are extra ones (`?namespace=` on every endpoint).
    namespaces: list[str] = Field(default_factory=list)
    # How durable the state file under the state dir is (state_db.py): "process" survives a killed
    # devcluster, "power" also an OS crash (fsync per commit), "none" keeps state in memory only.
    durability: Literal["process", "power", "none"] = "process"

    @field_validator("bind")
    @classmethod
    def _loopback_only(cls, v: str) -> str:
        """devcluster runs real processes for anyone who can reach it: never listen off-host."""
        if v == "localhost":
            return "127.0.0.1"
        try:
            ip = ipaddress.ip_address(v)
        except ValueError as exc:
            raise ValueError(f"not an IP address: {v!r}") from exc
        if not ip.is_loopback:
            raise ValueError(f"{v} is not a loopback address; devcluster binds loopback only")
        return v


class DeviceConfig(_Strict):
    """One device group on a node, as Nomad fingerprints it (`vendor/type/name`)."""

    vendor: str = "nvidia"
    type: str = "gpu"
    name: str
    count: int = Field(default=1, ge=1, le=64)
    memory: str | None = None  # "40 GiB" style, as the nvidia device plugin reports
    attributes: dict[str, str] = Field(default_factory=dict)
    healthy: bool = True


class NodeConfig(_Strict):
    name: str
    id: str | None = None
    datacenter: str | None = None
    node_pool: str = "default"
    node_class: str = ""
    cpu_mhz: int = Field(default=8000, ge=1)
    memory_mb: int = Field(default=16384, ge=1)
    disk_mb: int = Field(default=100_000, ge=1)
    meta: dict[str, str] = Field(default_factory=dict)
    devices: list[DeviceConfig] = Field(default_factory=list)
    drivers: list[str] = Field(default_factory=lambda: ["raw_exec"])

    def node_id(self) -> str:
        """Stable ID derived from the name so restarts and tests see the same node IDs."""
        return self.id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"devcluster-node:{self.name}"))


class NodePoolConfig(_Strict):
    name: str
    description: str = ""
    meta: dict[str, str] = Field(default_factory=dict)


class NamespaceRule(_Strict):
    """`namespace "x" { policy = "write" capabilities = [...] variables { path "p" {...} } }`."""

    policy: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    # variables path glob -> capabilities
    variables: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> NamespaceRule:
        if self.policy is not None and self.policy not in POLICY_SHORTHAND:
            raise ValueError(f"unknown policy {self.policy!r} (deny, read, write)")
        bad = [c for c in self.capabilities if c not in NAMESPACE_CAPABILITIES]
        if bad:
            raise ValueError(f"unknown capabilities {bad}")
        for path, caps in self.variables.items():
            badv = [c for c in caps if c not in VARIABLE_CAPABILITIES]
            if badv:
                raise ValueError(f"unknown variable capabilities {badv} for path {path!r}")
        return self


class PolicyConfig(_Strict):
    description: str = ""
    namespace: dict[str, NamespaceRule] = Field(default_factory=dict)
    node: str | None = None
    agent: str | None = None
    operator: str | None = None

    @model_validator(mode="after")
    def _coarse(self) -> PolicyConfig:
        for field_name in ("node", "agent", "operator"):
            value = getattr(self, field_name)
            if value is not None and value not in COARSE_POLICIES:
                raise ValueError(f"{field_name} policy must be deny, read or write, not {value!r}")
        return self


class TokenConfig(_Strict):
    """A client token; its SecretID is generated at start and written to <state_dir>/<name>.token."""

    name: str
    policies: list[str] = Field(default_factory=list)
    type: str = "client"

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in ("client", "management"):
            raise ValueError("token type must be client or management")
        return v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("token name must be letters, digits, - or _ (it names a file)")
        return v


class AclConfig(_Strict):
    policies: dict[str, PolicyConfig] = Field(default_factory=dict)
    tokens: list[TokenConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _policies_exist(self) -> AclConfig:
        for tok in self.tokens:
            missing = [p for p in tok.policies if p not in self.policies]
            if missing:
                raise ValueError(f"token {tok.name!r} names unknown policies {missing}")
        return self


class DevclusterConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    node_pools: list[NodePoolConfig] = Field(default_factory=list)
    nodes: list[NodeConfig] = Field(default_factory=list)
    acl: AclConfig = Field(default_factory=AclConfig)
    # Knobs owned by the runtime (restart/reschedule timing etc.); the runtime validates them.
    runtime: dict[str, Any] = Field(default_factory=dict)
    # Filled in by the server at start (not from the file): where allocs, logs and tokens live.
    state_dir: Path | None = None

    @model_validator(mode="after")
    def _defaults_and_refs(self) -> DevclusterConfig:
        if not self.nodes:
            self.nodes = [NodeConfig(name="local-1")]
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")
        pool_names = {"default", "all"} | {p.name for p in self.node_pools}
        for node in self.nodes:
            if node.node_pool not in pool_names:
                raise ValueError(f"node {node.name!r} is in undeclared node pool {node.node_pool!r}")
            if node.datacenter is None:
                node.datacenter = self.server.datacenter
        return self

    def all_namespaces(self) -> list[str]:
        return ["default"] + [n for n in self.server.namespaces if n != "default"]


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_config(data: dict[str, Any], source: str = "<config>") -> DevclusterConfig:
    """Validate a parsed TOML mapping; raises ConfigError naming the source and the field."""
    try:
        return DevclusterConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _field_path(tuple(err.get("loc", ()))) or "(top level)"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise ConfigError(f"{source}: {where}: {msg}") from None


def load_config(path: str | Path | None) -> DevclusterConfig:
    """Load devcluster.toml (None -> defaults: one CPU node, no ACLs)."""
    if path is None:
        return DevclusterConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # a ValueError, not an OSError: was a traceback
        raise ConfigError(f"{p}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    return parse_config(data, str(p))
