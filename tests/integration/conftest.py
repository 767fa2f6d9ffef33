"""Fixtures of the integration tests: a module-scoped idempotent producer (the collector,
webhook and live CMS connector tests); for the live connector tests (``test_http_connectors_*``,
helpers in ``http_connectors_support``) a :class:`Tap` on ``cms.raw`` and a
:class:`~connectors.simulator.FixtureServer` per test.

Modules that define a fixture of the same name (``test_readapi_hardening``'s ``server``) keep
their own: a module's fixture takes precedence.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from http_connectors_support import Tap
from readapi_support import Tokens, World, make_tokens, seed_world

from connectors.simulator import FixtureServer
from feedpipe.kafka.producer import IdempotentProducer
from feedpipe.kafka.topics import TopicChange


@pytest.fixture(scope="module")
def producer(
    request: pytest.FixtureRequest, kafka_bootstrap: str, topics_applied: list[TopicChange]
) -> Iterator[IdempotentProducer]:
    """One idempotent producer per test module (client id ``test-<module>``), closed after it."""
    prod = IdempotentProducer(kafka_bootstrap, client_id=f"test-{request.module.__name__}")
    try:
        yield prod
    finally:
        prod.close()


@pytest.fixture()
def tap(kafka_bootstrap: str, topics_applied: list[TopicChange]) -> Tap:
    return Tap(kafka_bootstrap)


@pytest.fixture()
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def world(redis_url: str) -> Iterator[World]:
    """The read endpoint's test records (:func:`readapi_support.seed_world`), per module."""
    yield from seed_world(redis_url)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Tokens:
    """A keys file with one key per access profile (:func:`readapi_support.make_tokens`)."""
    return make_tokens(tmp_path_factory.mktemp("keys") / "api-keys.json")
