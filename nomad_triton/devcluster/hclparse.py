"""Nomad HCL2 job text -> the API Job JSON that `POST /v1/jobs/parse` returns.

Public functions of the jobspec package (devcluster's stand-in for Nomad's jobspec2 + api structs):

- `parse_job_hcl(text, variables=None, canonicalize=False) -> dict`        (this module)
- `parse_duration(value) -> int`  Go `time.ParseDuration` semantics, nanoseconds (this module)
- `canonicalize_job(job) -> dict`                                           (canonical.py)
- `validate_job(job) -> tuple[list[str], list[str]]`  (errors, warnings)    (validate.py)
- `diff_jobs(old, new) -> dict`, `annotate_count_changes(diff)`             (jobdiff.py)

Why a schema table per block: Nomad decodes each block into a Go struct with `hcl:"..."` tags, so
an argument or block the struct does not know is an error ("Unsupported argument" / "Unsupported
block type"). Mirroring that table keeps typos from being silently dropped and names the culprit.
Unset fields are omitted (Nomad returns them as null); `canonicalize_job` fills the defaults.
Errors raise `ApiError(400, ...)` with HCL-diagnostic-shaped texts as Nomad's parse endpoint does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.hclvalues import (
    Block,
    Body,
    Scope,
    body_to_map,
    evaluate,
    hcl_error,
    load_hcl,
    to_body,
)

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


def _any(v: Any, where: str) -> Any:
    return v


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


# ---------------------------------------------------------------- per-block schemas

_UPDATE = {
    "max_parallel": ("MaxParallel", _int), "health_check": ("HealthCheck", _str),
    "min_healthy_time": ("MinHealthyTime", _dur), "healthy_deadline": ("HealthyDeadline", _dur),
    "progress_deadline": ("ProgressDeadline", _dur), "auto_revert": ("AutoRevert", _bool),
    "auto_promote": ("AutoPromote", _bool), "canary": ("Canary", _int), "stagger": ("Stagger", _dur),
}
_MIGRATE = {k: _UPDATE[k] for k in ("max_parallel", "health_check", "min_healthy_time", "healthy_deadline")}
_RESTART = {
    "attempts": ("Attempts", _int), "interval": ("Interval", _dur), "delay": ("Delay", _dur),
    "mode": ("Mode", _str), "render_templates": ("RenderTemplates", _bool),
}
_RESCHEDULE = {
    "attempts": ("Attempts", _int), "interval": ("Interval", _dur), "delay": ("Delay", _dur),
    "delay_function": ("DelayFunction", _str), "max_delay": ("MaxDelay", _dur), "unlimited": ("Unlimited", _bool),
}
_EPHEMERAL = {"sticky": ("Sticky", _bool), "migrate": ("Migrate", _bool), "size": ("SizeMB", _int)}
_CONSTRAINT_SHORTHANDS = ("version", "semver", "regexp", "set_contains", "set_contains_all", "set_contains_any")
_CONSTRAINT_ATTRS = {"attribute", "operator", "value", "distinct_hosts", "distinct_property",
                     "attribute_is_set", "attribute_is_not_set", *_CONSTRAINT_SHORTHANDS}
_AFFINITY_ATTRS = {"attribute", "operator", "value", "weight", *_CONSTRAINT_SHORTHANDS}


def _simple(d: _Decoder, block: Block, schema: dict[str, tuple[str, Conv]]) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, set(schema), set())
    return d.attrs(block.body, schema, {})


def _one_simple(d: _Decoder, body: Body, type_: str, schema: dict[str, tuple[str, Conv]]) -> dict[str, Any] | None:
    block = d.one(body, type_)
    return _simple(d.sub(block), block, schema) if block else None


def _constraint(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, _CONSTRAINT_ATTRS, set())
    v = {k: evaluate(raw, d.scope) for k, raw in block.body.attrs.items()}
    s = {k: _str(x, f'"{k}" in {d.where}') for k, x in v.items() if k != "distinct_hosts" and x is not None}
    c = {"LTarget": s.get("attribute", ""), "RTarget": s.get("value", ""), "Operand": s.get("operator", "")}
    for op in ("version", "semver", "regexp", "set_contains"):
        if s.get(op):
            c["Operand"], c["RTarget"] = op, s[op]
    if v.get("distinct_hosts") is not None and _bool(v["distinct_hosts"], f'"distinct_hosts" in {d.where}'):
        c["Operand"] = "distinct_hosts"
    if s.get("distinct_property"):
        c["Operand"], c["LTarget"] = "distinct_property", s["distinct_property"]
    if not c["Operand"]:
        c["Operand"] = "="
    return c


def _affinity(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, _AFFINITY_ATTRS, set())
    v = {k: evaluate(raw, d.scope) for k, raw in block.body.attrs.items()}
    s = {k: _str(x, f'"{k}" in {d.where}') for k, x in v.items() if k != "weight" and x is not None}
    a: dict[str, Any] = {"LTarget": s.get("attribute", ""), "RTarget": s.get("value", ""),
                         "Operand": s.get("operator", "")}
    if v.get("weight") is not None:
        a["Weight"] = _int(v["weight"], f'"weight" in {d.where}')
    for op in ("version", "semver", "regexp", "set_contains_any", "set_contains_all", "set_contains"):
        if s.get(op):
            a["Operand"], a["RTarget"] = op, s[op]
    if not a["Operand"]:
        a["Operand"] = "="
    return a


def _spread(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, {"attribute", "weight"}, {"target"})
    out = d.attrs(block.body, {"attribute": ("Attribute", _str), "weight": ("Weight", _int)}, {})
    targets = []
    for t in block.body.blocks_of("target"):
        sd = d.sub(t)
        (value,) = sd.labels(t, ["value"])
        sd.check(t.body, {"percent"}, set())
        targets.append(sd.attrs(t.body, {"percent": ("Percent", _int)}, {"Value": value}))
    if targets:
        out["SpreadTarget"] = targets
    return out


def _placement(d: _Decoder, body: Body, out: dict[str, Any], spreads: bool = True) -> None:
    cons = [_constraint(d.sub(b), b) for b in body.blocks_of("constraint")]
    affs = [_affinity(d.sub(b), b) for b in body.blocks_of("affinity")]
    if cons:
        out["Constraints"] = cons
    if affs:
        out["Affinities"] = affs
    if spreads:
        spr = [_spread(d.sub(b), b) for b in body.blocks_of("spread")]
        if spr:
            out["Spreads"] = spr


def _network(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, {"mode", "hostname", "mbits"}, {"port", "dns"})
    out = d.attrs(block.body, {"mode": ("Mode", _str), "hostname": ("Hostname", _str), "mbits": ("MBits", _int)}, {})
    dynamic, reserved = [], []
    for p in block.body.blocks_of("port"):
        pd = d.sub(p)
        (label,) = pd.labels(p, ["label"])
        pd.check(p.body, {"static", "to", "host_network"}, set())
        port = pd.attrs(p.body, {"static": ("Value", _int), "to": ("To", _int), "host_network": ("HostNetwork", _str)},
                        {})
        entry = {"Label": label, "Value": port.get("Value", 0), "To": port.get("To", 0),
                 "HostNetwork": port.get("HostNetwork", "")}
        # Nomad's normalizeJob: a port with a static value is a reserved port.
        (reserved if entry["Value"] > 0 else dynamic).append(entry)
    if dynamic:
        out["DynamicPorts"] = dynamic
    if reserved:
        out["ReservedPorts"] = reserved
    dns = d.one(block.body, "dns")
    if dns:
        out["DNS"] = _simple(d.sub(dns), dns, {"servers": ("Servers", _strlist), "searches": ("Searches", _strlist),
                                               "options": ("Options", _strlist)})
    return out


_CHECK = {
    "name": ("Name", _str), "type": ("Type", _str), "path": ("Path", _str), "protocol": ("Protocol", _str),
    "port": ("PortLabel", _str), "interval": ("Interval", _dur), "timeout": ("Timeout", _dur),
    "method": ("Method", _str), "initial_status": ("InitialStatus", _str), "address_mode": ("AddressMode", _str),
    "expose": ("Expose", _bool), "task": ("TaskName", _str), "command": ("Command", _str), "args": ("Args", _strlist),
    "tls_skip_verify": ("TLSSkipVerify", _bool), "tls_server_name": ("TLSServerName", _str),
    "on_update": ("OnUpdate", _str), "success_before_passing": ("SuccessBeforePassing", _int),
    "failures_before_critical": ("FailuresBeforeCritical", _int), "failures_before_warning":
    ("FailuresBeforeWarning", _int), "grpc_service": ("GRPCService", _str), "grpc_use_tls": ("GRPCUseTLS", _bool),
    "body": ("Body", _str), "header": ("Header", _strlistmap), "notes": ("Notes", _str),
}
_CHECK_RESTART = {"limit": ("Limit", _int), "grace": ("Grace", _dur), "ignore_warnings": ("IgnoreWarnings", _bool)}


def _check(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, set(_CHECK), {"check_restart", "header"})
    out = d.attrs(block.body, _CHECK, {})
    header = d.one(block.body, "header")
    if header:
        hd = d.sub(header)
        hd.check(header.body, set(header.body.attrs), set())
        out["Header"] = _strlistmap({k: evaluate(v, d.scope) for k, v in header.body.attrs.items()}, hd.where)
    cr = _one_simple(d, block.body, "check_restart", _CHECK_RESTART)
    if cr is not None:
        out["CheckRestart"] = cr
    return out


_SERVICE = {
    "name": ("Name", _str), "port": ("PortLabel", _str), "provider": ("Provider", _str), "tags": ("Tags", _strlist),
    "canary_tags": ("CanaryTags", _strlist), "address_mode": ("AddressMode", _str), "address": ("Address", _str),
    "task": ("TaskName", _str), "enable_tag_override": ("EnableTagOverride", _bool), "on_update": ("OnUpdate", _str),
    "canary_meta": ("CanaryMeta", _strmap), "tagged_addresses": ("TaggedAddresses", _strmap),
    "cluster": ("Cluster", _str),
}


def _service(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, set(_SERVICE) | {"meta"}, {"check", "check_restart", "meta"})
    out = d.attrs(block.body, _SERVICE, {})
    meta = d.string_map(block.body, "meta")
    if meta is not None:
        out["Meta"] = meta
    checks = [_check(d.sub(b), b) for b in block.body.blocks_of("check")]
    if checks:
        out["Checks"] = checks
    cr = _one_simple(d, block.body, "check_restart", _CHECK_RESTART)
    if cr is not None:
        out["CheckRestart"] = cr
    return out


def _services(d: _Decoder, body: Body, out: dict[str, Any]) -> None:
    services = [_service(d.sub(b), b) for b in body.blocks_of("service")]
    if services:
        out["Services"] = services


def _resources(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    schema = {"cpu": ("CPU", _int), "cores": ("Cores", _int), "memory": ("MemoryMB", _int),
              "memory_max": ("MemoryMaxMB", _int), "disk": ("DiskMB", _int), "iops": ("IOPS", _int),
              "secrets": ("SecretsMB", _int)}
    d.check(block.body, set(schema), {"device", "network"})
    out = d.attrs(block.body, schema, {})
    devices = []
    for dev in block.body.blocks_of("device"):
        dd = d.sub(dev)
        (name,) = dd.labels(dev, ["name"])
        dd.check(dev.body, {"count"}, {"constraint", "affinity"})
        entry = dd.attrs(dev.body, {"count": ("Count", _int)}, {"Name": name})
        _placement(dd, dev.body, entry, spreads=False)
        devices.append(entry)
    if devices:
        out["Devices"] = devices
    nets = [_network(d.sub(b), b) for b in block.body.blocks_of("network")]
    if nets:
        out["Networks"] = nets
    return out


_TEMPLATE = {
    "data": ("EmbeddedTmpl", _str), "destination": ("DestPath", _str), "source": ("SourcePath", _str),
    "change_mode": ("ChangeMode", _str), "change_signal": ("ChangeSignal", _str), "splay": ("Splay", _dur),
    "perms": ("Perms", _str), "uid": ("Uid", _int), "gid": ("Gid", _int), "left_delimiter": ("LeftDelim", _str),
    "right_delimiter": ("RightDelim", _str), "env": ("Envvars", _bool),
    "error_on_missing_key": ("ErrMissingKey", _bool), "vault_grace": ("VaultGrace", _dur),
}
_ARTIFACT = {"source": ("GetterSource", _str), "destination": ("RelativeDest", _str), "mode": ("GetterMode", _str),
             "options": ("GetterOptions", _strmap), "headers": ("GetterHeaders", _strmap),
             "chown": ("Chown", _bool)}
_TASK = {
    "driver": ("Driver", _str), "user": ("User", _str), "kill_timeout": ("KillTimeout", _dur),
    "kill_signal": ("KillSignal", _str), "leader": ("Leader", _bool), "shutdown_delay": ("ShutdownDelay", _dur),
    "kind": ("Kind", _str),
}


def _template(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, set(_TEMPLATE), {"wait", "change_script"})
    out = d.attrs(block.body, _TEMPLATE, {})
    wait = _one_simple(d, block.body, "wait", {"min": ("Min", _dur), "max": ("Max", _dur)})
    if wait is not None:
        out["Wait"] = wait
    if block.body.blocks_of("change_script"):
        raise hcl_error("Unsupported block type", 'Blocks of type "change_script" are not supported by devcluster.',
                        d.where)
    return out


def _artifact(d: _Decoder, block: Block) -> dict[str, Any]:
    d.no_labels(block)
    d.check(block.body, set(_ARTIFACT), {"options", "headers"})
    out = d.attrs(block.body, _ARTIFACT, {})
    for name, key in (("options", "GetterOptions"), ("headers", "GetterHeaders")):
        if block.body.blocks_of(name):
            out[key] = d.string_map(block.body, name)
    return out


def _task(d: _Decoder, block: Block) -> dict[str, Any]:
    (name,) = d.labels(block, ["name"])
    body = block.body
    d.check(body, set(_TASK) | {"env", "meta", "config"},
            {"config", "env", "meta", "resources", "service", "template", "artifact", "constraint", "affinity",
             "restart", "logs", "lifecycle", "volume_mount"})
    out = d.attrs(body, _TASK, {"Name": name})
    config = d.one(body, "config")
    if "config" in body.attrs:
        out["Config"] = evaluate(body.attrs["config"], d.scope)
    elif config:
        d.sub(config).no_labels(config)
        out["Config"] = body_to_map(config.body, d.scope)
    for name_, key in (("env", "Env"), ("meta", "Meta")):
        value = d.string_map(body, name_)
        if value is not None:
            out[key] = value
    res = d.one(body, "resources")
    if res:
        out["Resources"] = _resources(d.sub(res), res)
    _services(d, body, out)
    # jobspec2's normalizeTemplates fills these at parse time, before any Canonicalize.
    templates = [{"ChangeMode": "restart", "Perms": "0644", "Splay": 5 * 10**9, "ErrMissingKey": False,
                  **_template(d.sub(b), b)} for b in body.blocks_of("template")]
    if templates:
        out["Templates"] = templates
    artifacts = [_artifact(d.sub(b), b) for b in body.blocks_of("artifact")]
    if artifacts:
        out["Artifacts"] = artifacts
    _placement(d, body, out, spreads=False)
    mounts = [_simple(d.sub(b), b, _VOLUME_MOUNT) for b in body.blocks_of("volume_mount")]
    if mounts:
        out["VolumeMounts"] = mounts
    for type_, key, schema in (
        ("restart", "RestartPolicy", _RESTART),
        ("logs", "LogConfig", {"max_files": ("MaxFiles", _int), "max_file_size": ("MaxFileSizeMB", _int),
                               "disabled": ("Disabled", _bool), "enabled": ("Enabled", _bool)}),
        ("lifecycle", "Lifecycle", {"hook": ("Hook", _str), "sidecar": ("Sidecar", _bool)}),
    ):
        value = _one_simple(d, body, type_, schema)
        if value is not None:
            out[key] = value
    return out


def _scaling(d: _Decoder, block: Block) -> dict[str, Any]:
    if block.labels:
        raise hcl_error("Extraneous label for scaling", "Group scaling blocks take no label.", d.where)
    d.check(block.body, {"min", "max", "enabled", "type"}, {"policy"})
    if "max" not in block.body.attrs:
        raise hcl_error("Missing required argument", 'The argument "max" is required, but no definition was found.',
                        d.where)
    out = d.attrs(block.body, {"min": ("Min", _int), "max": ("Max", _int), "enabled": ("Enabled", _bool),
                               "type": ("Type", _str)}, {})
    out.setdefault("Type", "horizontal")
    policy = d.one(block.body, "policy")
    if policy:
        out["Policy"] = body_to_map(policy.body, d.scope)
    return out


_VOLUME = {"type": ("Type", _str), "source": ("Source", _str), "read_only": ("ReadOnly", _bool),
           "access_mode": ("AccessMode", _str), "attachment_mode": ("AttachmentMode", _str),
           "per_alloc": ("PerAlloc", _bool)}
_VOLUME_MOUNT = {"volume": ("Volume", _str), "destination": ("Destination", _str), "read_only": ("ReadOnly", _bool),
                 "propagation_mode": ("PropagationMode", _str), "selinux_label": ("SELinuxLabel", _str)}


def _volumes(d: _Decoder, body: Body) -> dict[str, Any] | None:
    """Group `volume "name" {}` blocks -> TaskGroup.Volumes, a map keyed by the label (Nomad's shape)."""
    out: dict[str, Any] = {}
    for block in body.blocks_of("volume"):
        vd = d.sub(block)
        (name,) = vd.labels(block, ["name"])
        vd.check(block.body, set(_VOLUME), {"mount_options"})
        if block.body.blocks_of("mount_options"):
            raise hcl_error("Unsupported block type",
                            'Blocks of type "mount_options" are not supported by devcluster.', vd.where)
        if name in out:
            raise hcl_error("Duplicate volume block", f'A volume named "{name}" is already defined.', d.where)
        out[name] = vd.attrs(block.body, _VOLUME, {"Name": name})
    return out or None


_GROUP = {"count": ("Count", _int), "shutdown_delay": ("ShutdownDelay", _dur),
          "stop_after_client_disconnect": ("StopAfterClientDisconnect", _dur),
          "max_client_disconnect": ("MaxClientDisconnect", _dur),
          "prevent_reschedule_on_lost": ("PreventRescheduleOnLost", _bool)}


def _group(d: _Decoder, block: Block) -> dict[str, Any]:
    (name,) = d.labels(block, ["name"])
    body = block.body
    d.check(body, set(_GROUP) | {"meta"},
            {"constraint", "affinity", "spread", "task", "network", "service", "update", "restart", "reschedule",
             "ephemeral_disk", "scaling", "meta", "migrate", "volume"})
    out = d.attrs(body, _GROUP, {"Name": name})
    _placement(d, body, out)
    tasks = [_task(d.sub(b), b) for b in body.blocks_of("task")]
    if tasks:
        out["Tasks"] = tasks
    nets = [_network(d.sub(b), b) for b in body.blocks_of("network")]
    if nets:
        out["Networks"] = nets
    _services(d, body, out)
    for type_, key, schema in (("update", "Update", _UPDATE), ("restart", "RestartPolicy", _RESTART),
                               ("reschedule", "ReschedulePolicy", _RESCHEDULE),
                               ("ephemeral_disk", "EphemeralDisk", _EPHEMERAL), ("migrate", "Migrate", _MIGRATE)):
        value = _one_simple(d, body, type_, schema)
        if value is not None:
            out[key] = value
    volumes = _volumes(d, body)
    if volumes:
        out["Volumes"] = volumes
    scaling = d.one(body, "scaling")
    if scaling:
        out["Scaling"] = _scaling(d.sub(scaling), scaling)
    meta = d.string_map(body, "meta")
    if meta is not None:
        out["Meta"] = meta
    return out


_JOB = {
    "region": ("Region", _str), "namespace": ("Namespace", _str), "id": ("ID", _str), "name": ("Name", _str),
    "type": ("Type", _str), "priority": ("Priority", _int), "all_at_once": ("AllAtOnce", _bool),
    "datacenters": ("Datacenters", _strlist), "node_pool": ("NodePool", _str),
    "consul_token": ("ConsulToken", _str), "vault_token": ("VaultToken", _str),
}


def _job(d: _Decoder, block: Block) -> dict[str, Any]:
    (label,) = d.labels(block, ["name"])
    body = block.body
    d.check(body, set(_JOB) | {"meta"},
            {"constraint", "affinity", "spread", "group", "update", "reschedule", "migrate", "meta", "task"})
    out = d.attrs(body, _JOB, {})
    out.setdefault("ID", label)
    out.setdefault("Name", label)
    _placement(d, body, out)
    # A task directly in the job becomes its own group of that name, first (jobspec2 normalizeJob).
    groups = [{"Name": t["Name"], "Tasks": [t]} for t in (_task(d.sub(b), b) for b in body.blocks_of("task"))]
    groups += [_group(d.sub(b), b) for b in body.blocks_of("group")]
    if groups:
        out["TaskGroups"] = groups
    for type_, key, schema in (("update", "Update", _UPDATE), ("reschedule", "Reschedule", _RESCHEDULE),
                               ("migrate", "Migrate", _MIGRATE)):
        value = _one_simple(d, body, type_, schema)
        if value is not None:
            out[key] = value
    meta = d.string_map(body, "meta")
    if meta is not None:
        out["Meta"] = meta
    return out


# ---------------------------------------------------------------- variables and entry point

def _coerce_var(name: str, type_: str | None, value: Any) -> Any:
    """CLI-style string values (`-var x=1`) are converted to the declared type, as HCL does."""
    if not isinstance(value, str) or type_ in (None, "string", "any"):
        return value
    try:
        if type_ == "number":
            return float(value) if any(c in value for c in ".eE") else int(value)
        if type_ == "bool" and value in ("true", "false"):
            return value == "true"
    except ValueError:
        pass
    raise hcl_error("Invalid value for input variable", f'The value for variable "{name}" is not a valid {type_}.')


def _declare_variables(top: Body, supplied: dict[str, Any]) -> dict[str, Any]:
    scope = Scope()
    declared: dict[str, Any] = {}
    types: dict[str, str | None] = {}
    missing = object()
    for block in top.blocks_of("variable"):
        d = _Decoder(scope, f'variable "{block.labels[0] if block.labels else ""}"')
        (name,) = d.labels(block, ["name"])
        d.check(block.body, {"type", "default", "description", "sensitive", "nullable"}, {"validation"})
        if block.body.blocks_of("validation"):
            raise hcl_error("Unsupported block type", 'Blocks of type "validation" are not supported by devcluster.',
                            d.where)
        if name in declared:
            raise hcl_error("Duplicate variable", f'Duplicate "{name}" variable definition found.')
        raw_type = block.body.attrs.get("type")
        types[name] = raw_type.strip("${}") if isinstance(raw_type, str) else None
        declared[name] = evaluate(block.body.attrs["default"], scope) if "default" in block.body.attrs else missing
    for block in top.blocks_of("variables"):
        for name, raw in block.body.attrs.items():
            declared[name] = evaluate(raw, scope)
            types[name] = None
    for name, value in supplied.items():
        if name not in declared:
            raise hcl_error(
                "Undefined variable", f'A "{name}" variable was set but was not declared in the job file.'
            )
        declared[name] = _coerce_var(name, types.get(name), value)
    for name, value in declared.items():
        if value is missing:
            raise hcl_error(f'Unset variable "{name}"', "A used variable must be set or have a default value.")
    return declared


def _supplied_variables(variables: str | dict[str, Any] | None) -> dict[str, Any]:
    if variables is None or variables == "":
        return {}
    if isinstance(variables, dict):
        return dict(variables)
    body = to_body(load_hcl(variables))
    if body.blocks:
        raise hcl_error("Unexpected block in variables", f'Blocks of type "{body.blocks[0].type}" are not allowed '
                        "in a variables file.")
    return {k: evaluate(v, Scope()) for k, v in body.attrs.items()}


def parse_job_hcl(text: str, variables: str | dict[str, Any] | None = None, canonicalize: bool = False) -> dict:
    """Nomad HCL2 job text (+ var-file text or dict) -> API Job JSON; optionally canonicalized.

    Raises ApiError(400, ...) for syntax errors, unknown/unsupported blocks or arguments, bad types,
    unset or undeclared variables and unsupported expressions.
    """
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "error parsing: job HCL is empty")
    top = to_body(load_hcl(text))
    supplied = _supplied_variables(variables)
    root = _Decoder(Scope(), "")
    root.check(top, set(), {"job", "variable", "variables", "locals"})
    scope = Scope(_declare_variables(top, supplied))
    for block in top.blocks_of("locals"):
        for name, raw in block.body.attrs.items():
            if name in scope.locals:
                raise hcl_error("Duplicate value in locals", f"Duplicate {name} definition found.")
            scope.locals[name] = evaluate(raw, scope)
    jobs = top.blocks_of("job")
    if not jobs:
        raise hcl_error("Missing job block", "A job block is required")
    if len(jobs) > 1:
        raise hcl_error("Duplicate job block", 'Only one block of type "job" is allowed.')
    label = jobs[0].labels[0] if jobs[0].labels else ""
    job = _job(_Decoder(scope, f'job "{label}"'), jobs[0])
    if canonicalize:
        from nomad_triton.devcluster.canonical import canonicalize_job

        job = canonicalize_job(job)
    return job
