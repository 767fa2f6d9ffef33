"""``python -m streams worker`` runs the Faust worker: the normalise and enrich agents and the
click path service (streams/worker.py)."""

from streams.worker import main

main()
