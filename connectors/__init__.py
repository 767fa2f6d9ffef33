"""Connectors: publish CMS content and reader events to Kafka.

Every connector subclasses :class:`connectors.base.Connector` and publishes through
:class:`feedpipe.kafka.producer.IdempotentProducer` (idempotent, ``acks=all``, Java-compatible
``murmur2_random`` partitioner). :mod:`connectors.replay` replays the files of the shared data
directory (``topology.yaml`` ``sources:``). Connectors never import ``streams``.
"""

from connectors.base import Connector, ConnectorMetrics
from feedpipe.kafka.producer import DeliveryError, IdempotentProducer

__all__ = ["Connector", "ConnectorMetrics", "DeliveryError", "IdempotentProducer"]
