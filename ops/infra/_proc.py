"""Process helpers shared by the local Kafka broker and Redis server (pid files, signals)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
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

    def stop(self, timeout_s: float = 30) -> bool:
        """SIGTERM the process group (the server shuts down cleanly), SIGKILL after
        ``timeout_s`` seconds; remove the pid file.

        Returns:
            True when a running process was stopped, False when none was running.
        """
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        proc = self._proc if self._proc is not None and self._proc.pid == pid else None
        terminate(pid, timeout_s, proc)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
        return True
