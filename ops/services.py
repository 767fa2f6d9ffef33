"""The pipeline's own processes (Faust worker, read endpoint, event collector), started detached
with pid files.

Used by ``feedpipe up|down`` and by the end-to-end tests. Logs go to ``<state>/logs/``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from feedpipe.settings import ROOT, Settings
from ops.infra._proc import http_answers, pid_alive, spawn, tail, terminate, wait_ready


@dataclass(frozen=True)
class Service:
    """A feedpipe process: name, argv, and the URL that answers when it is ready."""

    name: str
    args: list[str]
    ready_url: str

    def pid_file(self, state_dir: Path) -> Path:
        """Where the pid is written."""
        return state_dir / "run" / f"{self.name}.pid"

    def log_file(self, state_dir: Path) -> Path:
        """Where stdout and stderr go."""
        return state_dir / "logs" / f"{self.name}.log"


def worker_service(s: Settings) -> Service:
    """The Faust worker (the normalise and enrich agents and the click path), ready when its web
    server answers."""
    return Service(
        "worker",
        [
            sys.executable,
            "-m",
            "streams",
            "worker",
            "-l",
            s.log_level,
            "--web-port",
            str(s.worker_web_port),
            "--web-host",
            s.worker_web_host,
        ],
        f"http://127.0.0.1:{s.worker_web_port}/",
    )


def api_service(s: Settings) -> Service:
    """The read endpoint, ready when /healthz answers."""
    return Service(
        "api", [sys.executable, "-m", "readapi"], f"http://{s.api_host}:{s.api_port}/healthz"
    )


def collector_service(s: Settings) -> Service:
    """The event collector (``python -m connectors.collector``), ready when /healthz answers.

    Without FEEDPIPE_COLLECTOR_CORS_ORIGINS it allows the read endpoint's origin, so the /demo
    page served there can post events."""
    args = [sys.executable, "-m", "connectors.collector"]
    if not s.collector_cors_origins:
        args += ["--cors-origins", f"http://{_local(s.api_host)}:{s.api_port}"]
    return Service(
        "collector", args, f"http://{_local(s.collector_host)}:{s.collector_port}/healthz"
    )


def _local(host: str) -> str:
    """``host``, or 127.0.0.1 for a wildcard bind (what a local client connects to)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _pid(svc: Service, state_dir: Path) -> int | None:
    try:
        pid = int(svc.pid_file(state_dir).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def running(svc: Service, s: Settings) -> bool:
    """True when ``svc``'s pid file names a live process."""
    return _pid(svc, s.state_dir) is not None


def start(svc: Service, s: Settings, timeout_s: float = 90.0) -> int:
    """Start ``svc`` unless running; wait until its ready URL answers; return its pid.

    Raises:
        InfraError: the process exited or did not answer within ``timeout_s`` seconds
            (the message ends with the tail of its log).
    """
    state = s.state_dir
    pid = _pid(svc, state)
    if pid is None:
        svc.pid_file(state).parent.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        proc = spawn(svc.args, ROOT, svc.log_file(state), svc.pid_file(state))
        pid = proc.pid
    started = pid

    def failed(why: str) -> str:
        what = "exited" if why == "exited" else f"not ready after {timeout_s:.0f} s"
        return f"{svc.name} {what}; log tail:\n{tail(svc.log_file(state))}"

    wait_ready(
        lambda: http_answers(svc.ready_url),
        timeout_s,
        exited=lambda: not pid_alive(started),
        failed=failed,
    )
    return pid


def stop(svc: Service, s: Settings, timeout_s: float = 20.0) -> bool:
    """SIGTERM ``svc`` (SIGKILL after ``timeout_s`` s); True if it was running."""
    pid = _pid(svc, s.state_dir)
    if pid is None:
        return False
    terminate(pid, timeout_s)
    svc.pid_file(s.state_dir).unlink(missing_ok=True)
    return True
