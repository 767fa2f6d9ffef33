"""A reader's text interest vector in the profile, and content similarity for many users at once.

The interest vector is :func:`feedpipe.model.text.interest_add`'s forward-decayed sum of the
vectors of the items the reader clicked (each read weighted ``2 ** ((t - L) / H)``, L the
profile's landmark and H its half-life, as the category and topic affinities of
:mod:`feedpipe.model.profile`), kept to its :data:`INTEREST_TERMS` heaviest terms. The
similarity of an item is the cosine between that vector and the item's
(:func:`feedpipe.model.text.similarity`; :func:`similarity_rows` computes the same numbers for a
chunk of users against a whole catalogue with one sparse product over a
:class:`TextIndex`).

Stored form (profile key :data:`FIELD`, a base64 string, so the profile stays a JSON-serialisable
dict for every profile codec): ``log2(scale)`` as a little-endian float32, then per term one
little-endian uint32: its hashed index in the low 24 bits (``DIM = 2**20`` fits) and its weight
``q = round(255 * weight / scale)`` in the high 8, ``scale`` being the largest weight. 32
terms: 132 bytes, 176 base64 characters, under 200 bytes with the key in the profile's JSON.
Quantising to 8 bits moves a cosine by at most ~1/255 of the vector's largest weight; terms
that round to 0 are dropped. The log scale keeps the forward-decay growth (``2 ** 400`` before
a rebase) in range.

An unreadable stored vector (not base64, or not a scale and whole terms) never stops a worker:
:func:`interest_of` and :func:`to_wire` read it as empty, :func:`rebase` drops it, and each
logs one error line on the ``feedpipe.model.interest`` logger naming the user and the reason,
with the record attribute :data:`UNREADABLE_ATTR` set to where it was met; the worker counts
those records in ``feedpipe_interest_unreadable_total``
(:func:`feedpipe.monitoring.metrics.count_unreadable_interests`). The model stays free of
metrics: logging is its only way out.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from feedpipe.model.text import DIM, SparseVec, interest_add

INTEREST_TERMS = 32
"""Terms kept in a reader's interest vector (bounds the profile: 4 bytes per term)."""

FIELD = "interest"
"""Profile key of the stored interest vector."""

UNREADABLE_ATTR = "interest_unreadable"
"""Attribute of the log records of an unreadable stored vector: where it was met
(``"interest_of"``, ``"to_wire"``, ``"rebase"``)."""

_SCALE = struct.Struct("<f")
_Q = 255

log = logging.getLogger(__name__)


def pack(vec: Mapping[int, float]) -> str:
    """The stored form of an interest vector (see the module docstring); ``""`` when empty.
    Only positive weights are kept, at most the :data:`INTEREST_TERMS` heaviest (ties by index).

    Raises:
        ValueError: a term index outside ``[0, DIM)`` or a non-finite weight.
    """
    terms = [(k, v) for k, v in vec.items() if v > 0]
    if len(terms) > INTEREST_TERMS:
        terms = sorted(terms, key=_heaviest)[:INTEREST_TERMS]
    if not terms:
        return ""
    top = max(v for _, v in terms)
    if not math.isfinite(top):
        raise ValueError("interest vector: weight not finite")
    scale = _Q / top
    bad = next((k for k, _ in terms if not 0 <= k < DIM), None)
    if bad is not None:
        raise ValueError(f"interest vector: term index {bad} outside [0, {DIM})")
    # little-endian: 3 index bytes, then the weight byte; terms that round to 0 are dropped
    words = [k | q << 24 for k, q in [(k, round(v * scale)) for k, v in terms] if q]
    return base64.b64encode(struct.pack(f"<f{len(words)}I", math.log2(top), *words)).decode()


def _heaviest(kv: tuple[int, float]) -> tuple[float, int]:
    return -kv[1], kv[0]


def _raw(stored: str) -> bytes:
    """The bytes behind a non-empty stored (base64) vector, checked for the layout.

    Raises:
        ValueError: not base64, or not a scale followed by whole 4-byte terms.
    """
    try:
        raw = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"interest vector is not base64: {exc}") from exc
    _terms_in(raw)
    return raw


def _terms_in(raw: bytes) -> int:
    """Number of terms of a raw vector (its layout in the module docstring).

    Raises:
        ValueError: not a scale followed by whole 4-byte terms.
    """
    n, rest = divmod(len(raw) - _SCALE.size, 4)
    if n < 0 or rest:
        raise ValueError(f"interest vector of {len(raw)} bytes is not 4 + 4 * terms")
    return n


def _decode(raw: bytes) -> SparseVec:
    """The vector of raw bytes (:func:`_terms_in` checks them), weights to 8 bits."""
    n = _terms_in(raw)
    log_scale, *words = struct.unpack(f"<f{n}I", raw)
    scale = 2.0 ** float(log_scale) / _Q
    return {w & 0xFFFFFF: (w >> 24) * scale for w in words}


def unpack(stored: str | None) -> SparseVec:
    """Inverse of :func:`pack` (weights to 8-bit precision); ``{}`` for None or ``""``.

    Raises:
        ValueError: not base64, or not a scale followed by whole 4-byte terms.
    """
    if not stored:
        return {}
    return _decode(_raw(stored))


def _unreadable(profile: Mapping[str, Any], where: str, exc: Exception) -> None:
    """Log an unreadable stored vector of ``profile`` (see the module docstring)."""
    log.error("interest vector of user %s is unreadable (%s); %s reads it as empty",
              profile.get("user_id"), exc, where, extra={UNREADABLE_ATTR: where})


def interest_of(profile: Mapping[str, Any]) -> SparseVec:
    """The profile's interest vector (forward-decayed weights at its landmark); ``{}`` when
    it has none, or when the stored value is unreadable (logged, see the module docstring;
    the next read starts it anew)."""
    try:
        return unpack(profile.get(FIELD))
    except (ValueError, TypeError) as exc:
        _unreadable(profile, "interest_of", exc)
        return {}


def to_wire(profile: Mapping[str, Any]) -> bytes:
    """The profile's interest vector as the UserProfile v2 ``interest`` field
    (schemas/user_profile.v2.avsc): the raw bytes behind the stored base64 form (layout in the
    module docstring), 4 + 4 * terms bytes; ``b""`` when it has none or when it is unreadable
    (logged, as :func:`interest_of`). :func:`from_wire` inverts it."""
    stored = profile.get(FIELD)
    if not stored:
        return b""
    try:
        return _raw(stored)
    except ValueError as exc:
        _unreadable(profile, "to_wire", exc)
        return b""


def from_wire(raw: bytes | str) -> SparseVec:
    """The interest vector of a UserProfile v2 ``interest`` field (:func:`to_wire`), decoded
    from the bytes as they are (every record on the topic has this layout); ``{}`` when empty
    (a version 1 record read with the version 2 schema has the default ``""``).

    Raises:
        ValueError: a non-empty string, or not a scale followed by whole 4-byte terms.
    """
    if not raw:
        return {}
    if isinstance(raw, str):
        raise ValueError("interest vector: a non-empty string, not bytes")
    return _decode(bytes(raw))


def add_read(profile: dict[str, Any], item: Mapping[int, float] | Iterable[tuple[int, float]],
             at_ms: int) -> None:
    """Add the text vector ``item`` (or its ``(index, weight)`` pairs) of a read at ``at_ms``
    (epoch ms) to the profile's interest vector, in place, with the forward-decay weight
    ``2 ** ((at_ms - landmark_ms) / (half_life_s * 1000))`` of :mod:`feedpipe.model.profile`
    (Cormode et al., ICDE 2009)."""
    if not item:
        return
    w = 2.0 ** ((at_ms - profile["landmark_ms"]) / (profile["half_life_s"] * 1000.0))
    vec = interest_add(interest_of(profile), item, w, top=INTEREST_TERMS)
    profile[FIELD] = pack(vec)


def rebase(profile: dict[str, Any], exponent: float) -> None:
    """Scale the stored interest vector by ``2 ** -exponent`` (the landmark moved forward by
    ``exponent`` half-lives), in place; only its stored scale changes. An unreadable one is
    dropped (logged, see the module docstring)."""
    stored = profile.get(FIELD)
    if not stored:
        return
    try:
        raw = bytearray(_raw(stored))
    except ValueError as exc:
        _unreadable(profile, "rebase", exc)
        profile.pop(FIELD, None)
        return
    (log_scale,) = _SCALE.unpack_from(raw)
    _SCALE.pack_into(raw, 0, log_scale - exponent)
    profile[FIELD] = base64.b64encode(bytes(raw)).decode()


@dataclass(frozen=True, slots=True)
class TextIndex:
    """A catalogue's text vectors indexed by term, for :func:`similarity_rows`.

    Attributes:
        vocab: hashed term -> row of ``by_term`` (the catalogue's distinct terms, V of them).
        by_term: (V, n) float64 CSR matrix: row ``vocab[t]`` holds term t's weight in each of
            the n items (columns in catalogue row order). Rows are terms, not the 2**20 hashed
            dimensions, so products never build DIM-long index arrays.
    """

    vocab: dict[int, int]
    by_term: sparse.csr_matrix

    @property
    def items(self) -> int:
        """n, the number of items (columns)."""
        return int(self.by_term.shape[1])


def text_index(vectors: Sequence[Mapping[int, float] | None]) -> TextIndex:
    """The :class:`TextIndex` of n item vectors (unit length, :func:`feedpipe.model.text.encode`;
    None or ``{}``: an item without text, similarity 0)."""
    vocab: dict[int, int] = {}
    rows: list[int] = []
    cols: list[int] = []
    data: list[float] = []
    for j, vec in enumerate(vectors):
        for k, w in (vec or {}).items():
            rows.append(vocab.setdefault(k, len(vocab)))
            cols.append(j)
            data.append(w)
    by_term = sparse.csr_matrix((data, (rows, cols)), shape=(len(vocab), len(vectors)),
                                dtype=float)
    return TextIndex(vocab, by_term)


def row_entries(maps: Sequence[Mapping[Any, float]], column: Mapping[Any, int]
                ) -> tuple[list[int], list[int], list[float]]:
    """Coordinate entries (row, column, value) of a sparse matrix whose row i is ``maps[i]``,
    each key placed at ``column[key]``; keys without a column are left out (a term outside the
    catalogue's vocabulary, an item outside the candidate matrix)."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for i, got in enumerate(maps):
        for key, v in got.items():
            c = column.get(key)
            if c is not None:
                rows.append(i)
                cols.append(c)
                vals.append(v)
    return rows, cols, vals


def similarity_rows(interests: Sequence[Mapping[int, float]], index: TextIndex
                    ) -> npt.NDArray[np.float64]:
    """Cosine of each interest vector with each item of ``index``, shape (len(interests), n),
    in [0, 1]; a row of 0 for an empty interest, a column of 0 for an item without text. The
    same values as :func:`feedpipe.model.text.similarity` per user (the norm is the whole
    interest vector's; terms no item has add nothing to the dot products)."""
    m, n = len(interests), index.items
    if m == 0 or n == 0 or index.by_term.nnz == 0:
        return np.zeros((m, n))
    norms = np.array([math.sqrt(sum(w * w for w in vec.values())) for vec in interests])
    rows, cols, data = row_entries(interests, index.vocab)
    users = sparse.csr_matrix((data, (rows, cols)), shape=(m, len(index.vocab)), dtype=float)
    dots = (users @ index.by_term).toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms[:, None] > 0, dots / norms[:, None], 0.0)
