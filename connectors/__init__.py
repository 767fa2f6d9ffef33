"""Connectors: publish CMS content and reader events to Kafka.

Every connector subclasses :class:`connectors.base.Connector` and publishes through
:class:`feedpipe.kafka.producer.IdempotentProducer` (idempotent, ``acks=all``, Java-compatible
``murmur2_random`` partitioner) to the ingest topics of ``topology.yaml`` (``ingest.cms``,
``ingest.reader_events``). The CMS rules (which status is an upsert or a delete, how a response
splits into items) are :mod:`feedpipe.cms`, shared with the normalisers. Sources: file replay
(:mod:`connectors.replay`), pollers (:mod:`connectors.runner`), the webhook receiver
(:mod:`connectors.webhook`) and CDC (:mod:`connectors.cdc`); docs/connectors.md maps the
modules. Connectors never import ``streams``.
"""

from connectors.base import Connector, ConnectorMetrics
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer

__all__ = ["Connector", "ConnectorMetrics", "DeliveryError", "IdempotentProducer"]
