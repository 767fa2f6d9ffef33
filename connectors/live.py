"""Run everything ``connectors.yaml`` declares: pollers, the webhook receiver, CDC consumers.

Each kind runs in its own thread and a failure in one never blocks the others; this is what
``feedpipe connect`` calls.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Connector, ConnectorMetrics
from connectors.config import ConnectorsConfig
from connectors.runner import run_sources

log = logging.getLogger("feedpipe.connectors")


@dataclass
class LiveRun:
    """Handles of a running set of connectors (see :func:`start_all`)."""

    threads: list[threading.Thread] = field(default_factory=list)
    connectors: list[Connector] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def join(self, timeout_s: float = 60.0) -> None:
        """Wait for every thread (each bounded by ``timeout_s`` seconds)."""
        for t in self.threads:
            t.join(timeout_s)


def start_all(
    config: ConnectorsConfig,
    names: list[str] | None,
    bootstrap: str,
    stop: threading.Event,
    *,
    once: bool = False,
) -> LiveRun:
    """Start the selected sources (all when ``names`` is None) in background threads.

    Pollers run via :func:`connectors.runner.run_sources` (``once`` polls each once); the webhook
    receiver serves all selected push sources on ``config.webhooks.host:port``; each CDC source
    consumes its Debezium topic. Setting ``stop`` stops them all.

    Raises:
        feedpipe.errors.ConfigError: an unknown name, or a secret variable that is unset.
    """
    from connectors.cdc.connector import CdcConnector
    from connectors.webhook.server import WebhookConnector
    from connectors.webhook.sources import WebhookSource
    from feedpipe.errors import ConfigError

    wanted = set(names) if names is not None else set(config.names())
    unknown = wanted - set(config.names())
    if unknown:
        raise ConfigError(f"unknown sources {sorted(unknown)}; known: {config.names()}")
    run = LiveRun()

    def spawn(name: str, target: Callable[[], Any]) -> None:
        def body() -> None:
            try:
                run.metrics[name] = target()
            except BaseException as exc:  # reported, never silent; other sources keep going
                log.exception("connector %s failed", name)
                run.errors[name] = exc

        t = threading.Thread(target=body, name=f"connector-{name}", daemon=True)
        t.start()
        run.threads.append(t)

    pollers = [s for s in config.sources if s.name in wanted]
    if pollers:
        spawn("pollers", lambda: run_sources(pollers, bootstrap, stop, once=once))
    hooks = {
        w.name: WebhookSource(
            w.name, w.kind, w.brand, w.secret_env, w.tolerance_s, w.max_body_bytes
        )
        for w in config.webhooks.sources
        if w.name in wanted
    }
    if hooks and not once:
        for h in hooks.values():
            h.secret()  # fail now, not at the first request, when a secret is unset
        wh = WebhookConnector(
            hooks,
            host=config.webhooks.host,
            port=config.webhooks.port,
            ack_timeout_s=config.webhooks.ack_timeout_s,
            bootstrap=bootstrap,
            workers=config.webhooks.workers,
        )
        run.connectors.append(wh)
        spawn("webhooks", _run_then_close(wh))
    for c in config.cdc:
        if c.name in wanted:
            cdc = CdcConnector(
                c.name,
                c.brand,
                topic=c.topic,
                post_types=c.post_types,
                bootstrap=bootstrap,
                idle_exit_s=5.0 if once else None,
            )
            run.connectors.append(cdc)
            spawn(c.name, _run_then_close(cdc))

    def stopper() -> None:
        stop.wait()
        for conn in run.connectors:
            conn.request_stop()  # each run() returns, then its own thread closes the producer

    threading.Thread(target=stopper, name="connector-stopper", daemon=True).start()
    return run


def _run_then_close(conn: Connector) -> Callable[[], Any]:
    """``conn.run()`` then ``conn.stop()`` (flush and close) in the same thread."""

    def go() -> Any:
        try:
            return conn.run()
        finally:
            conn.stop()

    return go


def summary(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flatten run metrics (per-poller dicts and connector metrics) to name -> dict."""
    out: dict[str, dict[str, Any]] = {}
    for name, m in metrics.items():
        if isinstance(m, dict):
            for sub, mm in m.items():
                out[sub] = mm.as_dict() if isinstance(mm, ConnectorMetrics) else dict(mm)
        elif isinstance(m, ConnectorMetrics):
            out[name] = m.as_dict()
    return out
