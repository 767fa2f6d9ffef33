"""``python -m connectors.collector``: see :func:`connectors.collector.server.main`."""

from connectors.collector.server import main

main()
