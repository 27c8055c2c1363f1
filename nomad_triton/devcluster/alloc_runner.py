"""The client side of one allocation: its task processes, restarts, services, checks and health.

Why one object per allocation: Nomad's client runs an alloc runner per allocation with a task
runner per task; keeping that split makes stop, restart and health tracking local to the alloc
and lets the runtime simply start a runner per placement and ask it to stop.

Every state change is written to the store through `Runtime.patch_alloc`, which derives
ClientStatus the way Nomad's client does (failed > running > pending > complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nomad_triton.devcluster import artifacts
from nomad_triton.devcluster import checks as chk
from nomad_triton.devcluster import driver_raw_exec as drv
from nomad_triton.devcluster import task_handles as th

if TYPE_CHECKING:  # pragma: no cover
    from nomad_triton.devcluster.runtime import Runtime

log = logging.getLogger(__name__)
NS = 1_000_000_000
ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ts: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for the texts Nomad prints ("15s", "500ms", "30m0s")."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    sec = f"{s:.9f}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{int(h)}h{int(m)}m{sec}"
    if m:
        return f"{int(m)}m{sec}"
    return sec


def task_event(kind: str, display: str, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "Type": kind,
        "Time": time.time_ns(),
        "DisplayMessage": display,
        "Message": "",
        "Details": {},
        "FailsTask": False,
        "RestartReason": "",
        "DriverError": "",
        "ExitCode": 0,
        "Signal": 0,
        "KillTimeout": 0,
        "StartDelay": 0,
    }
    ev.update(extra)
    return ev


def terminated_event(code: int) -> dict[str, Any]:
    """Nomad's "Terminated" task event for an exit code (negative = killed by that signal)."""
    sig = -code if code < 0 else 0
    msg = f"Exit Code: {max(code, 0)}" + (f", Signal: {sig}" if sig else "")
    return task_event("Terminated", msg, ExitCode=max(code, 0), Signal=sig)


def new_task_state() -> dict[str, Any]:
    return {"State": "pending", "Failed": False, "Restarts": 0, "LastRestart": ZERO_TIME,
            "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME, "Events": []}


def _log_crash(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error("devcluster: alloc runner crashed", exc_info=task.exception())


class RestartTracker:
    """Nomad's restart policy arithmetic: Attempts within Interval, then Mode fail|delay."""

    def __init__(self, policy: dict[str, Any]) -> None:
        self.attempts = int(policy.get("Attempts") if policy.get("Attempts") is not None else 2)
        self.interval = float(policy.get("Interval") or 30 * 60 * NS) / NS
        self.delay = float(policy.get("Delay") if policy.get("Delay") is not None else 15 * NS) / NS
        self.mode = policy.get("Mode") or "fail"
        self.window_start = 0.0
        self.count = 0

    def next(self, now: float) -> tuple[str, float, str]:
        """("restart", delay, reason) or ("fail", 0, reason)."""
        if now - self.window_start > self.interval or self.window_start == 0.0:
            self.window_start, self.count = now, 0
        self.count += 1
        if self.count <= self.attempts:
            return "restart", self.delay, "Restart within policy"
        why = (f"Exceeded allowed attempts {self.attempts} in interval {go_duration(self.interval)} "
               f'and mode is "{self.mode}"')
        if self.mode == "delay":
            wait = max(self.delay, self.window_start + self.interval - now)
            self.window_start, self.count = 0.0, 0
            return "restart", wait, why
        return "fail", 0.0, why


class TaskRunner:
    """Runs one task until it fails for good or is killed."""

    def __init__(self, ar: AllocRunner, task: dict[str, Any], restore: bool = False) -> None:
        self.ar, self.task, self.name = ar, task, task["Name"]
        self.restore = restore  # pick up the run of an earlier devcluster process first
        self.proc: drv.TaskProcess | None = None
        self.killed = asyncio.Event()
        self.failed = False

    def _patch(self, state: str | None = None, event: dict[str, Any] | None = None, **fields: Any) -> None:
        def fn(alloc: dict[str, Any]) -> None:
            alloc["TaskStates"] = alloc.get("TaskStates") or {}
            ts = alloc["TaskStates"].setdefault(self.name, new_task_state())
            if state:
                ts["State"] = state
            ts.update(fields)
            if event:
                ts["Events"] = (ts.get("Events") or []) + [event]
                ts["Events"] = ts["Events"][-10:]

        self.ar.rt.patch_alloc(self.ar.alloc_id, fn)

    def _fail(self, event: dict[str, Any]) -> None:
        self.failed = True
        self._patch("dead", event, Failed=True, FinishedAt=rfc3339())

    async def run(self) -> None:
        """Run the task; an unexpected error fails the task visibly instead of leaving it pending."""
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - surfaced as a task event
            logging.getLogger(__name__).exception("devcluster: task runner failed")
            if self.proc is not None:
                await self.proc.stop(9, 0.1)
            self._fail(task_event("Driver Failure", f"devcluster task runner error: {exc}", FailsTask=True,
                                  DriverError=str(exc)))

    async def _run(self) -> None:
        ar = self.ar
        alloc = ar.alloc()
        task = self.task
        env = drv.build_env(alloc=alloc, task=task, node=ar.node, alloc_dir=ar.dir, region=ar.rt.region)
        # artifacts are fetched once, before the first start: a task picked up after a devcluster
        # restart already has them (and may be reading them)
        started_before = self.restore and self._state().get("State") in ("running", "dead")
        if task.get("Artifacts") and not started_before and not await self._artifacts(env):
            return
        try:
            for tmpl in task.get("Templates") or []:
                if tmpl.get("SourcePath"):
                    raise drv.UnsupportedTemplate("template source files are not supported (use data)")
                dest = ar.dir / self.name / str(tmpl.get("DestPath") or "local/template.out")
                dest.parent.mkdir(parents=True, exist_ok=True)
                text = drv.render_template(str(tmpl.get("EmbeddedTmpl") or ""), env)
                dest.write_text(text)
                with contextlib.suppress(ValueError, TypeError):
                    dest.chmod(int(str(tmpl.get("Perms") or "0644"), 8))
                if tmpl.get("Envvars"):  # `env = true`: KEY=VALUE lines join the task env
                    for line in text.splitlines():
                        key, sep, value = line.partition("=")
                        if sep and key.strip() and not key.lstrip().startswith("#"):
                            env[key.strip()] = value.strip()
        except (drv.UnsupportedTemplate, OSError) as exc:
            self._fail(task_event("Template", f"Template failed: {exc}", FailsTask=True))
            return
        cfg = task.get("Config") or {}
        command = drv.interpolate(str(cfg.get("command") or ""), env, ar.node)
        args = [drv.interpolate(str(a), env, ar.node) for a in cfg.get("args") or []]
        tracker = RestartTracker(task.get("RestartPolicy") or ar.tg.get("RestartPolicy") or {})
        logs = ar.dir / "alloc" / "logs"
        handle_file, exit_file = th.handle_paths(ar.dir, self.name)
        restarts = int(self._state().get("Restarts") or 0)
        exit_code: int | None = None
        seed = self._restore(handle_file, exit_file) if self.restore else None
        if seed == "dead":
            return
        while seed is not None or not self.killed.is_set():
            exit_code = None
            if isinstance(seed, int):  # the task ended while devcluster was down (event recorded)
                exit_code, seed = seed, None
            else:
                if isinstance(seed, drv.TaskProcess):
                    self.proc, seed = seed, None
                else:
                    self.proc = drv.TaskProcess(command, args, env, ar.dir / self.name,
                                                logs / f"{self.name}.stdout.0", logs / f"{self.name}.stderr.0",
                                                handle_file, exit_file, self.name)
                    try:
                        if not command:
                            raise OSError("missing command in raw_exec config")
                        await self.proc.start()
                    except OSError as exc:
                        self.proc = None
                        self._patch("pending", task_event("Driver Failure",
                                                          f"failed to launch command with executor: {exc}",
                                                          DriverError=str(exc)))
                    else:
                        self._patch("running", task_event("Started", "Task started by client"), StartedAt=rfc3339())
                if self.proc is not None:
                    waiter = asyncio.ensure_future(self.proc.wait())
                    killer = asyncio.ensure_future(self.killed.wait())
                    await asyncio.wait({waiter, killer}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiter.done():
                        killer.cancel()
                        await self._kill(waiter)
                        if not self.ar.rt.closing:  # devcluster going down: the next start reads the exit
                            handle_file.unlink(missing_ok=True)
                        return
                    killer.cancel()
                    exit_code = waiter.result()
                    self._patch(None, terminated_event(exit_code))
                    handle_file.unlink(missing_ok=True)  # the run is over and recorded
            if self.killed.is_set():
                self._patch("dead", task_event("Killed", "Task successfully killed"), FinishedAt=rfc3339())
                return
            if exit_code == 0 and (alloc.get("Job") or {}).get("Type") in ("batch", "sysbatch"):
                self._patch("dead", None, FinishedAt=rfc3339())  # batch work done: not restarted
                return
            verdict, delay, why = tracker.next(time.time())
            if verdict == "fail":
                self._fail(task_event("Not Restarting", why, FailsTask=True, RestartReason=why))
                return
            restarts += 1
            self._patch("pending", task_event("Restarting", f"Task restarting in {go_duration(delay)}",
                                              RestartReason=why, StartDelay=int(delay * NS)),
                        Restarts=restarts, LastRestart=rfc3339())
            await drv.wait_event(self.killed, delay)
        self._patch("dead", task_event("Killed", "Task successfully killed"), FinishedAt=rfc3339())

    async def _artifacts(self, env: dict[str, str]) -> bool:
        """Fetch the task's artifacts before it starts (artifacts.py); a failed download is retried
        under the restart policy like any other prestart failure, then fails the task."""
        tracker = RestartTracker(self.task.get("RestartPolicy") or self.ar.tg.get("RestartPolicy") or {})
        restarts = 0
        while not self.killed.is_set():
            self._patch(None, task_event("Downloading Artifacts", "Client is downloading artifacts"))
            try:
                await asyncio.to_thread(artifacts.fetch_all, self.task["Artifacts"], self.ar.dir / self.name,
                                        self.ar.dir, lambda text: drv.interpolate(text, env, self.ar.node))
                return True
            except (artifacts.ArtifactError, OSError) as exc:
                self._patch(None, task_event("Failed Artifact Download", f"Failed to download artifacts: {exc}",
                                             DownloadError=str(exc)))
            verdict, delay, why = tracker.next(time.time())
            if verdict == "fail":
                self._fail(task_event("Not Restarting", why, FailsTask=True, RestartReason=why))
                return False
            restarts += 1
            self._patch("pending", task_event("Restarting", f"Task restarting in {go_duration(delay)}",
                                              RestartReason=why, StartDelay=int(delay * NS)),
                        Restarts=restarts, LastRestart=rfc3339())
            await drv.wait_event(self.killed, delay)
        return False

    def _state(self) -> dict[str, Any]:
        return (self.ar.alloc().get("TaskStates") or {}).get(self.name) or {}

    def _restore(self, handle_file: Path, exit_file: Path) -> drv.TaskProcess | int | str | None:
        """Pick up this task after a devcluster restart (the recovery rules in devcluster-runtime.md).

        Returns "dead" (finished before: nothing to do), a re-attached process, the exit code of
        a run that ended while devcluster was down (its Terminated event is recorded here), or
        None (never started: start it).
        """
        state = self._state()
        if state.get("State") == "dead":
            return "dead"
        handle = th.load_handle(handle_file)
        if handle is not None and handle.executor_alive():
            proc = drv.ReattachedProcess(handle, exit_file)
            if proc.attach():
                log.info("devcluster: re-attached to task %s of alloc %s (pid %d)", self.name, self.ar.alloc_id,
                         handle.pid)
                if state.get("State") != "running":  # it started, but that was not recorded yet
                    self._patch("running", task_event("Started", "Task started by client"), StartedAt=rfc3339())
                return proc
        if handle is None:
            if state.get("State") != "running":
                return None  # never started (or its executor was stopped before it reported)
            self._patch(None, task_event("Terminated", "Task's process was not found after devcluster restarted",
                                         ExitCode=0, Signal=int(signal.SIGKILL)))
            return -int(signal.SIGKILL)
        th.kill_group(handle.pgid, handle.executor_start)  # leftovers of a task whose executor is gone
        status = th.read_exit(exit_file)
        code = (-status[1] if status[1] else status[0]) if status is not None else -int(signal.SIGKILL)
        event = terminated_event(code)
        if status is None:
            event["DisplayMessage"] = "Task's executor ended while devcluster was down (exit status unknown)"
        self._patch(None, event)
        handle_file.unlink(missing_ok=True)
        return code

    async def _kill(self, waiter: asyncio.Future[int]) -> None:
        timeout = float(self.task.get("KillTimeout") or 5 * NS) / NS
        self._patch(None, task_event("Killing", f"Sent interrupt. Waiting {go_duration(timeout)} before force killing",
                                     KillTimeout=int(timeout * NS)))
        assert self.proc is not None
        await self.proc.stop(drv.signal_number(self.task.get("KillSignal")), timeout)
        await drv.wait_done(waiter, 5)
        self._patch("dead", task_event("Killed", "Task successfully killed"), FinishedAt=rfc3339())


class AllocRunner:
    """Runs one allocation: tasks, service registrations, checks and deployment health."""

    def __init__(self, rt: Runtime, alloc_id: str, restore: bool = False) -> None:
        self.rt, self.alloc_id = rt, alloc_id
        self.restore = restore  # an allocation of an earlier devcluster process: re-attach first
        a = self.alloc()
        self.node = rt.store.get("nodes", a["NodeID"]) or {"ID": a["NodeID"], "Name": a.get("NodeName", "")}
        self.dir: Path = rt.state_dir / "allocs" / alloc_id
        self.tasks: list[TaskRunner] = []
        self.checks: list[chk.CheckState] = []
        self._bg: list[asyncio.Task[Any]] = []
        self._health: asyncio.Task[Any] | None = None
        self.main: asyncio.Task[Any] | None = None
        self.stopping = False
        self._watchers: list[asyncio.Event] = []

    @property
    def tg(self) -> dict[str, Any]:
        a = self.alloc()
        return next(g for g in (a.get("Job") or {}).get("TaskGroups") or [] if g["Name"] == a["TaskGroup"])

    def alloc(self) -> dict[str, Any]:
        return self.rt.store.get("allocs", self.alloc_id) or {}

    def start(self) -> None:
        self.main = asyncio.ensure_future(self._run())
        self.main.add_done_callback(_log_crash)

    def stop(self) -> None:
        """Ask every task to stop (kill signal, then SIGKILL after KillTimeout)."""
        self.stopping = True
        for t in self.tasks:
            t.killed.set()

    async def wait(self) -> None:
        if self.main is not None:
            await asyncio.wait({self.main})

    async def _run(self) -> None:
        tg = self.tg
        for sub in ("alloc/logs", "alloc/data", "alloc/tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for t in tg.get("Tasks") or []:
            (self.dir / t["Name"] / "local").mkdir(parents=True, exist_ok=True)
            (self.dir / t["Name"] / "secrets").mkdir(parents=True, exist_ok=True)

        def init(alloc: dict[str, Any]) -> None:
            states = alloc["TaskStates"] = alloc.get("TaskStates") or {}
            for t in tg.get("Tasks") or []:
                st = states.setdefault(t["Name"], new_task_state())
                st["Events"] = [task_event("Received", "Task received by client"),
                                task_event("Task Setup", "Building Task Directory",
                                           Message="Building Task Directory")]

        restoring = self.restore and bool(self.alloc().get("TaskStates"))
        if not restoring:
            self.rt.patch_alloc(self.alloc_id, init)
        self.tasks = [TaskRunner(self, t, restore=restoring) for t in tg.get("Tasks") or []]
        if self.stopping:
            for t in self.tasks:
                t.killed.set()
        runs = [asyncio.ensure_future(t.run()) for t in self.tasks]
        self._start_services_and_checks(tg)
        self.restart_health()
        try:
            pending = set(runs)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(t.failed for t in self.tasks):
                    for t in self.tasks:  # a failed task fails the alloc: stop its siblings
                        t.killed.set()
        finally:
            for t in runs:
                if not t.done():
                    t.cancel()
            self._stop_background()
            self.rt.deregister_services(self.alloc_id)
        self.rt.on_runner_done(self.alloc_id)

    # ---- services and checks -----------------------------------------------------------------
    def _port_value(self, label: Any) -> int:
        ports = ((self.alloc().get("AllocatedResources") or {}).get("Shared") or {}).get("Ports") or []
        for p in ports:
            if p["Label"] == label:
                return int(p["Value"])
        try:
            return int(label)
        except (TypeError, ValueError):
            return 0

    def _start_services_and_checks(self, tg: dict[str, Any]) -> None:
        services: list[tuple[dict[str, Any], str]] = [(s, "") for s in tg.get("Services") or []]
        for t in tg.get("Tasks") or []:
            services += [(s, t["Name"]) for s in t.get("Services") or []]
        regs = []
        for svc, task in services:
            port = self._port_value(svc.get("PortLabel"))
            regs.append((svc, task, port))
            for i, c in enumerate(svc.get("Checks") or []):
                cport = self._port_value(c.get("PortLabel")) if c.get("PortLabel") else port
                state = chk.CheckState(id=f"{self.alloc_id[:8]}-{svc.get('Name')}-{i}", check=c,
                                       service=svc.get("Name", ""), group=f"{self.alloc()['JobID']}.{tg['Name']}",
                                       task=task, port=cport, on_change=self.notify)
                self.checks.append(state)
                self._bg.append(asyncio.ensure_future(chk.run_forever(state, self.rt.http)))
        if regs:
            self._bg.append(asyncio.ensure_future(self._register_when_running(regs)))

    async def _register_when_running(self, regs: list[tuple[dict[str, Any], str, int]]) -> None:
        """Keep the alloc's services registered exactly while all its tasks run (Nomad registers
        after task start and deregisters while a task is down, e.g. between restarts)."""
        changed = self.watch()
        registered = False
        while True:
            changed.clear()
            alloc = self.alloc()
            states = list((alloc.get("TaskStates") or {}).values())
            up = bool(states) and all(s.get("State") == "running" for s in states) \
                and alloc.get("DesiredStatus") == "run"
            if up and not registered:
                self.rt.register_services(self.alloc_id, regs)
            elif registered and not up:
                self.rt.deregister_services(self.alloc_id)
            registered = up
            await drv.wait_event(changed, 5.0)

    def watch(self) -> asyncio.Event:
        """An event set on every write to this alloc and every check status change."""
        ev = asyncio.Event()
        self._watchers.append(ev)
        return ev

    def close(self) -> None:
        """Cancel what outlives the tasks (the health tracker); used by Runtime.shutdown."""
        self._stop_background()
        if self._health is not None:
            self._health.cancel()

    def notify(self) -> None:
        for ev in self._watchers:
            ev.set()

    def _stop_background(self) -> None:
        """Stop checks and registration; the health tracker ends by itself on a terminal alloc
        (a task that failed fast must still be reported unhealthy)."""
        for t in self._bg:
            t.cancel()

    # ---- deployment health -------------------------------------------------------------------
    def restart_health(self) -> None:
        """(Re)start health tracking for the alloc's current DeploymentID (e.g. after in-place update)."""
        if self._health is not None:
            self._health.cancel()
            self._health = None
        alloc = self.alloc()
        if alloc.get("DeploymentID") and (alloc.get("DeploymentStatus") or {}).get("Healthy") is None:
            self._health = asyncio.ensure_future(self._track_health(alloc["DeploymentID"]))

    async def _track_health(self, dep_id: str) -> None:
        """Nomad's client health watcher: healthy once tasks (and checks, in "checks" mode) have
        been good continuously for MinHealthyTime; unhealthy on a failed task or at
        HealthyDeadline. Woken by alloc writes and check changes, not by polling."""
        update = self.tg.get("Update") or {}
        mode = update.get("HealthCheck") or "checks"
        if mode == "manual":
            return
        min_healthy = float(update.get("MinHealthyTime") or 10 * NS) / NS
        deadline = float(update.get("HealthyDeadline") or 5 * 60 * NS) / NS
        changed = self.watch()
        start = time.monotonic()
        since: float | None = None
        last_restarts = -1
        while True:
            changed.clear()
            alloc = self.alloc()
            if alloc.get("DeploymentID") != dep_id or (alloc.get("DeploymentStatus") or {}).get("Healthy") is not None:
                return
            states = list((alloc.get("TaskStates") or {}).values())
            if any(s.get("Failed") for s in states) or alloc.get("ClientStatus") == "failed":
                self.rt.set_alloc_health(self.alloc_id, dep_id, False)
                return
            if alloc.get("DesiredStatus") != "run" or alloc.get("ClientStatus") in ("complete", "lost"):
                return  # stopped before a verdict: Nomad leaves Healthy unset
            restarts = sum(int(s.get("Restarts") or 0) for s in states)
            running = bool(states) and all(s.get("State") == "running" for s in states)
            checks_ok = mode != "checks" or all(c.status == "success" for c in self.checks
                                                if c.check.get("OnUpdate") != "ignore")
            now = time.monotonic()
            good = running and checks_ok
            if good and restarts == last_restarts and since is not None:
                if now - since >= min_healthy:
                    self.rt.set_alloc_health(self.alloc_id, dep_id, True)
                    return
            else:
                since = now if good else None
            last_restarts = restarts
            if now - start >= deadline:
                self.rt.set_alloc_health(self.alloc_id, dep_id, False)
                return
            wake = deadline - (now - start)
            if since is not None:
                wake = min(wake, min_healthy - (now - since))
            await drv.wait_event(changed, max(0.005, wake))

    def check_results(self) -> dict[str, Any]:
        return {c.id: c.to_api() for c in self.checks}
