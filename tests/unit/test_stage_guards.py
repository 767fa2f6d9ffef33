"""Pure guards of the stages (no Kafka, no Redis)."""

from __future__ import annotations


def test_enrich_guard_orders_by_update_time_and_applies_bare_deletes() -> None:
    from streams.stages.enrich import newer

    stored = {"content_hash": "h1", "status": "published", "updated_at": 2_000}
    assert not newer({"content_hash": "h1", "status": "published", "updated_at": 2_000}, stored)
    assert newer({"content_hash": "h2", "status": "published", "updated_at": 3_000}, stored)
    assert not newer({"content_hash": "h0", "status": "published", "updated_at": 1_000}, stored)
    assert newer({"content_hash": "h3", "status": "unpublished", "updated_at": None}, stored)
    assert not newer({"content_hash": "h3", "status": "unpublished", "updated_at": 1_000}, stored)
    assert newer({"content_hash": "h1", "status": "published", "updated_at": 1}, None)
