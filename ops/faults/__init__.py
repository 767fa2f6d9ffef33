"""Fault-injection suite: real faults against real processes while reader events flow.

Each scenario runs on a local stack of its own (Kafka KRaft broker and redis-server started
with ``java`` and ``redis-server`` under ``<state>/faults``, on ports chosen by the caller), so
it can stop and kill them without touching anyone else's stack:

1. fresh topics and an empty Redis; one Faust worker (``python -m streams worker``) started;
2. the MIND catalogue (news.tsv) replayed and drained;
3. a steady replay of the first ``rows`` rows of MIND ``behaviors.tsv`` at ``rate`` reader
   events/s (idempotent producer, as ``feedpipe replay``) runs in a thread; after
   ``fault_at`` of it the fault is injected;
4. the replay finishes, the pipeline drains (every consumer group at lag 0, three polls in a
   row), and the final state is compared with a reference computed from the same input
   (:func:`~ops.faults.report.reference_counts`: distinct event ids per user and kind).

What is compared (:class:`Outcome`):

* **lost**: per user and counter (impressions, live clicks, history clicks), how many events of
  the input are missing from the user's profile in Redis (minus events the pipeline routed to
  the click path's DLQ with a reason); must be 0;
* **doubled**: how many were applied more than once; must be 0;
* **topic mismatches**: users whose newest record on the click path's ``profiles`` output (a
  compacted topic keyed by user) disagrees with the profile in Redis, or who have no feed;
  must be 0;
* **poison**: records injected by the scenario and the DLQ records found for them, with reasons;
* **recover_s**: seconds from the fault until the pipeline's lag is back under
  ``max(lag just before the fault, rate * 1 s)`` (the worker caught up with the steady input).

Scenarios (:mod:`ops.faults.scenarios`): ``worker-kill`` (SIGKILL a worker mid-batch,
restart it), ``two-worker-kill`` (two workers share the partitions from the start; one is
SIGKILLed and not restarted: the survivor takes its partitions over), ``broker-kill`` (only on
the 3-broker cluster, ``--brokers 3``: SIGKILL the broker leading most of the click path's
partitions; restarted after the drain, every replica back in sync), ``rebalance`` (two
workers in one consumer group, one SIGKILLed: the survivor takes its partitions over; then it
is restarted), ``broker-restart`` (SIGTERM the Kafka broker,
start it again 5 s later), ``redis-outage`` (SIGTERM redis-server, start it again on its
append-only file 30 s later: the stages must wait and retry, neither die nor drop what they
held), ``redis-flush`` (the same outage, then ``FLUSHALL`` once Redis is back: the click path
holds its partitions, and :func:`ops.rebuild.rebuild` -- ``feedpipe rebuild`` -- restores
everything from Kafka while events keep flowing), ``connector-kill`` (a ``feedpipe connect``
process paginating a WordPress REST API -- :class:`connectors.simulator.FixtureServer` serving
:data:`~ops.faults.inputs.WP_POSTS` posts made from the real frontity ones, 5 per page --
SIGKILLed mid-pagination and restarted: every post must reach Redis, and the enrich stage's
content output must hold one record per post), ``poison`` (wrong schema id, truncated Avro, a
huge payload and invalid UTF-8 in every stage's input, while events flow).

Modules: :mod:`~ops.faults.suite` (the driver), :mod:`~ops.faults.scenarios` (the faults),
:mod:`~ops.faults.drivers` (workers, the steady replay), :mod:`~ops.faults.inputs` (input
subset, poison records, WordPress posts), :mod:`~ops.faults.reads` (final state from Kafka and
Redis), :mod:`~ops.faults.report` (reference, comparison, table).

Run: ``feedpipe faults [SCENARIO ...] [--runs 2]``; tests/integration/test_faults.py runs them.
"""

from __future__ import annotations

from ops.faults.drivers import FaultConfig
from ops.faults.reads import wait_feeds_converged
from ops.faults.report import Outcome, compare, format_table, reference_counts
from ops.faults.scenarios import SCENARIOS
from ops.faults.suite import Suite

__all__ = [
    "SCENARIOS",
    "FaultConfig",
    "Outcome",
    "Suite",
    "compare",
    "format_table",
    "reference_counts",
    "wait_feeds_converged",
]
