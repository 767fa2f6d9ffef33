"""A/B results of the read endpoint (scope ``admin``): ``/v1/experiments`` lists the
experiments, ``/v1/experiments/{experiment}`` gives the CTR per arm with its Wilson 95 %
interval, from the ``fp:ab:{experiment}`` counters."""

from __future__ import annotations

import math
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from readapi.caching import PRIVATE, cached_json, json_error
from readapi.params import path_id
from readapi.routes import store_of
from readapi.store import Json

Z95 = 1.959963984540054
"""Two-sided 95 % normal quantile for the Wilson interval."""


def wilson_interval(clicks: int, impressions: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (Wilson, JASA 22:209, 1927); ``None``
    without impressions. Returns (low, high) within [0, 1]."""
    if impressions <= 0:
        return None
    n = float(impressions)
    p = min(1.0, clicks / n)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ab_results(experiment: str, fields: Mapping[str, str]) -> Json:
    """CTR per arm from an ``fp:ab:{experiment}`` hash.

    Fields ``{arm}:impressions`` and ``{arm}:clicks`` (non-negative integers) are read; any
    other field or a non-integer value is listed in ``ignored_fields`` instead of failing.
    Returns ``{"experiment", "arms": [{"arm", "impressions", "clicks", "ctr", "ctr_ci95"}],
    "ignored_fields"}``, arms sorted by name; ``ctr`` = clicks / impressions (``null`` without
    impressions), ``ctr_ci95`` the Wilson 95 % interval.
    """
    arms: dict[str, dict[str, int]] = {}
    ignored: list[str] = []
    for field, value in sorted(fields.items()):
        arm, _, metric = field.rpartition(":")
        try:
            count = int(value)
        except ValueError:
            count = -1
        if not arm or metric not in ("impressions", "clicks") or count < 0:
            ignored.append(field)
            continue
        arms.setdefault(arm, {"impressions": 0, "clicks": 0})[metric] = count
    out = []
    for arm, c in sorted(arms.items()):
        imps, clicks = c["impressions"], c["clicks"]
        ci = wilson_interval(clicks, imps)
        out.append(
            {
                "arm": arm,
                "impressions": imps,
                "clicks": clicks,
                "ctr": clicks / imps if imps else None,
                "ctr_ci95": list(ci) if ci else None,
            }
        )
    return {"experiment": experiment, "arms": out, "ignored_fields": ignored}


async def list_experiments(request: Request) -> Response:
    """GET /v1/experiments: ``{"experiments": [name, ...]}`` from ``fp:ab:experiments``."""
    names = await store_of(request).experiments()
    return cached_json(request, {"experiments": names}, PRIVATE)


async def get_experiment(request: Request) -> Response:
    """GET /v1/experiments/{experiment}: :func:`ab_results`; 404 for an unknown experiment."""
    name = path_id(request, "experiment")
    fields = await store_of(request).ab_counts(name)
    if fields is None:
        return json_error(request, 404, "not found")
    return cached_json(request, ab_results(name, fields), PRIVATE)
