"""schemathesis against the served OpenAPI document: every operation, stateless, no 5xx and no
response that breaks the document (status codes, content types, bodies).

The server runs for real on loopback in a thread with its own event loop, over the in-process
simulator, as the operator; the live event stream is left out (it never ends by design).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gpushop_tui.api.app import build_api
from gpushop_tui.api.deps import ApiState
from gpushop_tui.api.tokens import TokenBook
from gpushop_tui.config import load_settings
from gpushop_tui.core import Shopper
from gpushop_tui.demo import demo_marketplace
from gpushop_tui.sim.http import serve

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EVENTS = "/api/v1/events"
"""The live event stream: it never ends by design, so it is not fuzzed."""


@asynccontextmanager
async def served_api(home: Path) -> AsyncIterator[tuple[str, str]]:
    settings = load_settings({"GPUSHOP_HOME": str(home)})
    settings.paths.prepare()
    async with demo_marketplace(settings) as demo:
        shopper = await Shopper.open(demo.settings, secrets=demo.secrets)
        tokens = TokenBook.open(demo.settings.paths.data_dir)
        api = ApiState(shopper, tokens)
        api.ready.set()
        served = await serve(build_api(api))
        try:
            yield served.origin, tokens.admin
        finally:
            await served.stop()
            await shopper.aclose()


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(origin, operator token) of a live server in a background thread."""
    started = threading.Event()
    stop: asyncio.Event | None = None
    where: list[tuple[str, str]] = []
    loop = asyncio.new_event_loop()

    async def run() -> None:
        nonlocal stop
        stop = asyncio.Event()
        async with served_api(tmp_path_factory.mktemp("api-home")) as address:
            where.append(address)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(60), "the API server did not start"
    try:
        yield where[0]
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)


@pytest.fixture(scope="module")
def api_schema(api_server: tuple[str, str]) -> Any:
    origin, _ = api_server
    return schemathesis.openapi.from_url(f"{origin}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path=EVENTS)
"""The exclusion sits on the lazy schema: schemathesis replaces the fixture schema's own filters."""


def test_every_operation_but_the_event_stream_is_fuzzed(api_schema: Any) -> None:
    every = {result.ok().path for result in api_schema.get_all_operations()}
    fuzzed = api_schema.clone(filter_set=schema.filter_set).get_all_operations()
    assert EVENTS in every
    assert {result.ok().path for result in fuzzed} == every - {EVENTS}


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_keeps_to_the_document(case: Any, api_server: tuple[str, str]) -> None:
    assert case.operation.path != EVENTS
    origin, token = api_server
    case.call_and_validate(
        base_url=origin, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
