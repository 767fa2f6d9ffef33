"""feedpipe: real-time personalisation pipeline (CMS + reader streams -> ranked feeds).

Shared core used by ``streams`` (Faust agents), ``connectors`` (producers) and ``readapi``
(the read endpoint): settings, topology, wire format, ids, the Redis key layout and the local
infrastructure (embedded Kafka and Redis).
"""

__version__ = "0.1.0"
