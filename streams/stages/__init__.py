"""The worker's two Faust agents: :mod:`streams.stages.normalise` (cms.raw ->
content.normalised) and :mod:`streams.stages.enrich` (content.normalised -> content.enriched and
Redis). Each registers its agent on :data:`streams.app.app` when imported (streams/worker.py
imports them from topology.yaml ``stages``)."""
