"""``python -m streams worker`` runs the Faust worker with all four agents."""

from streams.app import app, load_stages

load_stages()
app.main()
