"""The click path: reader events -> profiles -> feeds -> Redis, in whole partition batches.

The only code that turns reader events into profiles and feeds. It runs in the Faust worker as
a service with its own aiokafka batch consumer (:mod:`streams.clickpath.consumer`), not as a
Faust agent: Faust's per-event machinery costs ~17x against hand-written batch code, and Faust
tables cannot be modified inside ``stream.take`` (docs: faust field notes; docs/guarantees.md).

input:  reader.events (key user_id, value feedpipe.ReaderEvent): impressions, clicks,
        'resolve' (a click's item arrived), 'fanout' (the enrich stage's fan-out on write: the
        user's feed is re-ranked with the new item), 'erase' (right to erasure)
output: profiles.updated and feeds.updated (compacted; key user_id), a tombstone per erased
        user; reader.events 'resolve' events; reader.events.dlq (undecodable, invalid ids,
        unknown type, late events)
state:  Redis profile, feed, active, stats, trending, pending, ab, audience and the offset
        watermark ``fp:wm:profiles:reader.events:{partition}`` (docs/redis-keys.md)

Guarantees: exactly-once effects in Redis (one MULTI/EXEC per partition batch, WATCH on the
offset watermark, duplicates at new offsets dropped by event id within
``profiles.allowed_lateness_hours``), at-least-once on the output topics (docs/guarantees.md).

Modules, in data order: :mod:`~streams.clickpath.records` (decode, validate),
:mod:`~streams.clickpath.fold` (the pure fold of a batch into a plan),
:mod:`~streams.clickpath.write` (the watermark-guarded transaction),
:mod:`~streams.clickpath.publish` (output records), :mod:`~streams.clickpath.path` (one batch
step), :mod:`~streams.clickpath.refresh` (idle re-ranking), :mod:`~streams.clickpath.catalogue`
(candidate matrix, feed documents), :mod:`~streams.clickpath.consumer` (the loop and the Faust
service).
"""
