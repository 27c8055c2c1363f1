"""The raw_exec executor: a tiny parent for one task process that outlives devcluster.

Why it exists (Nomad's client does the same with its executor process): only a process's parent
can learn its exit status. If devcluster itself were the parent, a task that exits while
devcluster is down (crashed, restarting) would leave no trace of how it ended. The executor is
started by devcluster in a new session (so it leads the task's process group), reads the task's
command line from stdin, starts the task,
reports `ok <pid>` or `error <errno> <text>` on a status pipe, waits for the task and writes its
exit status to a file in the alloc dir before exiting the same way the task did.

It ignores the stop signals devcluster sends to the whole group (the task itself gets them) and
dies with SIGKILL like every member of the group. Run as a plain script with `python -I -S`: it
imports nothing from this package, so it starts in milliseconds.
"""

from __future__ import annotations

# `_signal`, not `signal`: the wrapper module imports enum, which would double our start-up time.
import _signal
import os
import sys
import time

FORWARDED_BY_GROUP = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP, _signal.SIGQUIT, _signal.SIGUSR1,
                      _signal.SIGUSR2)


def _ignore(signum: int, frame: object) -> None:
    """The task got the same signal through the process group; the executor waits for it."""


def _write_exit(path: str, pid: int, code: int) -> None:
    """JSON written by hand (no json/re import); atomic through rename."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(f'{{"Pid": {pid}, "ExitCode": {max(code, 0)}, "Signal": {-code if code < 0 else 0}, '
                 f'"FinishedAt": {time.time()}}}')
    os.replace(tmp, path)


def _spawn(command: list[str], status_fd: int) -> int:
    """fork + exec the task; an exec failure comes back through a close-on-exec pipe as OSError."""
    err_r, err_w = os.pipe()  # non-inheritable: closed by a successful exec
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            os.close(status_fd)
            for sig in (*FORWARDED_BY_GROUP, _signal.SIGPIPE, _signal.SIGXFSZ):
                _signal.signal(sig, _signal.SIG_DFL)  # Python ignores SIGPIPE/SIGXFSZ; the task must not
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(err_w, f"{exc.errno or 0} {exc.strerror or exc}: {command[0]!r}".encode())
        finally:
            os._exit(127)
    os.close(err_w)
    with os.fdopen(err_r, "rb") as fh:
        failure = fh.read()
    if failure:
        os.waitpid(pid, 0)
        errno_text, _, text = failure.decode(errors="replace").partition(" ")
        raise OSError(int(errno_text), text)
    return pid


def _read_command() -> list[str]:
    """The task's argv, NUL-separated on stdin (kept off our own command line, so looking for the
    task by its command line never finds the executor); stdin is /dev/null for the task."""
    chunks = []
    while chunk := os.read(0, 65536):
        chunks.append(chunk)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return [os.fsdecode(a) for a in b"".join(chunks).split(b"\0")]


def main(argv: list[str]) -> int:
    # argv: <status fd> <exit file>; stdin: command and args, NUL-separated
    status_fd, exit_file = int(argv[0]), argv[1]
    command = _read_command()
    for sig in FORWARDED_BY_GROUP:  # a Python handler resets to the default in the exec'd task
        _signal.signal(sig, _ignore)
    try:
        os.unlink(exit_file)
    except FileNotFoundError:
        pass
    try:
        pid = _spawn(command, status_fd)
    except OSError as exc:
        os.write(status_fd, f"error {exc.errno or 0} {exc.strerror or exc}\n".encode())
        return 127
    os.write(status_fd, f"ok {pid}\n".encode())
    os.close(status_fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    try:
        _write_exit(exit_file, pid, code)
    except OSError:  # alloc dir gone (garbage-collected): nobody will ask
        pass
    if code < 0:  # die of the same signal so devcluster (if it is our parent) sees the same status
        _signal.signal(-code, _signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
