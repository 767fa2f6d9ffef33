"""A reader's text interest vector in the profile, and content similarity for many users at once.

The interest vector is :func:`feedpipe.model.text.interest_add`'s forward-decayed sum of the
vectors of the items the reader clicked (each read weighted ``2 ** ((t - L) / H)``, L the
profile's landmark and H its half-life, as the category and topic affinities of
:mod:`feedpipe.model.profile`), kept to its :data:`INTEREST_TERMS` heaviest terms. The
similarity of an item is the cosine between that vector and the item's
(:func:`feedpipe.model.text.similarity`; :func:`similarity_rows` computes the same numbers for a
chunk of users against a whole catalogue with one sparse product).

Stored form (profile key :data:`FIELD`, a base64 string, so the profile stays a JSON-serialisable
dict for every profile codec): ``log2(scale)`` as a little-endian float32, then per term (heaviest
first) its hashed index as 3 bytes (``DIM = 2**20`` fits in 24 bits) and its weight as one byte
``q = round(255 * weight / scale)``, ``scale`` being the largest weight. 32 terms: 132 bytes,
176 base64 characters, under 200 bytes with the key in the profile's JSON. Quantising to 8 bits
moves a cosine by at most ~1/255 of the vector's largest weight; terms that round to 0 are
dropped. The log scale keeps the forward-decay growth (``2 ** 400`` before a rebase) in range.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse

from feedpipe.model.text import DIM, SparseVec, interest_add

INTEREST_TERMS = 32
"""Terms kept in a reader's interest vector (bounds the profile: 4 bytes per term)."""

FIELD = "interest"
"""Profile key of the stored interest vector."""

_SCALE = struct.Struct("<f")
_Q = 255


def pack(vec: Mapping[int, float]) -> str:
    """The stored form of an interest vector (see the module docstring); ``""`` when empty.

    Raises:
        ValueError: a term index outside ``[0, DIM)`` or a negative or non-finite weight.
    """
    terms = sorted(((k, v) for k, v in vec.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
    if not terms:
        return ""
    top = terms[0][1]
    if not math.isfinite(top) or any(not 0 <= k < DIM for k, _ in terms):
        raise ValueError("interest vector: term index out of range or weight not finite")
    out = bytearray(_SCALE.pack(math.log2(top)))
    for k, v in terms[:INTEREST_TERMS]:
        q = round(_Q * v / top)
        if q > 0:
            out += k.to_bytes(3, "little") + bytes((q,))
    return base64.b64encode(bytes(out)).decode()


def unpack(stored: str | None) -> SparseVec:
    """Inverse of :func:`pack` (weights to 8-bit precision); ``{}`` for None or ``""``.

    Raises:
        ValueError: not base64, or not a scale followed by whole 4-byte terms.
    """
    if not stored:
        return {}
    try:
        raw = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"interest vector is not base64: {exc}") from exc
    if len(raw) < _SCALE.size or (len(raw) - _SCALE.size) % 4:
        raise ValueError(f"interest vector of {len(raw)} bytes is not 4 + 4 * terms")
    (log_scale,) = _SCALE.unpack_from(raw)
    scale = 2.0 ** float(log_scale) / _Q
    return {
        int.from_bytes(raw[i : i + 3], "little"): raw[i + 3] * scale
        for i in range(_SCALE.size, len(raw), 4)
    }


def interest_of(profile: Mapping[str, Any]) -> SparseVec:
    """The profile's interest vector (forward-decayed weights at its landmark); ``{}`` when
    it has none or the stored value is unreadable (the next read starts it anew)."""
    try:
        return unpack(profile.get(FIELD))
    except (ValueError, TypeError):
        return {}


def add_read(profile: dict[str, Any], item: Mapping[int, float], at_ms: int) -> None:
    """Add the text vector ``item`` of a read at ``at_ms`` (epoch ms) to the profile's interest
    vector, in place, with the forward-decay weight ``2 ** ((at_ms - landmark_ms) /
    (half_life_s * 1000))`` of :mod:`feedpipe.model.profile` (Cormode et al., ICDE 2009)."""
    if not item:
        return
    w = 2.0 ** ((at_ms - profile["landmark_ms"]) / (profile["half_life_s"] * 1000.0))
    vec = interest_add(interest_of(profile), item, w, top=INTEREST_TERMS)
    profile[FIELD] = pack(vec)


def rebase(profile: dict[str, Any], exponent: float) -> None:
    """Scale the stored interest vector by ``2 ** -exponent`` (the landmark moved forward by
    ``exponent`` half-lives), in place; only its stored scale changes."""
    stored = profile.get(FIELD)
    if not stored:
        return
    try:
        raw = bytearray(base64.b64decode(stored, validate=True))
        (log_scale,) = _SCALE.unpack_from(raw)
    except (binascii.Error, ValueError, struct.error):
        profile.pop(FIELD, None)
        return
    _SCALE.pack_into(raw, 0, log_scale - exponent)
    profile[FIELD] = base64.b64encode(bytes(raw)).decode()


def item_matrix(vectors: Sequence[Mapping[int, float] | None]) -> sparse.csr_matrix:
    """The item vectors as a sparse (n, DIM) float64 CSR matrix, one row per item (an empty
    row for None or ``{}``)."""
    indptr = [0]
    indices: list[int] = []
    data: list[float] = []
    for vec in vectors:
        if vec:
            indices += vec.keys()
            data += vec.values()
        indptr.append(len(indices))
    return sparse.csr_matrix(
        (np.asarray(data, dtype=float), np.asarray(indices, dtype=np.int64), indptr),
        shape=(len(vectors), DIM),
    )


def similarity_rows(interests: Sequence[Mapping[int, float]], items: sparse.csr_matrix
                    ) -> npt.NDArray[np.float64]:
    """Cosine of each interest vector with each item row of ``items`` (unit-length rows, from
    :func:`item_matrix`), shape (len(interests), n), in [0, 1]; a row of 0 for an empty
    interest. The same values as :func:`feedpipe.model.text.similarity` per user."""
    m, n = len(interests), items.shape[0]
    if m == 0 or n == 0 or items.nnz == 0:
        return np.zeros((m, n))
    users = item_matrix(interests)
    norms = np.sqrt(np.asarray(users.multiply(users).sum(axis=1)).ravel())
    dots = np.asarray((users @ items.T).todense())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms[:, None] > 0, dots / norms[:, None], 0.0)
