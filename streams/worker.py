"""The worker: the Faust app with every stage of topology.yaml ``stages`` registered.

Importing a stage module registers it on :data:`streams.app.app` (the agents with
``@app.agent``, the click path's service with ``@app.service``); :func:`load_stages` imports
each ``stages.<name>.module`` of topology.yaml, so the YAML names what runs. Run with
``feedpipe worker`` or ``python -m streams worker -l info``.
"""

from __future__ import annotations

import importlib

import faust

from feedpipe.topology import topology
from streams.app import app


def load_stages() -> faust.App:
    """Import every stage module of topology.yaml so its agent or service registers on the app;
    return the app."""
    for spec in topology().stages.values():
        importlib.import_module(spec.module)
    return app


def main() -> None:
    """Run the worker (Faust's command line: ``worker -l info`` ...)."""
    load_stages().main()
