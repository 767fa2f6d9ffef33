"""Compact, language-aware text representation of items and readers' interest vectors.

An item's vector: the title, summary and body tokenised (Unicode words, lower-cased, tokens of
fewer than :data:`MIN_TOKEN` characters dropped: most function words of the languages we see),
stemmed with the Snowball stemmer of the item's language (``snowballstemmer``, 30+ languages:
English, Spanish, Danish, German, Czech for Slovak, ...; unknown languages are not stemmed),
hashed into :data:`DIM` dimensions (scikit-learn's ``HashingVectorizer``, the hashing trick of
Weinberger et al., "Feature Hashing for Large Scale Multitask Learning", ICML 2009), with
sublinear term frequency ``1 + log(tf)`` (Manning, Raghavan, Schütze, "Introduction to
Information Retrieval", 2008, 6.4.1), cut to its :data:`TOP_TERMS` heaviest terms and
L2-normalised. A sparse vector is a ``dict[int, float]`` (hashed term -> weight), small enough
to store with the item and in a profile.

A reader's interest vector is the exponentially time-decayed sum of the vectors of what they
read (:func:`interest_add`, forward decay as the profile's affinities), kept to its
:data:`TOP_TERMS` heaviest terms; the content similarity of an item is the cosine between the
two (:func:`similarity`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

DIM = 2**20
"""Hashed dimensions (collisions are rare at a few hundred terms per item)."""

TOP_TERMS = 48
"""Terms kept per item and per interest vector (bounds memory: ~12 bytes per term)."""

MIN_TOKEN = 4
"""Shortest token kept, in characters."""

SparseVec = dict[int, float]
"""A sparse vector: hashed term index -> weight."""

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

_LANGS = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "sk": "czech", "da": "danish",
    "nl": "dutch", "en": "english", "et": "estonian", "fi": "finnish", "fr": "french",
    "de": "german", "el": "greek", "hu": "hungarian", "id": "indonesian", "ga": "irish",
    "it": "italian", "lt": "lithuanian", "no": "norwegian", "nb": "norwegian",
    "nn": "norwegian", "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian",
    "sr": "serbian", "es": "spanish", "sv": "swedish", "tr": "turkish", "hi": "hindi",
}
"""ISO 639-1 code -> Snowball algorithm (Slovak uses the Czech stemmer, its closest)."""


@lru_cache(maxsize=64)
def _stemmer(lang: str | None) -> Any:
    import snowballstemmer

    name = _LANGS.get((lang or "").lower()[:2])
    return snowballstemmer.stemmer(name) if name else None


@lru_cache(maxsize=1)
def _hasher() -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=DIM, analyzer=lambda toks: toks, alternate_sign=False,
                             norm=None)


def tokens(text: str, lang: str | None) -> list[str]:
    """Stemmed tokens of ``text`` in language ``lang`` (ISO 639-1, e.g. ``en``; None or an
    unknown code: not stemmed)."""
    words = [w for w in _WORD.findall(text.lower()) if len(w) >= MIN_TOKEN]
    st = _stemmer(lang)
    return list(st.stemWords(words)) if st is not None and words else words


def encode(texts: Sequence[str | None], lang: str | None, top: int = TOP_TERMS) -> SparseVec:
    """The item vector of ``texts`` (title, summary, body; None entries skipped).

    Returns at most ``top`` terms, L2-normalised; ``{}`` when no token remains.
    """
    toks = [t for text in texts if text for t in tokens(text, lang)]
    if not toks:
        return {}
    row = _hasher().transform([toks]).tocsr()
    weights = 1.0 + np.log(row.data)
    order = np.lexsort((row.indices, -weights))[:top]
    vec = {int(row.indices[i]): float(weights[i]) for i in order}
    return _normalise(vec)


def _normalise(vec: Mapping[int, float]) -> SparseVec:
    norm = math.sqrt(sum(v * v for v in vec.values()))
    return {k: v / norm for k, v in vec.items()} if norm > 0 else {}


def interest_add(interest: Mapping[int, float],
                 item: Mapping[int, float] | Iterable[tuple[int, float]], weight: float,
                 top: int = TOP_TERMS) -> SparseVec:
    """``interest + weight * item``, kept to the ``top`` heaviest terms (ties by index).
    ``item``: a vector, or its ``(index, weight)`` pairs (as :class:`feedpipe.model.item.Meta`
    keeps them).

    ``weight`` is the read's forward-decay weight ``2 ** ((t - L) / H)`` (as the profile's
    affinities), so the sum is a time-decayed interest whose direction does not depend on
    "now". Returns a new dict.
    """
    out = dict(interest)
    get = out.get
    for k, v in item.items() if isinstance(item, Mapping) else item:
        out[k] = get(k, 0.0) + weight * v
    if len(out) > top:
        # (-weight, index) tuples sort natively: heaviest first, ties by index
        ranked = sorted([(-v, k) for k, v in out.items()])[:top]
        out = {k: -nv for nv, k in ranked}
    return out


def similarity(interest: Mapping[int, float], items: Sequence[Mapping[int, float] | None]
               ) -> npt.NDArray[np.float64]:
    """Cosine of the interest vector with each item vector, shape (len(items),), in [0, 1]
    (weights are non-negative); 0 for an empty interest or a missing item vector."""
    out = np.zeros(len(items))
    norm = math.sqrt(sum(v * v for v in interest.values()))
    if norm == 0:
        return out
    for i, vec in enumerate(items):
        if vec:
            dot = sum(w * interest.get(k, 0.0) for k, w in vec.items())
            out[i] = dot / norm  # item vectors are unit length
    return out


def to_json(vec: Mapping[int, float]) -> list[list[float]]:
    """A compact JSON form: ``[[index, weight rounded to 4 decimals], ...]``."""
    return [[int(k), round(float(v), 4)] for k, v in vec.items()]


def from_json(data: Sequence[Sequence[float]] | None) -> SparseVec:
    """Inverse of :func:`to_json`; None -> ``{}``.

    Raises:
        ValueError: an entry is not an ``[index, weight]`` pair of numbers.
    """
    out: SparseVec = {}
    for pair in data or ():
        if len(pair) != 2:
            raise ValueError(f"text vector entry {pair!r} is not [index, weight]")
        out[int(pair[0])] = float(pair[1])
    return out
