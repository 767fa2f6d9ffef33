"""``feedpipe simulate``: a reader population producing live-shaped reader events.

Live traffic is many users with a few events each, the opposite of a MIND replay (one user,
~70 events in one batch). The model (:class:`Population`, pure, seeded):

* user activity follows a Zipf law: the user of rank ``k`` (1-based) of ``users`` starts a
  session with probability proportional to ``k ** -zipf_s`` (Zipf 1949; web and news
  audiences fit exponents near 1, Adamic & Huberman 2002, "Zipf's law and the Internet");
* a session is ``1 + Geometric(1 / mean_impressions)`` impressions, ``gap_s`` seconds apart,
  each clicked with probability ``ctr`` (the click follows its impression after ``gap_s / 2``;
  dwell 5-120 s). With the default ``ctr`` = 0.176 about 15% of the events are clicks, the
  share of the issue's live-shaped probe;
* the items are the current catalogue (Redis catalogue zsets), their popularity Zipf too
  (exponent ``item_zipf_s``) over the catalogue order, newest first;
* sessions start as a Poisson process whose rate gives ``rate`` events per second overall;
  event times are the wall clock of the run (``occurred_at`` epoch ms).

Sink: straight to Kafka (``reader.events``, key user_id, feedpipe.ReaderEvent, through
:class:`feedpipe.kafka.producer.IdempotentProducer`), or the event collector
(``--collector URL``: ``POST {URL}/v1/events`` with ``X-API-Key``, JSON ``{"events": [...]}``,
answered 202 with per-event errors, which are counted and shown). Paced to the target rate.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from feedpipe.ids import event_id

DEFAULT_CTR = 0.176
"""Clicks per impression: 0.176 / 1.176 = 15% of events are clicks (the issue's probe)."""


@dataclass(frozen=True, slots=True)
class Shape:
    """Parameters of the population (module docstring)."""

    users: int = 100_000
    zipf_s: float = 0.8
    mean_impressions: float = 4.0
    ctr: float = DEFAULT_CTR
    gap_s: float = 8.0
    item_zipf_s: float = 0.8
    seed: int = 15


class Population:
    """Live-shaped reader events over ``items`` (content ids, newest first).

    Raises:
        ValueError: no items, or a shape parameter out of range.
    """

    def __init__(self, items: Sequence[str], shape: Shape = Shape()) -> None:
        if not items:
            raise ValueError("the catalogue is empty: publish content before simulating readers")
        if shape.users < 1 or not 0 <= shape.ctr <= 1 or shape.mean_impressions < 1:
            raise ValueError(f"bad population shape {shape}")
        self.items = list(items)
        self.shape = shape
        self.rng = random.Random(shape.seed)
        self._user_cum = _zipf_cumulative(shape.users, shape.zipf_s)
        self._item_cum = _zipf_cumulative(len(self.items), shape.item_zipf_s)
        self._seq = 0

    def _pick(self, cum: list[float], k: int) -> list[int]:
        return self.rng.choices(range(len(cum)), cum_weights=cum, k=k)

    def session(self, start_ms: int) -> list[dict[str, Any]]:
        """One session's events (ReaderEvent dicts, time order) of a Zipf-drawn user starting
        at ``start_ms`` (epoch ms)."""
        s, rng = self.shape, self.rng
        user = f"sim-{self._pick(self._user_cum, 1)[0]:07d}"
        n = 1
        while rng.random() > 1 / s.mean_impressions:
            n += 1
        picks = self._pick(self._item_cum, n)
        self._seq += 1
        imp_id = f"sim-{s.seed}-{self._seq}"
        out: list[dict[str, Any]] = []
        gap = int(s.gap_s * 1000)
        for pos, i in enumerate(picks):
            at = start_ms + pos * gap
            cid = self.items[i]
            out.append(_event("impression", user, cid, at, imp_id, pos, None))
            if rng.random() < s.ctr:
                dwell = rng.randint(5_000, 120_000)
                out.append(_event("click", user, cid, at + gap // 2, imp_id, pos, dwell))
        return out

    def events(self, rate: float, start_ms: int) -> Iterator[dict[str, Any]]:
        """Endless events in event-time order at ``rate`` events/s from ``start_ms``: sessions
        start as a Poisson process; their events interleave by time."""
        s = self.shape
        per_session = s.mean_impressions * (1 + s.ctr)
        session_rate_ms = rate / per_session / 1000.0
        heap: list[tuple[int, int, dict[str, Any]]] = []
        next_start = float(start_ms)
        seq = 0
        while True:
            while not heap or next_start <= heap[0][0]:
                for ev in self.session(int(next_start)):
                    seq += 1
                    heapq.heappush(heap, (ev["occurred_at"], seq, ev))
                next_start += self.rng.expovariate(session_rate_ms)
            yield heapq.heappop(heap)[2]


def _zipf_cumulative(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 1..n under ``k ** -s``."""
    total = 0.0
    out = []
    for k in range(1, n + 1):
        total += k ** -s
        out.append(total)
    return out


def _event(
    typ: str, user: str, cid: str, at_ms: int, imp: str, pos: int, dwell: int | None
) -> dict[str, Any]:
    return {
        "event_id": event_id("sim", typ, user, cid, at_ms, imp),
        "type": typ,
        "user_id": user,
        "content_id": cid,
        "source_item_id": None,
        "occurred_at": at_ms,
        "impression_id": imp,
        "position": pos,
        "dwell_ms": dwell,
        "origin": "live",
    }


def collector_body(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The collector's request body for ``events`` (fields of its contract only)."""
    keep = ("type", "user_id", "content_id", "occurred_at", "event_id", "impression_id",
            "position", "dwell_ms")
    return {"events": [{k: ev[k] for k in keep if ev.get(k) is not None} for ev in events]}


async def catalogue_items() -> list[str]:
    """The current catalogue's content ids from Redis, newest first (every brand)."""
    from feedpipe.store import content as content_store
    from streams.runtime import redis_client

    r = redis_client()
    ids, added, _celebrities = await content_store.read_catalogue(
        r, sorted(await content_store.brands(r))
    )
    return sorted(ids, key=lambda c: -added.get(c, 0.0))


@dataclass(slots=True)
class Counts:
    """What a run sent: events, clicks, and the collector's rejected events (with the first
    error messages)."""

    sent: int = 0
    clicks: int = 0
    rejected: int = 0
    users: int = 0
    errors: list[str] | None = None


class KafkaSink:
    """Reader events straight to ``reader.events`` (key user_id, feedpipe.ReaderEvent)."""

    def __init__(self, bootstrap: str) -> None:
        from feedpipe.kafka.producer import IdempotentProducer
        from feedpipe.topology import topology
        from feedpipe.wire.codec import codec

        self.producer = IdempotentProducer(bootstrap, client_id="feedpipe-simulate",
                                           config={"linger.ms": 20})
        self.topic = topology().ingest.reader_events
        self.enc = codec("ReaderEvent").encode

    def send(self, events: Sequence[dict[str, Any]], counts: Counts) -> None:
        """Queue ``events``; delivery failures raise at :meth:`close`."""
        for ev in events:
            self.producer.produce(self.topic, ev["user_id"].encode(), self.enc(ev))

    def close(self) -> None:
        """Deliver what is queued (raises :class:`feedpipe.kafka.producer.DeliveryError`)."""
        self.producer.flush(60)


class CollectorSink:
    """Reader events through the event collector: ``POST {url}/v1/events`` (JSON body
    ``{"events": [...]}``, header ``X-API-Key``); a non-202 answer raises
    :class:`httpx.HTTPStatusError`, per-event errors of a 202 are counted as rejected."""

    def __init__(self, url: str, api_key: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=url.rstrip("/"), headers={"X-API-Key": api_key},
                                   timeout=10.0)

    def send(self, events: Sequence[dict[str, Any]], counts: Counts) -> None:
        """POST ``events`` as one request."""
        resp = self.client.post("/v1/events", json=collector_body(events))
        resp.raise_for_status()
        body = resp.json() if resp.content else {}
        errs = body.get("errors") or [] if isinstance(body, dict) else []
        counts.rejected += len(errs)
        if errs and counts.errors is not None and len(counts.errors) < 5:
            counts.errors.append(str(errs[0]))

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()


def run(
    population: Population,
    sink: KafkaSink | CollectorSink,
    rate: float,
    duration_s: float,
    *,
    batch: int = 500,
    on_tick: Any = None,
) -> Counts:
    """Send ``rate`` events/s for ``duration_s`` seconds (paced in ticks of at most ``batch``
    events); ``on_tick(counts, elapsed_s)`` after each send. Returns the counts."""
    counts = Counts(errors=[])
    users: set[str] = set()
    stream = population.events(rate, int(time.time() * 1000))
    t0 = time.monotonic()
    total = int(rate * duration_s)
    while counts.sent < total:
        elapsed = time.monotonic() - t0
        due = min(total, int(rate * elapsed) + 1) - counts.sent
        if due <= 0:
            time.sleep(min(0.05, (counts.sent + 1) / rate - elapsed))
            continue
        chunk = [next(stream) for _ in range(min(due, batch))]
        sink.send(chunk, counts)
        counts.sent += len(chunk)
        counts.clicks += sum(ev["type"] == "click" for ev in chunk)
        users.update(ev["user_id"] for ev in chunk)
        counts.users = len(users)
        if on_tick is not None:
            on_tick(counts, time.monotonic() - t0)
    sink.close()
    return counts
