"""Fixtures of the live CMS connector tests (``test_http_connectors_*``; helpers in
``http_connectors_support``): a module-scoped idempotent producer, a :class:`Tap` on
``cms.raw`` and a :class:`~connectors.simulator.FixtureServer` per test.

Modules that define a fixture of the same name (``test_webhook``'s ``producer``,
``test_readapi_hardening``'s ``server``) keep their own: a module's fixture takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_connectors_support import Tap

from connectors.simulator import FixtureServer
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.kafka.topics import TopicChange


@pytest.fixture(scope="module")
def producer(
    kafka_bootstrap: str, topics_applied: list[TopicChange]
) -> Iterator[IdempotentProducer]:
    prod = IdempotentProducer(kafka_bootstrap, client_id="test-http-connectors")
    yield prod
    prod.close()


@pytest.fixture()
def tap(kafka_bootstrap: str, topics_applied: list[TopicChange]) -> Tap:
    return Tap(kafka_bootstrap)


@pytest.fixture()
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        yield srv
