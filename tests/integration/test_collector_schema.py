"""schemathesis against the collector's OpenAPI document: the collector on a real uvicorn
server and a real Kafka broker, every operation called with generated requests.

Valid requests must pass schemathesis' checks (no 5xx, documented status codes, headers and
content types, bodies valid against the response schemas, auth enforced). For invalid ones
(generated to break the request schema) the collector must refuse the request (4xx) or, when
only events inside the batch are invalid, answer 202 listing at least one refused event: that is
the documented per-event contract, so schemathesis' own negative-data check is replaced by that
assertion here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from collector_support import Keys, make_keys, serve
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from connectors.collector.openapi import openapi_document
from feedpipe.kafka.producer import IdempotentProducer

pytestmark = pytest.mark.integration

EXAMPLES = 60
"""Hypothesis examples per operation and generation mode."""

BATCH = jsonschema_rs.Draft202012Validator(
    {"$ref": "#/components/schemas/EventBatch", "components": openapi_document()["components"]},
    validate_formats=True,
)
"""The request body schema of ``POST /v1/events``, formats checked: schemathesis' negative mode
can emit a case whose body conforms to it (schemathesis issue #2900, a mutation that lands on
nothing the operation declares), which the collector rightly accepts."""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("collector-keys") / "api-keys.json")


@pytest.fixture(scope="module")
def collector_url(producer: IdempotentProducer, keys: Keys) -> Iterator[str]:
    with serve(producer, keys.path, ack_timeout_s=30.0) as srv:
        yield f"http://127.0.0.1:{srv.port}"


def checker(
    operation: Any, mode: GenerationMode, base: str, headers: dict[str, str], seen: set[int]
) -> Any:
    """A hypothesis test calling ``operation`` with generated ``mode`` requests."""
    negative = mode is GenerationMode.NEGATIVE

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same examples on every run
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        resp = case.call_and_validate(base_url=base, headers=headers)
        seen.add(resp.status_code)
        if negative and resp.status_code == 202:
            conforms = isinstance(case.body, dict) and BATCH.is_valid(case.body)
            accepted_invalid = not conforms and resp.json()["rejected"] == 0
            assert not accepted_invalid, f"invalid input accepted: {case.body!r}"
        elif negative:  # refused, or 503: not acknowledged in time on a loaded machine
            assert 400 <= resp.status_code < 500 or resp.status_code == 503, resp.text[:300]

    return run


def test_collector_conforms_to_its_openapi_document(
    collector_url: str,
    keys: Keys,
) -> None:
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"enabled": False}}}
    )
    schema = schemathesis.openapi.from_url(f"{collector_url}/openapi.json", config=config)
    headers = {"X-API-Key": keys.writer}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {"POST /v1/events", "GET /healthz", "GET /metrics"}
    failures: list[str] = []
    seen: dict[str, set[int]] = {"positive": set(), "negative": set()}
    for operation in operations:
        modes = [GenerationMode.POSITIVE]
        if operation.method.upper() == "POST":
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            try:
                checker(operation, mode, collector_url, headers, seen[mode.value])()
            except Exception as exc:  # collect every operation's failure, then fail once
                failures.append(f"{operation.label} [{mode.value}]: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    assert 202 in seen["positive"], seen  # valid batches were accepted, not only refused
    assert any(400 <= s < 500 for s in seen["negative"]), seen
