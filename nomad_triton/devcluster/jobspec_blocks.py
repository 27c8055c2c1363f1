"""Per-block jobspec schemas: HCL block/argument names -> Nomad API Job JSON field names.

One small decoder per Nomad block (job, group, task, network, service, check, resources, device,
template, artifact, constraint, affinity, spread, update, restart, reschedule, scaling, volume ...),
following jobspec2's decoders (constraint shorthands, `distinct_hosts`, operator "=" by default,
static ports become ReservedPorts, template defaults filled at parse time). Entry: `decode_job`.
"""

from __future__ import annotations

from typing import Any

from nomad_triton.devcluster.hclvalues import Block, Body, Scope, body_to_map, evaluate, hcl_error
from nomad_triton.devcluster.jobspec_decode import (
    Conv,
    _bool,
    _Decoder,
    _dur,
    _int,
    _str,
    _strlist,
    _strlistmap,
    _strmap,
)

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


def decode_job(block: Block, scope: Scope) -> dict[str, Any]:
    """The `job "<id>" { ... }` block -> API Job JSON (unset fields omitted)."""
    label = block.labels[0] if block.labels else ""
    return _job(_Decoder(scope, f'job "{label}"'), block)
