"""The byte-wide label test of the affinity source (feedpipe.rank.candidates.label_any)
equals the float sums it replaces (label_sums > 0) and the one-hot products."""

from __future__ import annotations

import numpy as np

from feedpipe.model.item import label_slots
from feedpipe.rank.candidates import label_any, label_sums


def test_label_any_equals_label_sums_and_the_one_hot_product() -> None:
    rng = np.random.default_rng(3)
    for trial in range(50):
        m, n, labels = int(rng.integers(1, 30)), int(rng.integers(1, 300)), int(rng.integers(1, 40))
        onehot = (rng.random((n, labels)) < rng.uniform(0.0, 0.2)).astype(np.float64)
        flags = rng.random((m, labels)) < rng.uniform(0.0, 0.5)
        slots = label_slots(onehot)
        got = label_any(flags, slots)
        assert got.dtype == np.bool_
        assert (got == (label_sums(flags.astype(np.float64), slots) > 0)).all(), trial
        assert (got == (flags.astype(np.float64) @ onehot.T > 0)).all(), trial
