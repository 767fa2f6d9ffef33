"""``python -m connectors.webhook``: see :func:`connectors.webhook.server.main`."""

from connectors.webhook.server import main

main()
