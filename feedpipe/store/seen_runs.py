"""Minute-run codec of a profile's ``seen`` list (the remembered event ids of
:mod:`feedpipe.model.admission`), used by the compact profile form of
:mod:`feedpipe.store.profiles`.

Raw form: 12 bytes per id (u64 fingerprint, u32 event-time minute), sorted by minute, newest
first. Minute-run form, little-endian: the newest minute (uint32), the run count R (uint32),
R - 1 minute steps to the previous run (uint16), R run lengths (uint16), then the fingerprints
(uint64 each): 6 + 4 R + 8 n bytes for n ids, ~8 bytes per id when ids share minutes (a
reader's events come in sessions). Lists of up to :data:`SMALL_SEEN` ids go through ``struct``
(numpy's fixed cost per call dominates there), longer ones through numpy; both give the same
bytes.
"""

from __future__ import annotations

import struct
from operator import sub

import numpy as np

from feedpipe.model.admission import SEEN_PAIR

_SEEN = SEEN_PAIR
_RUNS = struct.Struct("<II")
_U16_MAX = 0xFFFF
SMALL_SEEN = 512
"""Longest ``seen`` list (pairs) the minute-run codec handles with ``struct`` instead of numpy."""


def pack_seen(raw: bytes) -> bytes | None:
    """The minute-run form of ``seen``'s raw pairs (module docstring), or None when it is not
    smaller or the pairs are not sorted by minute, newest first, with steps and runs < 2^16.

    The form is 6 + 4 R + 8 n bytes against 12 n raw (n pairs, R runs), so it needs
    R <= n - 2; lists of up to :data:`SMALL_SEEN` pairs are packed with ``struct`` (numpy's
    per-call cost dominates there), longer ones with numpy; both give the same bytes."""
    if not raw or len(raw) % _SEEN.itemsize:
        return None
    n = len(raw) // _SEEN.itemsize
    if n <= 2:
        return None
    if n > SMALL_SEEN:
        return pack_seen_np(raw)
    flat = struct.unpack(f"<{'QI' * n}", raw)
    minutes = flat[1::2]
    firsts = [minutes[0]]
    counts = [1]
    last = minutes[0]
    for m in minutes[1:]:
        if m == last:
            counts[-1] += 1
        elif m < last:
            firsts.append(m)
            counts.append(1)
            last = m
        else:
            return None
    runs = len(firsts)
    if 6 + 4 * runs + 8 * n >= len(raw) or max(counts) > _U16_MAX:
        return None
    steps = list(map(sub, firsts, firsts[1:]))
    if steps and max(steps) > _U16_MAX:
        return None
    return b"".join((
        _RUNS.pack(firsts[0], runs),
        struct.pack(f"<{runs - 1}H{runs}H{n}Q", *steps, *counts, *flat[0::2]),
    ))


def pack_seen_np(raw: bytes) -> bytes | None:
    """:func:`pack_seen` of a long list, vectorised with numpy."""
    rec = np.frombuffer(raw, dtype=_SEEN)
    m = rec["m"].astype(np.int64)
    step = m[:-1] - m[1:]
    if step.size and int(step.min()) < 0:
        return None
    starts = np.flatnonzero(np.r_[True, step != 0])
    counts = np.diff(np.r_[starts, len(rec)])
    steps = step[starts[1:] - 1]
    if int(counts.max()) > _U16_MAX or (steps.size and int(steps.max()) > _U16_MAX):
        return None
    out = b"".join((
        _RUNS.pack(int(m[0]), len(starts)),
        steps.astype("<u2").tobytes(),
        counts.astype("<u2").tobytes(),
        np.ascontiguousarray(rec["fp"]).tobytes(),
    ))
    return out if len(out) < len(raw) else None


def unpack_seen(b: bytes) -> bytes:
    """The raw ``seen`` pairs of a minute-run form (:func:`pack_seen`); ValueError when it is
    inconsistent."""
    first, runs = _RUNS.unpack_from(b, 0)
    if runs == 0:
        raise ValueError("seen: no runs")
    pos = _RUNS.size
    n = (len(b) - pos - 4 * runs + 2) // 8
    if n <= SMALL_SEEN:
        return unpack_seen_small(b, first, runs, n)
    steps = np.frombuffer(b, dtype="<u2", count=runs - 1, offset=pos)
    pos += 2 * (runs - 1)
    counts = np.frombuffer(b, dtype="<u2", count=runs, offset=pos)
    pos += 2 * runs
    n = int(counts.sum())
    if pos + 8 * n != len(b) or int(counts.min()) == 0:
        raise ValueError("seen: run lengths do not match the fingerprints")
    minutes = first - np.r_[0, np.cumsum(steps, dtype=np.int64)]
    if int(minutes.min()) < 0:
        raise ValueError("seen: minute below zero")
    rec = np.empty(n, dtype=_SEEN)
    rec["fp"] = np.frombuffer(b, dtype="<u8", count=n, offset=pos)
    rec["m"] = np.repeat(minutes, counts)
    return rec.tobytes()


def unpack_seen_small(b: bytes, first: int, runs: int, n: int) -> bytes:
    """:func:`unpack_seen` of ``n`` pairs with ``struct`` (short lists: numpy's per-call
    cost dominates there)."""
    if runs > n or 6 + 4 * runs + 8 * n != len(b):
        raise ValueError("seen: run lengths do not match the fingerprints")
    vals = struct.unpack_from(f"<{runs - 1}H{runs}H{n}Q", b, _RUNS.size)
    counts = vals[runs - 1 : 2 * runs - 1]
    if sum(counts) != n or min(counts) == 0:
        raise ValueError("seen: run lengths do not match the fingerprints")
    minutes: list[int] = []
    m = first
    for i, c in enumerate(counts):
        if i:
            m -= vals[i - 1]
        minutes += [m] * c
    if m < 0:
        raise ValueError("seen: minute below zero")
    pairs = [x for pair in zip(vals[2 * runs - 1 :], minutes, strict=True) for x in pair]
    return struct.pack(f"<{'QI' * n}", *pairs)
