"""schemathesis against the served OpenAPI document: a real ``python -m readapi`` process (uvicorn)
on a real Redis holding the synthetic world of test_readapi.py.

Generated requests (valid and invalid) go to every operation with an admin key; schemathesis'
checks (no 5xx, status codes and headers documented, response bodies valid against the schemas,
content types, auth enforced) must all pass. Known ids of the world are also sent explicitly so
the personalised, content, profile and A/B schemas are checked against real bodies, not only
against 404s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from readapi_support import Tokens, World
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served_api(
    redis_url: str, world: World, tokens: Tokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "FEEDPIPE_REDIS_URL": redis_url,
        "FEEDPIPE_API_PORT": str(port),
        "FEEDPIPE_API_HOST": "127.0.0.1",
        "FEEDPIPE_API_KEYS_FILE": str(tokens.path),
        "FEEDPIPE_API_ACCESS_LOG": "false",
        "FEEDPIPE_STATE_DIR": str(tmp_path_factory.mktemp("api-state")),
    }
    log = tmp_path_factory.mktemp("api-log") / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "readapi"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"read endpoint did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Invalid input may also be refused by the gateway's size limits before routing (413 body,
# 414 path or query, 431 headers; documented on every operation): rejections too.
REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "414", "415", "422", "428",
            "429", "431", "5xx"]


@pytest.fixture(scope="module")
def api_schema(served_api: str) -> Any:
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REJECTED}}}
    )
    return schemathesis.openapi.from_url(f"{served_api}/openapi.json", config=config)


EXAMPLES_PER_OPERATION = 40
"""Hypothesis examples per operation and generation mode (valid, then invalid inputs)."""


def test_api_conforms_to_its_openapi_document(
    api_schema: Any,
    served_api: str,
    tokens: Tokens,
) -> None:
    # Driven by hand (operation.as_strategy + hypothesis.given) rather than through
    # schemathesis' pytest plugin, which does not load under this pytest version.
    headers = {"X-API-Key": tokens.admin}
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {op.label for op in operations}
    # schemathesis leaves out the operation serving the document it was loaded from.
    assert labels == {f"GET {path}" for path in api_schema.raw_schema["paths"]} - {
        "GET /openapi.json"
    }
    calls = 0
    for operation in operations:
        has_params = bool(api_schema.raw_schema["paths"][operation.path]["get"].get("parameters"))
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_params else [])
        for mode in modes:  # nothing to make invalid in an operation without parameters

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                derandomize=True,  # the same examples on every run, as CI needs
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                case.call_and_validate(base_url=served_api, headers=headers)

            try:
                run()
            except Exception as exc:  # collect every operation's failure, then fail once
                failures.append(f"{operation.label} [{mode.value}]: {exc}"[:3000])
    assert not failures, "\n\n".join(failures)
    assert calls >= len(operations) * 2


def test_known_resources_conform(
    api_schema: Any,
    served_api: str,
    world: World,
    tokens: Tokens,
) -> None:
    headers = {"X-API-Key": tokens.admin}
    calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("/v1/feeds/{user_id}", {"user_id": world.user}, {"explain": "true", "limit": 3}),
        ("/v1/feeds/{user_id}", {"user_id": world.user}, {"brand": world.brand_b}),
        ("/v1/feeds/{user_id}", {"user_id": f"nobody-{world.tag}"}, {"brand": world.brand_a}),
        ("/v1/feeds/{user_id}", {"user_id": f"nobody-{world.tag}"}, {"brand": world.brand_b}),
        ("/v1/content/{content_id}", {"content_id": world.c[1]}, {}),
        ("/v1/profiles/{user_id}", {"user_id": world.user}, {}),
        ("/v1/experiments/{experiment}", {"experiment": world.experiment}, {}),
        ("/v1/trending", {}, {"brand": world.brand_a}),
    ]
    sources = set()
    for path, path_params, query in calls:
        operation = api_schema[path]["GET"]
        case = operation.Case(path_parameters=path_params, query=query)
        resp = case.call_and_validate(base_url=served_api, headers=headers)
        assert resp.status_code == 200, (path, resp.text[:300])
        if path.startswith("/v1/feeds"):
            sources.add(resp.json()["source"])
    assert sources == {"personalised", "trending", "latest"}
