"""The live offer menu: every configured provider fetched concurrently, cached, never blanked.

Each provider has its own cache (fresh for `ttl_s`) and timeout. When a refresh fails, the last
good offers stay, marked stale with their age and the reason; a provider that is down or not
configured never hides the others. Offers that failed to provision are demoted, and hidden for
a while after repeated failures (remembered in the store, so it survives a restart). A query
that names a model gets each offer's estimated $ per million tokens (core/benchmarks.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from gpushop_tui.clock import Clock
from gpushop_tui.core.benchmarks import Benchmarks, estimate
from gpushop_tui.core.events import EventBus, InventoryRefreshed
from gpushop_tui.models import Benchmark, Offer, OfferQuery
from gpushop_tui.providers.base import Provider, ProviderError
from gpushop_tui.providers.registry import PROVIDERS
from gpushop_tui.query import OfferIndex, select
from gpushop_tui.store import Store

log = logging.getLogger(__name__)

FAILURE_LOOKBACK = timedelta(hours=24)
"""Failures older than this no longer demote an offer."""
HIDE_AFTER_FAILURES = 3
HIDE_FOR = timedelta(minutes=30)

ProviderHealth = Literal["ok", "stale", "error", "not configured"]


@dataclass(frozen=True)
class ProviderReport:
    """How one provider's part of the menu stands."""

    provider: str
    status: ProviderHealth
    offers: int = 0
    fetched_at: datetime | None = None
    age_s: float | None = None
    error: str | None = None
    latency_ms: float | None = None

    def describe(self) -> str:
        """One line for a status bar or table footer."""
        if self.status == "ok":
            return f"{self.provider}: {self.offers} offers"
        if self.status == "stale":
            return (
                f"{self.provider}: {self.offers} offers, stale ({_age(self.age_s)} old): "
                f"{self.error}"
            )
        if self.status == "error":
            return f"{self.provider}: unavailable: {self.error}"
        return f"{self.provider}: not configured"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown age"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


@dataclass(frozen=True)
class InventoryView:
    """One answer to a query over the menu."""

    offers: list[Offer]
    providers: list[ProviderReport]
    total: int
    """Offers known before the query was applied."""
    hidden: int
    """Offers left out because they failed to provision repeatedly of late."""
    usd_per_mtok: dict[str, float] = field(default_factory=dict)
    """Estimated $ per million tokens of the query's model, per shown offer id that has one."""


@dataclass
class _Cache:
    index: OfferIndex = field(default_factory=OfferIndex)
    fetched_at: datetime | None = None
    fetched_mono: float | None = None
    error: str | None = None
    latency_ms: float | None = None
    refreshing: asyncio.Task[None] | None = None


class Inventory:
    """Offers across providers; `providers` maps every known provider to its adapter or None.

    `benchmarks` (the measurements a query's model is priced by) is part of the menu's answer.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider | None],
        *,
        clock: Clock,
        store: Store,
        events: EventBus | None = None,
        ttl_s: float = 60.0,
        timeout_s: float = 20.0,
    ) -> None:
        self._providers = {name: providers.get(name) for name in PROVIDERS}
        self._clock = clock
        self._store = store
        self._events = events
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._caches = {name: _Cache() for name in PROVIDERS}
        self.benchmarks = Benchmarks(store)

    @property
    def configured(self) -> list[str]:
        return [name for name, adapter in self._providers.items() if adapter is not None]

    async def view(
        self, query: OfferQuery | None = None, *, refresh: bool = False
    ) -> InventoryView:
        """The menu for `query`, refreshing (concurrently) every provider whose cache is old."""
        query = query or OfferQuery()
        measured = await self._measured(query)
        wanted = [
            name
            for name in self.configured
            if (refresh or self._expired(name)) and (not query.providers or name in query.providers)
        ]
        await asyncio.gather(*(self._refresh(name) for name in wanted))
        return await self._answer(query, measured)

    def refresh_in_background(self) -> None:
        """Start refreshing every expired provider without waiting (stale-while-revalidate)."""
        for name in self.configured:
            if self._expired(name):
                self._start_refresh(name)

    async def cached_view(self, query: OfferQuery | None = None) -> InventoryView:
        """The menu as cached now, without waiting for any provider."""
        query = query or OfferQuery()
        return await self._answer(query, await self._measured(query))

    async def _measured(self, query: OfferQuery) -> list[Benchmark]:
        """The measurements of the query's model (none without one; an unknown model is a
        `UnknownModel` error), read before any provider is asked."""
        return await self.benchmarks.measurements(query.model) if query.model else []

    def _expired(self, name: str) -> bool:
        cache = self._caches[name]
        if cache.fetched_mono is None or cache.error is not None:
            return True
        return self._clock.monotonic() - cache.fetched_mono >= self._ttl_s

    def _start_refresh(self, name: str) -> asyncio.Task[None]:
        cache = self._caches[name]
        if cache.refreshing is None or cache.refreshing.done():
            cache.refreshing = asyncio.create_task(self._fetch(name))
        return cache.refreshing

    async def _refresh(self, name: str) -> None:
        await asyncio.shield(self._start_refresh(name))

    async def _fetch(self, name: str) -> None:
        adapter = self._providers[name]
        assert adapter is not None
        cache = self._caches[name]
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                offers = await adapter.list_offers()
        except (ProviderError, TimeoutError) as err:
            reason = err.message if isinstance(err, ProviderError) else "no answer in time"
            cache.error = reason
            log.warning("inventory: %s refresh failed: %s", name, reason)
            await self._publish(name, len(cache.index), ok=False)
            return
        except Exception:  # a bug in one adapter must not blank the whole menu
            log.exception("inventory: %s refresh failed unexpectedly", name)
            cache.error = "unexpected error (details in the log file)"
            await self._publish(name, len(cache.index), ok=False)
            return
        cache.index = OfferIndex(offers)
        cache.fetched_at = self._clock.now()
        cache.fetched_mono = self._clock.monotonic()
        cache.error = None
        cache.latency_ms = (self._clock.monotonic() - started) * 1000
        await self._publish(name, len(offers), ok=True)

    async def _publish(self, name: str, count: int, *, ok: bool) -> None:
        if self._events is not None:
            message = f"{name}: {count} offers" + ("" if ok else " (refresh failed)")
            await self._events.publish(
                InventoryRefreshed(message=message, provider=name, offers=count, ok=ok)
            )

    def report(self, name: str) -> ProviderReport:
        """Where provider `name` stands now."""
        cache = self._caches[name]
        if self._providers[name] is None:
            return ProviderReport(name, "not configured")
        age = (
            self._clock.monotonic() - cache.fetched_mono if cache.fetched_mono is not None else None
        )
        if cache.error is None and cache.fetched_at is not None:
            status: ProviderHealth = "ok"
        elif cache.fetched_at is not None:
            status = "stale"
        else:
            status = "error"
        return ProviderReport(
            name,
            status,
            offers=len(cache.index),
            fetched_at=cache.fetched_at,
            age_s=age,
            error=cache.error,
            latency_ms=cache.latency_ms,
        )

    async def _answer(self, query: OfferQuery, measured: list[Benchmark]) -> InventoryView:
        now = self._clock.now()
        failures = await self._store.offer_failures_since(now - FAILURE_LOOKBACK)
        hidden_ids = {
            offer_id
            for offer_id, (count, latest) in failures.items()
            if count >= HIDE_AFTER_FAILURES and now - latest < HIDE_FOR
        }
        everything = OfferIndex.merge(cache.index for cache in self._caches.values())
        visible = everything.without(hidden_ids) if hidden_ids else everything
        estimates = estimate(visible, measured) if measured else {}
        offers = select(visible, query, demoted=failures.keys(), usd_per_mtok=estimates)
        return InventoryView(
            offers=offers,
            providers=[self.report(name) for name in PROVIDERS],
            total=len(everything),
            hidden=len(everything) - len(visible),
            usd_per_mtok={o.id: estimates[o.id] for o in offers if o.id in estimates},
        )

    async def find(self, offer_id: str) -> Offer | None:
        """The offer with this id from its provider's menu, refreshed if old or not found."""
        name = offer_id.split(":", 1)[0]
        if name not in self._caches or self._providers[name] is None:
            return None
        refreshed = self._expired(name)
        if refreshed:
            await self._refresh(name)
        found = self._caches[name].index.find(offer_id)
        if found is None and not refreshed:
            await self._refresh(name)
            found = self._caches[name].index.find(offer_id)
        return found

    async def record_failure(
        self, offer: Offer, reason: str, *, session_id: str | None = None
    ) -> None:
        """Remember that renting `offer` failed, so the menu demotes (then hides) it."""
        await self._store.add_offer_failure(
            offer.id,
            offer.provider,
            reason,
            self._clock.now(),
            gpu_name=offer.gpu_name,
            session_id=session_id,
        )

    async def aclose(self) -> None:
        tasks = [c.refreshing for c in self._caches.values() if c.refreshing is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(a.aclose() for a in self._providers.values() if a is not None))
