"""The live offer menu: every configured provider fetched concurrently, cached, never blanked.

Each provider has its own cache (fresh for `ttl_s`) and timeout. When a refresh fails, the last
good offers stay, marked stale with their age and the reason; a provider that is down or not
configured never hides the others. A provider whose whole-market answer was capped cannot
answer every query from it: a query with filters is then sent to that provider itself (it
pushes down what it can), and that answer is cached for the query, for `ttl_s` too. Offers that
failed to provision are demoted, and hidden for a while after repeated failures (remembered in
the store, so it survives a restart). A query that names a model gets each offer's estimated
$ per million tokens (core/benchmarks.py), and which of them rest on gpushop's own measurements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from gpushop_tui.clock import Clock
from gpushop_tui.core.benchmarks import Benchmarks, estimates
from gpushop_tui.core.events import EventBus, InventoryRefreshed
from gpushop_tui.models import Benchmark, Offer, OfferQuery
from gpushop_tui.providers.base import OfferList, Provider, ProviderError
from gpushop_tui.providers.registry import PROVIDERS
from gpushop_tui.query import OfferIndex, select
from gpushop_tui.store import Store

log = logging.getLogger(__name__)

FAILURE_LOOKBACK = timedelta(hours=24)
"""Failures older than this no longer demote an offer."""
HIDE_AFTER_FAILURES = 3
HIDE_FOR = timedelta(minutes=30)
NARROWED_KEPT = 16
"""Per provider, the answers to this many recent queries are kept (a capped market only)."""
LISTED_KEPT = 200_000
"""Per provider, at most this many offer ids are remembered as once listed (then it restarts)."""

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
    truncated: bool = False
    """The provider's answer was capped: it holds more offers than these."""

    def describe(self) -> str:
        """One line for a status bar or table footer."""
        if self.status == "ok":
            return f"{self.provider}: {self.offers} offers"
        if self.status == "stale":
            return (
                f"{self.provider}: {self.offers} offers, stale ({_age(self.age_s)} old): "
                f"{self.error or 'the last refresh failed'}"
            )
        if self.status == "error":
            return f"{self.provider}: unavailable: {self.error or 'no answer yet'}"
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
    """Where each provider the query asks stands (every provider when it names none)."""
    total: int
    """Offers known before the query was applied."""
    hidden: int
    """Offers left out because they failed to provision repeatedly of late."""
    usd_per_mtok: dict[str, float] = field(default_factory=dict)
    """Estimated $ per million tokens of the query's model, per shown offer id that has one."""
    measured: frozenset[str] = frozenset()
    """The shown offer ids whose estimate rests (at least in part) on tokens/s gpushop measured
    on its own sessions' nodes, not only on shipped or imported measurements."""


@dataclass(frozen=True)
class _Narrowed:
    """One provider's answer to one query's own search."""

    index: OfferIndex
    fetched_mono: float
    truncated: bool
    fetched_at: datetime


@dataclass
class _Cache:
    index: OfferIndex = field(default_factory=OfferIndex)
    fetched_at: datetime | None = None
    fetched_mono: float | None = None
    error: str | None = None
    latency_ms: float | None = None
    truncated: bool = False
    """The whole-market answer was capped: queries with filters ask the provider themselves."""
    narrowed: dict[str, _Narrowed] = field(default_factory=dict)
    """Answers to queries' own searches, by `_filters_key`, oldest first."""
    refreshing: asyncio.Task[None] | None = None
    listed: set[str] = field(default_factory=set)
    """Ids of every offer this process has seen the provider list (a taken one is among them)."""

    def note_listed(self, offers: list[Offer]) -> None:
        """Remember these offers as listed; bounded by starting again from them when full."""
        if len(self.listed) + len(offers) > LISTED_KEPT:
            self.listed.clear()
        self.listed.update(o.id for o in offers)


def _filters_key(query: OfferQuery) -> str | None:
    """What a provider's search could narrow by in `query` (its filters), as a cache key; None
    for a query without filters, which the whole-market answer serves however capped."""
    filters = query.model_copy(
        update={"providers": (), "model": None, "sort": "price", "descending": False, "limit": None}
    )
    return None if filters == OfferQuery() else filters.model_dump_json()


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
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryView:
        """The menu for `query`, refreshing (concurrently) every provider whose cache is old.

        With `whole_menu=False` (a one-shot command, which keeps nothing for later) a query with
        filters is sent to each provider as its own search instead of fetching the whole market
        and filtering it here: the same offers, a smaller answer.
        """
        query = query or OfferQuery()
        measurements = await self._measurements(query)
        key = _filters_key(query)
        asked = [name for name in self.configured if not query.providers or name in query.providers]
        if key is not None and not whole_menu:
            stale = [name for name in asked if refresh or self._narrowed(name, key) is None]
            await asyncio.gather(*(self._narrow(name, query, key, alone=True) for name in stale))
            return await self._answer(query, measurements)
        wanted = [name for name in asked if refresh or self._expired(name)]
        await asyncio.gather(*(self._refresh(name) for name in wanted))
        if key is not None:
            capped = [
                name
                for name in asked
                if self._caches[name].truncated and (refresh or self._narrowed(name, key) is None)
            ]
            await asyncio.gather(*(self._narrow(name, query, key) for name in capped))
        return await self._answer(query, measurements)

    def refresh_in_background(self) -> None:
        """Start refreshing every expired provider without waiting (stale-while-revalidate)."""
        for name in self.configured:
            if self._expired(name):
                self._start_refresh(name)

    async def cached_view(self, query: OfferQuery | None = None) -> InventoryView:
        """The menu as cached now, without waiting for any provider."""
        query = query or OfferQuery()
        return await self._answer(query, await self._measurements(query))

    async def _measurements(self, query: OfferQuery) -> list[Benchmark]:
        """The measurements of the query's model (none without one; an unknown model is a
        `UnknownModel` error), read before any provider is asked."""
        return await self.benchmarks.measurements(query.model) if query.model else []

    def _expired(self, name: str) -> bool:
        cache = self._caches[name]
        if cache.fetched_mono is None or cache.error is not None:
            return True
        return self._clock.monotonic() - cache.fetched_mono >= self._ttl_s

    def _narrowed(self, name: str, key: str) -> _Narrowed | None:
        """The provider's fresh answer to the query with filters `key`, if it has one."""
        found = self._caches[name].narrowed.get(key)
        if found is None or self._clock.monotonic() - found.fetched_mono >= self._ttl_s:
            return None
        return found

    async def _narrow(self, name: str, query: OfferQuery, key: str, *, alone: bool = False) -> None:
        """Ask a provider for `query`'s own offers.

        On failure a capped whole-market answer stays; a search made `alone` (no whole market
        behind it) records the failure, so the provider reads as failing, not as empty.
        """
        adapter = self._providers[name]
        assert adapter is not None
        cache = self._caches[name]
        started = self._clock.monotonic()
        try:
            async with asyncio.timeout(self._timeout_s):
                offers = await adapter.list_offers(query)
        except (ProviderError, TimeoutError) as err:
            reason = err.message if isinstance(err, ProviderError) else "no answer in time"
            log.warning("inventory: %s search for %r failed: %s", name, key, reason)
            if alone:
                cache.error = reason
            return
        except Exception:  # a bug in one adapter must not break the menu
            log.exception("inventory: %s search for %r failed unexpectedly", name, key)
            if alone:
                cache.error = "unexpected error (details in the log file)"
            return
        cache.note_listed(offers)
        if alone:
            cache.error = None
            cache.latency_ms = (self._clock.monotonic() - started) * 1000
        narrowed = cache.narrowed
        narrowed.pop(key, None)
        narrowed[key] = _Narrowed(
            OfferIndex(offers), self._clock.monotonic(), _truncated(offers), self._clock.now()
        )
        while len(narrowed) > NARROWED_KEPT:
            del narrowed[next(iter(narrowed))]

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
        cache.note_listed(offers)
        cache.fetched_at = self._clock.now()
        cache.fetched_mono = self._clock.monotonic()
        cache.error = None
        cache.latency_ms = (self._clock.monotonic() - started) * 1000
        cache.truncated = _truncated(offers)
        await self._publish(name, len(offers), ok=True)

    async def _publish(self, name: str, count: int, *, ok: bool) -> None:
        if self._events is not None:
            message = f"{name}: {count} offers" + ("" if ok else " (refresh failed)")
            await self._events.publish(
                InventoryRefreshed(message=message, provider=name, offers=count, ok=ok)
            )

    def report(self, name: str, narrowed: _Narrowed | None = None) -> ProviderReport:
        """Where provider `name` stands now (for a query its `narrowed` answer serves)."""
        cache = self._caches[name]
        if self._providers[name] is None:
            return ProviderReport(name, "not configured")
        fetched_at, fetched_mono = (
            (cache.fetched_at, cache.fetched_mono)
            if narrowed is None
            else (narrowed.fetched_at, narrowed.fetched_mono)
        )
        age = self._clock.monotonic() - fetched_mono if fetched_mono is not None else None
        if cache.error is None and fetched_at is not None:
            status: ProviderHealth = "ok"
        elif fetched_at is not None:
            status = "stale"
        else:
            status = "error"
        return ProviderReport(
            name,
            status,
            offers=len(cache.index if narrowed is None else narrowed.index),
            fetched_at=fetched_at,
            age_s=age,
            error=cache.error,
            latency_ms=cache.latency_ms,
            truncated=cache.truncated if narrowed is None else narrowed.truncated,
        )

    def _serving(self, name: str, key: str) -> _Narrowed | None:
        """The provider's own answer to a query, when it serves rather than the whole market:
        the market was capped, or the answer is newer than the market (a one-shot's search)."""
        cache = self._caches[name]
        narrowed = self._narrowed(name, key)
        if narrowed is None:
            return None
        if cache.truncated or cache.fetched_mono is None:
            return narrowed
        return narrowed if narrowed.fetched_mono > cache.fetched_mono else None

    async def _answer(self, query: OfferQuery, measurements: list[Benchmark]) -> InventoryView:
        now = self._clock.now()
        failures = await self._store.offer_failures_since(now - FAILURE_LOOKBACK)
        hidden_ids = {
            offer_id
            for offer_id, (count, latest) in failures.items()
            if count >= HIDE_AFTER_FAILURES and now - latest < HIDE_FOR
        }
        key = _filters_key(query)
        serving = {name: self._serving(name, key) if key else None for name in self._caches}
        everything = OfferIndex.merge(
            narrowed.index if (narrowed := serving[name]) else cache.index
            for name, cache in self._caches.items()
        )
        visible = everything.without(hidden_ids) if hidden_ids else everything
        priced = estimates(visible, measurements)
        offers = select(visible, query, demoted=failures.keys(), usd_per_mtok=priced.usd_per_mtok)
        return InventoryView(
            offers=offers,
            providers=[
                self.report(name, serving[name])
                for name in PROVIDERS
                if not query.providers or name in query.providers
            ],
            total=len(everything),
            hidden=len(everything) - len(visible),
            usd_per_mtok={
                o.id: priced.usd_per_mtok[o.id] for o in offers if o.id in priced.usd_per_mtok
            },
            measured=frozenset(o.id for o in offers if o.id in priced.measured),
        )

    async def find(self, offer_id: str) -> Offer | None:
        """The offer with this id from its provider's menu, refreshed if old or not found."""
        name = offer_id.split(":", 1)[0]
        if name not in self._caches or self._providers[name] is None:
            return None
        refreshed = self._expired(name)
        if refreshed:
            await self._refresh(name)
        found = self._cached(name, offer_id)
        if found is None and not refreshed:
            await self._refresh(name)
            found = self._cached(name, offer_id)
        return found

    async def was_listed(self, offer_id: str) -> bool:
        """Whether the offer has been on the menu (listed to this process, or remembered as
        failed to rent): one not found now was taken, where one never listed is unknown."""
        name = offer_id.split(":", 1)[0]
        if name in self._caches and offer_id in self._caches[name].listed:
            return True
        since = self._clock.now() - FAILURE_LOOKBACK
        return offer_id in await self._store.offer_failures_since(since)

    def _cached(self, name: str, offer_id: str) -> Offer | None:
        """The offer with this id from the provider's cache or a query's answer that is fresh."""
        cache = self._caches[name]
        found = cache.index.find(offer_id)
        for key in cache.narrowed if found is None else ():
            narrowed = self._narrowed(name, key)
            if narrowed is not None and (found := narrowed.index.find(offer_id)) is not None:
                break
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


def _truncated(offers: list[Offer]) -> bool:
    """Whether a provider said its answer was capped (an adapter's `OfferList`)."""
    return isinstance(offers, OfferList) and offers.truncated
