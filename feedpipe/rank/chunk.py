"""One chunk of users' ranking columns, gathered for their feeds
(:func:`feedpipe.rank.rankers.rank_feeds`; numpy, no I/O): the feature arrays of (users x
items) and their values at each user's selected items."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from feedpipe.rank.candidates import SOURCE_NAMES, sources_of
from feedpipe.rank.components import Array
from feedpipe.topology import RANKER_COMPONENTS

LEARNED = RANKER_COMPONENTS["learned"]
EDITORIAL = ("category", "bias", "freshness")
FEATURES = {"affinity": ("affinity", "recency", "engagement"), "learned": LEARNED,
            "editorial": EDITORIAL}
"""Each ranker's features (score components before weighting), in feed item order."""

SOURCE_TABLE: list[list[str]] = [sources_of(b) for b in range(2 * max(SOURCE_NAMES))]
""":func:`feedpipe.rank.candidates.sources_of` of every bit set, one shared list each (the
compact feed store groups items by the identity of their descriptive values)."""


@dataclass(frozen=True, slots=True)
class ChunkFeatures:
    """The feature arrays of one chunk of users (rows) x the matrix items (columns): ``aff``,
    ``rec`` (m, n), ``eng`` (n,), ``learned`` name -> (m, n) or None, ``fresh`` (m, n) or
    None, ``cat_cols`` brand code -> (n,) editorial category weights, ``bias`` (n,)."""

    aff: Array
    rec: Array
    eng: Array
    learned: dict[str, Array] | None
    fresh: Array | None
    cat_cols: dict[int, Array]
    bias: Array

    def block(self, ranker: str, row: int, sel: npt.NDArray[np.intp], code: int) -> Array:
        """(len(sel), w) values of ``ranker``'s features (:data:`FEATURES` order) of the
        chunk's user ``row`` on the matrix rows ``sel`` of brand ``code``."""
        if ranker == "affinity":
            return np.column_stack((self.aff[row, sel], self.rec[row, sel], self.eng[sel]))
        if ranker == "learned":
            assert self.learned is not None
            return np.column_stack([self.learned[k][row, sel] for k in LEARNED])
        assert self.fresh is not None
        return np.column_stack(
            (self.cat_cols[code][sel], self.bias[sel], self.fresh[row, sel]))


class Gathered:
    """A chunk's per-user values at the selected items: gathered for all users in a few
    calls when every selection has the same length (full feeds, the usual case), else
    read per user. ``picks`` per user its selected matrix rows; ``score`` (m, n); ``bits``
    (m, n) source bits or None; ``codes`` (n,) brand codes."""

    def __init__(self, picks: list[npt.NDArray[np.intp]], score: Array,
                 bits: npt.NDArray[np.int64] | None, codes: npt.NDArray[np.int64],
                 feat: ChunkFeatures) -> None:
        self._score, self._bits, self._codes, self._feat = score, bits, codes, feat
        self._aff: Array | None = None
        same = bool(picks) and len(picks[0]) > 0 and all(len(p) == len(picks[0]) for p in picks)
        self._sel = np.stack(picks) if same else None
        self._rows = np.arange(len(picks))[:, None]
        self._scores: Array | None = None
        self._bits_sel: npt.NDArray[np.int64] | None = None
        self._uniform: list[bool] = []
        if self._sel is not None:
            self._scores = score[self._rows, self._sel]
            if bits is not None:
                self._bits_sel = bits[self._rows, self._sel]
            code_sel = codes[self._sel]
            self._uniform = (code_sel == code_sel[:, :1]).all(axis=1).tolist()

    def one_brand(self, row: int, sel: npt.NDArray[np.intp]) -> bool:
        """Whether all of user ``row``'s selected items ``sel`` are of one brand."""
        if self._uniform:
            return self._uniform[row]
        code_sel = self._codes[sel]
        return bool((code_sel == code_sel[0]).all())

    def scores_of(self, row: int, sel: npt.NDArray[np.intp]) -> Array:
        """(len(sel),) scores of user ``row``'s selection ``sel``."""
        return self._scores[row] if self._scores is not None else self._score[row, sel]

    def bits_of(self, row: int, sel: npt.NDArray[np.intp]) -> npt.NDArray[np.int64] | None:
        """(len(sel),) source bits of user ``row``'s selection ``sel``; None without sources."""
        if self._bits_sel is not None:
            return self._bits_sel[row]
        return self._bits[row, sel] if self._bits is not None else None

    def block(self, ranker: str, row: int, sel: npt.NDArray[np.intp], code: int) -> Array:
        """:meth:`ChunkFeatures.block`; for the ``affinity`` ranker on a gathered chunk, a
        row of the (m, k, 3) features gathered for every user on first use."""
        if ranker != "affinity" or self._sel is None:
            return self._feat.block(ranker, row, sel, code)
        if self._aff is None:
            f, rows, s = self._feat, self._rows, self._sel
            self._aff = np.stack((f.aff[rows, s], f.rec[rows, s], f.eng[s]), axis=2)
        return self._aff[row]
