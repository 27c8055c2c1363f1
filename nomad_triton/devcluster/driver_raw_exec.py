"""raw_exec driver: a task is a real local process in its own process group.

Why a process group: tasks such as PyTriton fork children (tritonserver, python-backend stubs)
that survive their parent when only the parent is signalled. Nomad's executor kills the whole
tree; devcluster signals the group. Each task runs under a small executor process (executor.py)
that leads the group (start_new_session=True makes its pid the pgid), outlives devcluster and
records the task's exit status, so a restarted devcluster can re-attach (task_handles.py).

The task environment is what Nomad's client builds (taskenv): the task's `env` block plus
NOMAD_* variables for the allocation, task, resources and ports, plus PATH from the devcluster
process so commands resolve; `${...}` in command, args and env is interpolated the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from nomad_triton.devcluster import task_handles as th

_VAR = re.compile(r"\$\{([^}]+)\}")
_BAD_ENV = re.compile(r"[^A-Za-z0-9_]")


def env_key(label: str) -> str:
    """Nomad replaces characters that are invalid in env var names with underscores."""
    return _BAD_ENV.sub("_", label)


def build_env(
    *,
    alloc: dict[str, Any],
    task: dict[str, Any],
    node: dict[str, Any],
    alloc_dir: Path,
    region: str,
) -> dict[str, str]:
    """NOMAD_* variables plus the task's interpolated `env` block (task env wins on conflicts)."""
    job = alloc.get("Job") or {}
    tg = next((g for g in job.get("TaskGroups") or [] if g.get("Name") == alloc.get("TaskGroup")), {})
    tname = task["Name"]
    res = ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).get(tname) or {}
    env: dict[str, str] = {
        "NOMAD_ALLOC_ID": alloc["ID"],
        "NOMAD_SHORT_ALLOC_ID": alloc["ID"][:8],
        "NOMAD_ALLOC_NAME": alloc["Name"],
        "NOMAD_ALLOC_INDEX": alloc["Name"].rsplit("[", 1)[-1].rstrip("]"),
        "NOMAD_ALLOC_DIR": str(alloc_dir / "alloc"),
        "NOMAD_TASK_DIR": str(alloc_dir / tname / "local"),
        "NOMAD_SECRETS_DIR": str(alloc_dir / tname / "secrets"),
        "NOMAD_JOB_ID": job.get("ID", ""),
        "NOMAD_JOB_NAME": job.get("Name") or job.get("ID", ""),
        "NOMAD_JOB_PARENT_ID": job.get("ParentID") or "",
        "NOMAD_GROUP_NAME": alloc.get("TaskGroup", ""),
        "NOMAD_TASK_NAME": tname,
        "NOMAD_NAMESPACE": alloc.get("Namespace", "default"),
        "NOMAD_REGION": region,
        "NOMAD_DC": node.get("Datacenter", ""),
        "NOMAD_CPU_LIMIT": str((res.get("Cpu") or {}).get("CpuShares", 0)),
        "NOMAD_MEMORY_LIMIT": str((res.get("Memory") or {}).get("MemoryMB", 0)),
    }
    if (res.get("Memory") or {}).get("MemoryMaxMB"):
        env["NOMAD_MEMORY_MAX_LIMIT"] = str(res["Memory"]["MemoryMaxMB"])
    for meta in (job.get("Meta"), tg.get("Meta"), task.get("Meta")):
        for k, v in (meta or {}).items():
            env[f"NOMAD_META_{env_key(k)}"] = str(v)
            env[f"NOMAD_META_{k}"] = str(v)
    for p in ((alloc.get("AllocatedResources") or {}).get("Shared") or {}).get("Ports") or []:
        label, host = env_key(p["Label"]), int(p["Value"])
        to = int(p.get("To") or 0)
        inner = to if to > 0 else host
        ip = p.get("HostIP") or "127.0.0.1"
        env[f"NOMAD_PORT_{label}"] = str(inner)
        env[f"NOMAD_HOST_PORT_{label}"] = str(host)
        env[f"NOMAD_ALLOC_PORT_{label}"] = str(inner)
        env[f"NOMAD_IP_{label}"] = ip
        env[f"NOMAD_HOST_IP_{label}"] = ip
        env[f"NOMAD_ADDR_{label}"] = f"{ip}:{inner}"
        env[f"NOMAD_HOST_ADDR_{label}"] = f"{ip}:{host}"
    gpu_ids = [i for d in res.get("Devices") or [] if d.get("Vendor") == "nvidia" for i in d.get("DeviceIDs") or []]
    if gpu_ids:
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    base = dict(env)
    for k, v in (task.get("Env") or {}).items():
        env[k] = interpolate(str(v), base, node)
    return env


def interpolate(text: str, env: dict[str, str], node: dict[str, Any]) -> str:
    """Fill `${NOMAD_*}`, `${env.X}`, `${attr.x}`, `${node.*}`, `${meta.x}`; unknown stays literal."""

    def one(m: re.Match[str]) -> str:
        key = m.group(1).strip()
        if key in env:
            return env[key]
        if key.startswith("env.") and key[4:] in env:
            return env[key[4:]]
        if key.startswith("attr."):
            v = (node.get("Attributes") or {}).get(key[5:])
            return m.group(0) if v is None else str(v)
        if key.startswith("meta."):
            v = (node.get("Meta") or {}).get(key[5:])
            return m.group(0) if v is None else str(v)
        fixed = {
            "node.unique.id": node.get("ID"),
            "node.unique.name": node.get("Name"),
            "node.datacenter": node.get("Datacenter"),
            "node.class": node.get("NodeClass"),
            "node.pool": node.get("NodePool"),
            "node.region": env.get("NOMAD_REGION"),
        }
        v = fixed.get(key)
        return m.group(0) if v is None else str(v)

    return _VAR.sub(one, text)


_TEMPLATE_ENV = re.compile(r"\{\{\s*env\s+\"([^\"]+)\"\s*\}\}")
_TEMPLATE_ANY = re.compile(r"\{\{.*?\}\}", re.S)


class UnsupportedTemplate(Exception):
    """A consul-template function other than `env` (devcluster renders only `{{ env "X" }}`)."""


def render_template(text: str, env: dict[str, str]) -> str:
    """Render the subset of consul-template devcluster supports: `{{ env "X" }}`."""
    out = _TEMPLATE_ENV.sub(lambda m: env.get(m.group(1), ""), text)
    leftover = _TEMPLATE_ANY.search(out)
    if leftover:
        raise UnsupportedTemplate(f"unsupported template action {leftover.group(0)!r} (devcluster renders "
                                  '{{ env "X" }} only)')
    return out


def signal_number(name: str | None) -> int:
    if not name:
        return signal.SIGTERM
    try:
        return int(getattr(signal, name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()))
    except AttributeError:
        return signal.SIGTERM


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` up to `timeout` s; True if set. (Avoids asyncio.wait_for, whose 3.11
    implementation can swallow a cancellation that races with its own timeout.)"""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=max(0.0, timeout))
    finally:
        waiter.cancel()
    return event.is_set()


async def wait_done(fut: asyncio.Future[Any], timeout: float) -> bool:
    """Wait for `fut` up to `timeout` s without cancelling it; True if it finished."""
    if not fut.done():
        await asyncio.wait({fut}, timeout=max(0.0, timeout))
    return fut.done()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def killpg_quiet(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class TaskProcess:
    """One run of a task's command under its executor (executor.py), in the executor's group.

    `start()`, then `wait()`; `stop()` signals the group. The executor leads the group and
    outlives devcluster, so the task survives a devcluster crash; its stdout/stderr are files in
    the alloc dir, not pipes of ours. Once the executor reported the task's pid, the handle
    (executor pid + start time, task pid + start time) is saved for re-attaching after a restart.
    """

    def __init__(self, command: str, args: list[str], env: dict[str, str], cwd: Path, stdout: Path,
                 stderr: Path, handle_file: Path | None = None, exit_file: Path | None = None,
                 task: str = "") -> None:
        self.command, self.args, self.env, self.cwd = command, args, env, cwd
        self.stdout_path, self.stderr_path = stdout, stderr
        self.handle_file = handle_file or cwd / th.HANDLE_DIR / "task.json"
        self.exit_file = exit_file or self.handle_file.with_name(self.handle_file.stem + ".exit.json")
        self.task = task
        self.proc: asyncio.subprocess.Process | None = None
        self.pgid = 0  # the executor's pid (it runs in a new session)
        self.pid = 0  # the task's own pid
        self.handle: th.TaskHandle | None = None

    async def start(self) -> int:
        """Start executor + task; OSError (e.g. command not found) if the task could not start."""
        self.exit_file.parent.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        out = open(self.stdout_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        err = open(self.stderr_path, "ab")  # noqa: SIM115
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", th.EXECUTOR_SCRIPT, str(write_fd), str(self.exit_file),
                cwd=str(self.cwd), env=self.env, stdin=asyncio.subprocess.PIPE,
                stdout=out, stderr=err, start_new_session=True, pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
            out.close()
            err.close()
        self.pgid = self.proc.pid
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\0".join(os.fsencode(a) for a in [self.command, *self.args]))
        with contextlib.suppress(ConnectionError):
            await self.proc.stdin.drain()
        self.proc.stdin.close()
        report = await asyncio.to_thread(_read_report, read_fd)
        kind, _, rest = report.partition(" ")
        if kind != "ok":
            await self.proc.wait()
            errno_text, _, text = rest.partition(" ")
            if kind == "error" and errno_text.lstrip("-").isdigit():
                raise OSError(int(errno_text), text)
            raise OSError(f"executor failed to start the task ({report or 'no report'})")
        self.pid = int(rest)
        self.handle = th.TaskHandle(self.task, self.pgid, th.start_time(self.pgid) or 0, self.pid,
                                    th.start_time(self.pid) or 0)
        self.handle.save(self.handle_file)
        return self.pid

    def _leader_done(self) -> bool:
        return self.proc is None or self.proc.returncode is not None

    async def _wait_leader(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def wait(self) -> int:
        """Exit code (negative = killed by that signal). Reaps leftovers of the group afterwards."""
        code = await self._wait_leader()
        await self.reap_group(grace_s=0.5)
        return code

    def _signal_group(self, sig: int) -> None:
        if self.handle is not None:
            th.kill_group(self.pgid, self.handle.executor_start, sig)
        elif self.pgid:
            killpg_quiet(self.pgid, sig)

    async def reap_group(self, grace_s: float) -> None:
        """The leader is gone; give the rest of the group `grace_s`, then SIGKILL it."""
        if not self.pgid or not group_alive(self.pgid):
            return
        self._signal_group(signal.SIGTERM)
        deadline = asyncio.get_running_loop().time() + grace_s
        while group_alive(self.pgid) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        self._signal_group(signal.SIGKILL)

    async def stop(self, sig: int, timeout_s: float) -> None:
        """Send `sig` to the group; SIGKILL the group if the leader outlives `timeout_s`."""
        if self._leader_done():
            if self.pgid:
                self._signal_group(signal.SIGKILL)
            return
        self._signal_group(sig)
        waiter = asyncio.ensure_future(self._wait_leader())
        if not await wait_done(waiter, max(0.05, timeout_s)):
            self._signal_group(signal.SIGKILL)
            await wait_done(waiter, 5)
        self._signal_group(signal.SIGKILL)


def _read_report(fd: int) -> str:
    """The executor's one status line (`ok <pid>` / `error <errno> <text>`); "" if it died first."""
    chunks = []
    with os.fdopen(fd, "rb") as fh:
        while True:
            chunk = fh.read1(4096)
            if not chunk:
                break
            chunks.append(chunk)
            if b"\n" in chunk:
                break
    return b"".join(chunks).decode(errors="replace").strip()


class ReattachedProcess(TaskProcess):
    """A task started by an earlier devcluster process, found again through its handle.

    Not our child, so its end is seen through a pidfd on the executor (Linux 5.3+, polling
    /proc otherwise) and its exit status read from the file the executor wrote.
    """

    def __init__(self, handle: th.TaskHandle, exit_file: Path) -> None:
        super().__init__("", [], {}, exit_file.parent, Path(os.devnull), Path(os.devnull), exit_file=exit_file,
                         task=handle.task)
        self.handle = handle
        self.pgid, self.pid = handle.executor_pid, handle.pid
        self._done: asyncio.Future[None] | None = None

    def attach(self) -> bool:
        """Watch the executor; False if it is not the process the handle names (gone or recycled)."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        assert self.handle is not None
        try:
            fd = os.pidfd_open(self.pgid)
        except (AttributeError, OSError):
            if not self.handle.executor_alive():
                return False
            self._done = asyncio.ensure_future(self._poll_gone())  # type: ignore[assignment]
            return True
        if not self.handle.executor_alive():  # checked after opening: the pidfd is the right process
            os.close(fd)
            return False
        done = self._done

        def on_exit() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, on_exit)
        return True

    async def _poll_gone(self) -> None:
        assert self.handle is not None
        while self.handle.executor_alive():
            await asyncio.sleep(0.2)

    def _leader_done(self) -> bool:
        return self._done is None or self._done.done()

    async def _wait_leader(self) -> int:
        assert self._done is not None
        await asyncio.shield(self._done)
        status = th.read_exit(self.exit_file)
        if status is None:  # killed with its executor (SIGKILL to the group): no status written
            return -signal.SIGKILL
        code, sig = status
        return -sig if sig else code
