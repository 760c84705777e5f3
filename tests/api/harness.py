"""Drive the JSON API over a fake-clock core and the in-process simulator.

`api_market()` builds the real FastAPI app over a `Market` (tests/core/market.py) and an httpx
client talking to it in-process, authenticated as the operator. `ApiRide.call()` awaits a
request while moving the fake clock whenever the core waits on it (a rental's create call),
so a test reads what the API truly answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi import FastAPI

from gpushop_tui.api.app import build_api
from gpushop_tui.api.deps import ApiState
from gpushop_tui.api.tokens import TokenBook
from gpushop_tui.core import Shopper
from tests.core.market import Market, open_market

T = TypeVar("T")
BASE = "http://127.0.0.1"


@dataclass
class ApiRide:
    market: Market
    api: ApiState
    app: FastAPI
    client: httpx.AsyncClient
    tokens: TokenBook

    @property
    def shopper(self) -> Shopper:
        return self.market.shopper

    async def call(self, request: Awaitable[T], limit_s: float = 600) -> T:
        """Await an API call, moving fake time while the core waits on the clock."""
        return await self.market.run(request, limit_s=limit_s)

    def client_as(self, token: str | None) -> httpx.AsyncClient:
        """Another in-process client with `token` (None: no Authorization header)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=BASE, headers=headers
        )


@asynccontextmanager
async def api_market(
    monkeypatch: pytest.MonkeyPatch,
    home: Path,
    *,
    providers: tuple[str, ...] = ("vastai", "tensordock", "bluelobster"),
    ready: bool = True,
) -> AsyncIterator[ApiRide]:
    """The API over a `Market` core; `ready` marks startup recovery as done."""
    async with open_market(monkeypatch, home, providers=providers) as market:
        tokens = TokenBook.open(market.shopper.settings.paths.data_dir)
        api = ApiState(market.shopper, tokens)
        if ready:
            api.ready.set()
        app = build_api(api)
        ride = ApiRide(market, api, app, httpx.AsyncClient(), tokens)
        async with ride.client_as(tokens.admin) as client:
            ride.client = client
            yield ride
