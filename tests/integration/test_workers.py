"""Many workers: the same input through one ``feedpipe worker`` and through two sharing the
partitions (one Faust consumer group for the agents, one aiokafka group for the click path)
must leave the same Redis state and the same materialised output topics.

What is compared, and what is left out and why (:func:`redis_state`, :func:`topic_state`):

* profiles and feeds are compared decoded (content ids, not the item ordinals they are stored
  with); the ordinal table (``fp:item:ord|id|gen``) is left out: ordinals are handed out in the
  order items are first seen, which interleaves differently with two processes, and the
  generation is a random token;
* ``catalogue:version``, ``stats:version``, ``feeds:refreshed:*``, a profile's ``version`` and
  the ``*_version`` fields of feeds count batches (one bump per batch written or per batch that
  touched the user), and how events fall into batches depends on each process's fetches: left
  out; the values they version are compared;
* ``generated_at`` of a feed, ``enriched_at`` of content, the registration time in a profile's
  audience entry (``aud.at``), the scores of the ``active`` and ``audience`` sets, catalogue
  scores of items without a publication time (first seen, as MIND's) and the ``ops:*`` keys are
  wall-clock times or per-process monitoring: left out (the members and the rest compared);
* a feed ranked when a profile changed uses the item stats of that moment, which other
  partitions' batches keep moving: how those batches interleave is timing, with one worker as
  with two. So the ``feeds`` output is compared on which users have a feed record, and the
  profiles' ``feed_fp`` (the fingerprint of that feed) is left out; the feeds in Redis, which
  the idle refresher re-ranks on the final stats, are compared in full;
* the trend windows (``trendw``) are sums of floats added with HINCRBYFLOAT, one addition per
  batch: how events fall into batches changes the order of the additions and so the last
  digits of each sum; they are compared as floats to a relative 1e-9 (:func:`_same`);
* compacted output topics are materialised (key -> newest value, decoded); on the others a
  rebalance may legitimately repeat a record, so only the compacted ones are compared.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pipeline import drain

from feedpipe.kafka.topics import TopicChange
from feedpipe.store.client import sync_client
from feedpipe.topology import topology
from ops.faults.drivers import Worker
from ops.faults.inputs import behaviors_subset
from ops.faults.reads import consume

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 300  # MIND behaviours rows (~20,000 reader events)
VOLATILE_FIELDS = (
    "generated_at", "enriched_at", "normalised_at",  # wall-clock times of processing
    "profile_version", "stats_version", "catalogue_version",  # batch counters
    "feed_fp",  # fingerprint of the feed ranked at the profile change (module docstring)
)


def _family(template: str) -> str:
    """The fixed prefix of a topology.yaml ``redis.keys`` template without its hash tag, e.g.
    ``fp:profile:`` for ``{prefix}:{tag}:profile:{user_id}`` (compare with :func:`_untag`)."""
    t = topology()
    return template.replace("{prefix}", t.redis.prefix).replace("{tag}:", "").split("{", 1)[0]


def _untag(key: str) -> str:
    """``key`` without its Redis Cluster hash tag: ``fp:{p3}:profile:U1`` -> ``fp:profile:U1``."""
    return re.sub(r"\{[^}]*\}:", "", key, count=1)


def redis_state(url: str) -> dict[str, Any]:
    """Every key of the Redis at ``url`` with its value, normalised as the module docstring
    says (decoded profiles and feeds; batch counters, wall-clock scores and the ordinal table
    left out)."""
    from feedpipe.store.feeds import decode_feed
    from feedpipe.store.interning import ITEMS, resolve_sync
    from feedpipe.store.keys import keys
    from feedpipe.store.profiles import decode_profile, stored_ordinals

    r = sync_client(url)
    tk = topology().redis.keys
    skip = tuple(
        _family(tk[name])
        for name in ("item_ord", "item_id", "item_gen", "catalogue_version", "stats_version",
                     "feeds_refreshed", "ops_snapshot", "ops_history", "celebrity_version")
    )
    members_only = tuple(
        _family(tk[name]) for name in ("active", "audience", "catalogue", "celebrity")
    )
    profile, feed = _family(tk["profile"]), _family(tk["feed"])
    trend_windows = _family(tk["trend_windows"])
    ITEMS.sync(r.get(keys().item_gen()))
    out: dict[str, Any] = {}
    for raw_key in r.scan_iter(count=1000):
        key = _untag(raw_key.decode())
        if key.startswith(skip):
            continue
        kind = str(r.type(raw_key), "ascii")
        if kind == "string":
            value: Any = r.get(raw_key)
            if key.startswith((profile, feed)):
                resolve_sync(r, stored_ordinals([value]))
                value = decode_profile(value) if key.startswith(profile) else decode_feed(value)
            elif value is not None and value[:1] == b"{":
                value = orjson.loads(value)
            value = _strip(value)
        elif kind == "hash":
            value = r.hgetall(raw_key)
            if key.startswith(trend_windows):
                value = {f: float(v) for f, v in value.items()}
        elif kind == "zset":
            pairs: list[Any] = r.zrange(raw_key, 0, -1, withscores=True)
            value = sorted(m for m, _ in pairs) if key.startswith(members_only) else pairs
        elif kind == "set":
            value = sorted(r.smembers(raw_key))
        else:
            value = r.lrange(raw_key, 0, -1)
        out[raw_key.decode()] = value
    return out


def topic_state(bootstrap: str) -> dict[str, dict[bytes, Any]]:
    """Every compacted output topic of topology.yaml ``stages`` materialised: key -> newest
    value, decoded with the topic's schema (None for a tombstone)."""
    from feedpipe.wire.codec import codec

    topo = topology()
    out: dict[str, dict[bytes, Any]] = {}
    outputs = sorted({t for st in topo.stages.values() for t in st.outputs.values()})
    for name in outputs:
        spec = topo.topics[name]
        if "compact" not in spec.cleanup_policy:
            continue
        decode = codec(spec.schema_.rsplit(".", 1)[-1]).decode
        presence_only = name == topo.stages["clickpath"].output("feeds")
        table: dict[bytes, Any] = {}
        for key, value in consume(bootstrap, name):
            if key is not None:
                if value is None or presence_only:
                    table[key] = value is not None
                else:
                    table[key] = _strip(decode(value))
        out[name] = table
    return out


def _strip(record: Any) -> Any:
    """``record`` without :data:`VOLATILE_FIELDS` (at any depth) and, in a profile, without
    its batch counter ``version`` and the audience registration time ``aud.at``."""
    if isinstance(record, dict):
        out = {k: _strip(v) for k, v in record.items() if k not in VOLATILE_FIELDS}
        if "user_id" in out and "landmark_ms" in out:  # a profile (Redis or profiles topic)
            out.pop("version", None)
            if isinstance(out.get("aud"), dict):
                out["aud"] = {k: v for k, v in out["aud"].items() if k != "at"}
        return out
    if isinstance(record, list):
        return [_strip(v) for v in record]
    return record


def _same(a: Any, b: Any) -> bool:
    """``a == b``, except that two floats are equal within a relative 1e-9 (sums added in
    another order: the trend windows, module docstring), recursively in dicts and lists."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _members(bootstrap: str, group: str) -> list[int]:
    """Partitions assigned to each member of consumer group ``group``."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return [len(m.assignment.topic_partitions) for m in desc.members]


def _run(
    n: int, kafka_bootstrap: str, redis_url: str, data_dir: Path, tmp: Path
) -> tuple[dict[str, Any], dict[str, Any], list[list[int]]]:
    """Fresh topics and Redis, ``n`` workers, the MIND catalogue then ``ROWS`` behaviour rows;
    returns (Redis state, topic state, partitions per member of each stage's group)."""
    from confluent_kafka.admin import AdminClient

    from connectors.replay import ReplayConnector, replay_all
    from feedpipe.kafka.lag import pipeline_groups
    from feedpipe.kafka.topics import recreate
    from ops.faults import wait_feeds_converged

    recreate(topology(), AdminClient({"bootstrap.servers": kafka_bootstrap}))
    sync_client(redis_url).flushdb()
    app_id = f"feedpipe-test-{uuid.uuid4().hex[:8]}"
    env = {"FEEDPIPE_KAFKA_BOOTSTRAP": kafka_bootstrap, "FEEDPIPE_REDIS_URL": redis_url,
           "FEEDPIPE_APP_ID": app_id}
    workers = [Worker(f"w{i}", env, tmp / f"{n}-workers" / f"w{i}") for i in range(n)]
    try:
        for w in workers:
            w.start()
        replay_all(topology(), data_dir, ["mind"], bootstrap=kafka_bootstrap)
        drain(kafka_bootstrap, app_id)
        source = behaviors_subset(data_dir, ROWS, tmp / f"{n}-input")
        conn = ReplayConnector(source, tmp / f"{n}-input", topology().topics,
                               bootstrap=kafka_bootstrap, flush_timeout_s=120)
        try:
            assert conn.run().published > 10_000
        finally:
            conn.stop()
        drain(kafka_bootstrap, app_id)
        wait_feeds_converged(redis_url)
        for w in workers:
            assert w.proc is not None and w.proc.poll() is None, w.tail()
        groups = [_members(kafka_bootstrap, g) for g in pipeline_groups(app_id)]
        return redis_state(redis_url), topic_state(kafka_bootstrap), groups
    finally:
        for w in workers:
            w.stop()


@pytest.fixture(scope="module")
def one_and_two(
    kafka_bootstrap: str, redis_url: str, topics_applied: list[TopicChange], data_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, Any]]:
    tmp = tmp_path_factory.mktemp("workers")
    one = _run(1, kafka_bootstrap, redis_url, data_dir, tmp)
    time.sleep(1.0)
    two = _run(2, kafka_bootstrap, redis_url, data_dir, tmp)
    yield one, two


def test_two_workers_share_the_partitions(one_and_two: tuple[Any, Any]) -> None:
    (_, _, groups1), (_, _, groups2) = one_and_two
    assert all(len(g) == 1 for g in groups1), groups1
    for g in groups2:  # every stage's group: two members, each with partitions of its own
        assert len(g) == 2 and all(n > 0 for n in g), groups2


def test_same_redis_state_with_one_or_two_workers(one_and_two: tuple[Any, Any]) -> None:
    (r1, _, _), (r2, _, _) = one_and_two
    assert len(r1) > 1000  # profiles, feeds, content, stats of the run
    only1, only2 = sorted(set(r1) - set(r2)), sorted(set(r2) - set(r1))
    assert not only1 and not only2, (only1[:10], only2[:10])
    differ = sorted(k for k in r1 if not _same(r1[k], r2[k]))
    assert not differ, _explain(differ, r1, r2)


def test_same_output_topics_with_one_or_two_workers(one_and_two: tuple[Any, Any]) -> None:
    (_, t1, _), (_, t2, _) = one_and_two
    assert set(t1) == set(t2) and sum(len(v) for v in t1.values()) > 1000
    for name in t1:
        differ = sorted(k for k in t1[name].keys() | t2[name].keys()
                        if t1[name].get(k) != t2[name].get(k))
        assert not differ, (name, _explain(differ, t1[name], t2[name]))


def _explain(differ: list[Any], a: dict[Any, Any], b: dict[Any, Any]) -> str:
    """Differing keys per family (text before the last ':') and, for one key of each, the
    fields that differ."""
    families: dict[str, list[Any]] = {}
    for k in differ:
        text = k.decode(errors="replace") if isinstance(k, bytes) else str(k)
        families.setdefault(text.rsplit(":", 1)[0], []).append(k)
    lines = []
    for fam, ks in families.items():
        x, y = a.get(ks[0]), b.get(ks[0])
        what: dict[str, Any]
        if isinstance(x, dict) and isinstance(y, dict):
            what = {f: (x.get(f), y.get(f)) for f in x.keys() | y.keys() if x.get(f) != y.get(f)}
        else:
            what = {"one": x, "two": y}
        lines.append(f"{fam}: {len(ks)} keys, e.g. {ks[0]!r}: {str(what)[:600]}")
    return "\n".join(lines)
