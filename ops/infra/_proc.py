"""Process helpers shared by the local Kafka broker, the Redis server and the pipeline's own
services (pid files, signals, waiting until a started process serves)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from feedpipe.errors import FeedpipeError


class InfraError(FeedpipeError):
    """A local service could not be fetched, started or stopped; the message says why and what
    to do (e.g. which package to install, which log file to read)."""


def pid_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (Linux: reads /proc/<pid>/stat)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (not Linux): trust kill(0)
    # Field 3 is the state; the command name (field 2) is in parentheses and may hold spaces.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in {"Z", "X"}


def cmdline(pid: int) -> str:
    """The process's command line joined with spaces, or '' when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def read_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` when that process is alive and its command line contains
    ``marker`` or cannot be read (guards against pid reuse); else None (a stale pid file is
    removed)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid):
        line = cmdline(pid)
        # '' = not readable (yet): a process between fork and exec, or no /proc; not a reuse
        if marker in line or not line:
            return pid
    pid_file.unlink(missing_ok=True)
    return None


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds within ``timeout_s`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when a GET of ``url`` gets any answer below 500 within ``timeout_s`` seconds."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout_s).status_code < 500
    except httpx.HTTPError:
        return False


def spawn(args: list[str], cwd: Path, log_file: Path, pid_file: Path) -> subprocess.Popen[bytes]:
    """Start ``args`` detached in its own session (process group), stdout+stderr appended to
    ``log_file``, and write its pid to ``pid_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def terminate(pid: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """SIGTERM the process group of ``pid``, wait up to ``timeout_s`` seconds, then SIGKILL.

    Returns True when SIGTERM sufficed, False when SIGKILL was needed.
    """

    def gone() -> bool:
        if proc is not None:
            return proc.poll() is not None
        return not pid_alive(pid)

    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if gone():
            return True
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not gone():
        time.sleep(0.1)
    return False


def wait_ready(
    ready: Callable[[], bool],
    timeout_s: float,
    *,
    exited: Callable[[], bool] = lambda: False,
    failed: Callable[[str], str],
    interval_s: float = 0.3,
) -> None:
    """Poll ``ready()`` every ``interval_s`` seconds until it is True.

    Args:
        ready: True once the process serves (a PING, a metadata request, an HTTP answer).
        timeout_s: seconds to wait.
        exited: True once the process is gone (checked after each failed ``ready()``).
        failed: the error message for ``"exited"`` or ``"timeout"`` (the caller adds what it
            knows: pid, address, log tail).

    Raises:
        InfraError: ``failed("exited")`` as soon as ``exited()``; ``failed("timeout")`` after
            ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not ready():
        if exited():
            raise InfraError(failed("exited"))
        if time.monotonic() > deadline:
            raise InfraError(failed("timeout"))
        time.sleep(interval_s)


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' when missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ManagedProcess:
    """A local server process started with :func:`spawn` and tracked by a pid file.

    Subclasses set ``pid_file`` and ``_proc`` and implement :meth:`pid`; :meth:`stop` is shared.
    """

    pid_file: Path
    _proc: subprocess.Popen[bytes] | None

    def pid(self) -> int | None:
        """Pid of the running process (from the pid file), or None."""
        raise NotImplementedError

    def await_serving(
        self,
        pid: int,
        ready: Callable[[], bool],
        timeout_s: float,
        what: str,
        logs: Sequence[Path],
        interval_s: float = 0.1,
    ) -> None:
        """Wait (:func:`wait_ready`) until ``ready()`` once ``pid`` was spawned.

        The process counts as exited when it is this object's child and the kernel reports
        it gone (``Popen.poll``, which also gives its exit status), else when the pid file no
        longer names a live process.

        Raises:
            InfraError: ``what (pid N) exited during start-up (exit status S)`` or ``did not
                answer within T s``, followed by the tails of ``logs`` (30 lines of the first,
                10 of the others). A pid file of an exited process is removed.
        """
        own = self._proc if self._proc is not None and self._proc.pid == pid else None

        def exited() -> bool:
            return own.poll() is not None if own is not None else self.pid() is None

        def failed(why: str) -> str:
            lines = "\n".join(tail(f, 30 if i == 0 else 10) for i, f in enumerate(logs))
            lines_of = f"last log lines of {logs[0]}:\n{lines}"
            if why == "timeout":
                return f"{what} (pid {pid}) did not answer within {timeout_s:.0f} s; {lines_of}"
            self.pid_file.unlink(missing_ok=True)
            status = own.returncode if own is not None else "unknown"
            return f"{what} (pid {pid}) exited during start-up (exit status {status}); {lines_of}"

        wait_ready(ready, timeout_s, exited=exited, failed=failed, interval_s=interval_s)

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM the process group (the server shuts down cleanly), SIGKILL after
        ``timeout_s`` seconds; remove the pid file.

        Returns:
            True when a running process was stopped, False when none was running.
        """
        return stop_all([self], timeout_s)


def stop_all(procs: Sequence[ManagedProcess], timeout_s: float = 30) -> bool:
    """Stop several processes together: SIGTERM to every running one first, then wait for each
    (SIGKILL after ``timeout_s`` seconds), so none waits on a peer that already left (a KRaft
    controller quorum, a Redis Cluster); every pid file is removed. True when one was running."""
    running = [(p, pid) for p, pid in ((p, p.pid()) for p in procs) if pid is not None]
    for _, pid in running:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    for p, pid in running:
        own = p._proc if p._proc is not None and p._proc.pid == pid else None
        terminate(pid, timeout_s, own)
        p._proc = None
    for p in procs:
        p.pid_file.unlink(missing_ok=True)
    return bool(running)
