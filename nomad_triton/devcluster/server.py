"""`python -m nomad_triton.devcluster`: load config, build the store, start runtime + HTTP API.

Why it binds its own socket: the port may be 0 (tests pick free ports at runtime), and the
chosen address must be known and published (`<state_dir>/devcluster.json`) before anyone
connects. Loopback only: devcluster runs arbitrary raw_exec commands for whoever can reach it.
Tokens are written to files with mode 0600 and never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import platform
import secrets
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from .alloc_runner import rfc3339
from .api import Ctx, build_app
from .config import ConfigError, DevclusterConfig, NodeConfig, load_config
from .feasibility import typed_attribute
from .state_db import StateOpenError, open_state
from .store import Store

log = logging.getLogger("devcluster")
STATE_FILE = "devcluster.json"
MGMT_TOKEN_FILE = "management.token"


def _arch() -> str:
    m = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(m, m)


def node_object(cfg: NodeConfig, http_addr: str, region: str) -> dict[str, Any]:
    """A Nomad API Node for one configured node (simulated devices included)."""
    # DriverInfo.UpdateTime is a Go time.Time: RFC 3339 on the wire, not unix nanoseconds.
    now = rfc3339()
    devices = []
    for d_i, dev in enumerate(cfg.devices):
        attrs = dict(dev.attributes)
        if dev.memory:
            attrs.setdefault("memory", dev.memory)
        # Nomad's NodeDeviceResource.Attributes are typed ({"Int": 40, "Unit": "GiB"}), not text:
        # the Go client fails to decode a plain string there.
        typed = {name: typed_attribute(str(value)) for name, value in attrs.items()}
        instances = [
            {"ID": f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'{cfg.name}/{d_i}/{i}')}", "Healthy": dev.healthy,
             "HealthDescription": "" if dev.healthy else "simulated unhealthy", "Locality": None}
            for i in range(dev.count)
        ]
        devices.append({"Vendor": dev.vendor, "Type": dev.type, "Name": dev.name,
                        "Attributes": typed, "Instances": instances})
    drivers = {
        name: {"Attributes": {f"driver.{name}": "1"}, "Detected": True, "Healthy": True,
               "HealthDescription": "Healthy", "UpdateTime": now}
        for name in cfg.drivers
    }
    attributes = {
        "kernel.name": platform.system().lower(),
        "kernel.version": platform.release(),
        "os.name": platform.system().lower(),
        "cpu.arch": _arch(),
        "cpu.numcores": str(os.cpu_count() or 1),
        "cpu.totalcompute": str(cfg.cpu_mhz),
        "memory.totalbytes": str(cfg.memory_mb * 1024 * 1024),
        "unique.hostname": cfg.name,
        "unique.network.ip-address": "127.0.0.1",
        "nomad.version": "1.9.0",
        "nomad.advertise.address": http_addr,
    }
    attributes.update({f"driver.{d}": "1" for d in cfg.drivers})
    return {
        "ID": cfg.node_id(),
        "Name": cfg.name,
        "Datacenter": cfg.datacenter,
        "Region": region,
        "NodePool": cfg.node_pool,
        "NodeClass": cfg.node_class,
        "ComputedClass": f"v1:{abs(hash((cfg.node_pool, cfg.node_class))) % 10**18}",
        "HTTPAddr": http_addr,
        "TLSEnabled": False,
        "Attributes": attributes,
        "Meta": dict(cfg.meta),
        "NodeResources": {
            "Cpu": {"CpuShares": cfg.cpu_mhz, "TotalCpuCores": os.cpu_count() or 1, "ReservableCpuCores": None},
            "Memory": {"MemoryMB": cfg.memory_mb},
            "Disk": {"DiskMB": cfg.disk_mb},
            "Networks": [{"Mode": "host", "Device": "lo", "IP": "127.0.0.1", "CIDR": "127.0.0.1/32", "MBits": 1000}],
            "Devices": devices or None,
            "MinDynamicPort": 20000,
            "MaxDynamicPort": 32000,
        },
        "ReservedResources": {"Cpu": {"CpuShares": 0}, "Memory": {"MemoryMB": 0}, "Disk": {"DiskMB": 0},
                              "Networks": {"ReservedHostPorts": ""}},
        "Drivers": drivers,
        "HostVolumes": None,
        "Links": None,
        "Drain": False,
        "DrainStrategy": None,
        "LastDrain": None,
        "SchedulingEligibility": "eligible",
        "Status": "ready",
        "StatusDescription": "",
        "StatusUpdatedAt": int(time.time()),
        "Events": [{"Message": "Node registered", "Subsystem": "Cluster", "Details": None,
                    "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "CreateIndex": 0}],
        "Version": "1.9.0",
    }


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.chmod(path, 0o600)


def seed_store(store: Store, config: DevclusterConfig, http_addr: str) -> None:
    """Node pools, nodes and ACL tokens: the state a freshly started cluster has."""
    pools = [("all", "Node pool with all nodes in the cluster.", {}),
             ("default", "Default node pool.", {})]
    pools += [(p.name, p.description, p.meta) for p in config.node_pools if p.name not in ("all", "default")]
    for name, desc, meta in pools:
        store.upsert("node_pools", name, {"Name": name, "Description": desc, "Meta": dict(meta) or None,
                                          "SchedulerConfiguration": None},
                     event_type="NodePoolUpserted", payload_name="NodePool")
    for node in config.nodes:
        obj = node_object(node, http_addr, config.server.region)
        store.upsert("nodes", obj["ID"], obj, event_type="NodeRegistration", payload_name="Node")


def bootstrap_acl(store: Store, config: DevclusterConfig, state_dir: Path) -> None:
    """Management token + configured client tokens; SecretIDs go to 0600 files only.

    A restarted cluster keeps the tokens it already issued (same secrets, files rewritten), as a
    Nomad server keeps its ACL tokens in raft; only tokens new to the config are minted.
    """
    if not config.server.acl:
        return
    tokens = [("management", "Bootstrap Token", "management", [], MGMT_TOKEN_FILE)]
    tokens += [(t.name, t.name, t.type, t.policies, f"{t.name}.token") for t in config.acl.tokens]
    issued = {t.get("Name"): t for t in store.list("acl_tokens")}
    for _, name, typ, policies, filename in tokens:
        old = issued.get(name)
        if old is not None:
            if old.get("Type") != typ or (old.get("Policies") or None) != (list(policies) or None):
                store.upsert("acl_tokens", old["AccessorID"], dict(old, Type=typ, Policies=list(policies) or None))
            _write_secret(state_dir / filename, old["SecretID"])
            continue
        secret = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        tok = {"AccessorID": str(uuid.uuid4()), "SecretID": secret, "Name": name, "Type": typ,
               "Policies": list(policies) or None, "Roles": None, "Global": True,
               "CreateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "ExpirationTime": None,
               "ExpirationTTL": 0}
        store.upsert("acl_tokens", tok["AccessorID"], tok)
        _write_secret(state_dir / filename, secret)


def _bind(host: str, port: int) -> socket.socket:
    if not ipaddress.ip_address(host).is_loopback:
        raise ConfigError(f"refusing to listen on {host}: devcluster binds loopback addresses only")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # every keep-alive answer waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.set_inheritable(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM when serve() returns, which would kill the process
    before the runtime stops its tasks; devcluster handles SIGINT/SIGTERM itself (see serve())."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def _load_runtime(store: Store, config: DevclusterConfig) -> Any:
    from .runtime import Runtime  # imported here so `--help` and config errors stay fast

    return Runtime(store, config)


async def serve(config: DevclusterConfig, state_dir: Path, log_level: str = "warning") -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    config.state_dir = state_dir
    sock = _bind(config.server.bind, config.server.port)
    host, port = sock.getsockname()[:2]
    addr = f"http://{host}:{port}"
    store = Store()
    db = open_state(state_dir, config.server.durability)
    restored = store.attach(db) if db is not None else False
    with store.batch():
        seed_store(store, config, f"{host}:{port}")
        bootstrap_acl(store, config, state_dir)
    runtime = _load_runtime(store, config)
    if restored:
        log.warning("devcluster restored its state from %s (index %d)", db.path if db else "", store.index)
    ctx = Ctx(store=store, config=config, runtime=runtime)
    app = build_app(ctx)
    uv_config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                               timeout_graceful_shutdown=3, timeout_keep_alive=30)
    server = _Server(uv_config)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        ctx.closing = True
        server.request_exit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await runtime.start()
    info = {"addr": addr, "pid": os.getpid(), "acl": config.server.acl,
            "token_file": str(state_dir / MGMT_TOKEN_FILE) if config.server.acl else None}
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(state_dir / STATE_FILE)
    print(f"devcluster listening on {addr} (state {state_dir})", file=sys.stderr, flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        try:
            await asyncio.wait_for(runtime.shutdown(), timeout=20)
        except Exception:  # the launcher kills leftover task groups after this
            log.exception("runtime shutdown failed")
        with contextlib.suppress(FileNotFoundError):
            (state_dir / STATE_FILE).unlink()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nomad_triton.devcluster",
                                     description="Single-machine cluster speaking Nomad's HTTP API.")
    parser.add_argument("--config", help="devcluster.toml (default: one CPU node, no ACLs)")
    parser.add_argument("--port", type=int, help="listen port (0 = pick a free one)")
    parser.add_argument("--state-dir", default=".devcluster", help="allocations, logs, tokens")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.port is not None:
            config.server.port = args.port
        if not ipaddress.ip_address(config.server.bind).is_loopback:
            raise ConfigError(f"{args.config}: server.bind: devcluster binds loopback addresses only")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="devcluster %(levelname)s %(name)s: %(message)s")
    # uvicorn handles SIGINT/SIGTERM (graceful stop); runtime.shutdown() then stops every task group.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        asyncio.run(serve(config, Path(args.state_dir).resolve(), args.log_level.lower()))
    except (ConfigError, StateOpenError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {config.server.bind}:{config.server.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
