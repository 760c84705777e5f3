"""`Shopper`: the one façade the TUI, the API and the CLI call.

Built once per process by `await Shopper.open(settings)` and closed with `aclose()`; tests
build it on a temporary data dir with a `FakeClock`. It must never import a face, Textual or
the web framework (tests check this).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

from gpushop_tui.clock import Clock, SystemClock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import EventBus, Subscription
from gpushop_tui.core.inventory import Inventory, InventoryView
from gpushop_tui.models import PROVIDERS, AuditEvent, OfferQuery
from gpushop_tui.providers.base import AuthError, ProviderError, TransientError
from gpushop_tui.providers.registry import connect_providers
from gpushop_tui.secrets import CredentialStatus, SecretStore
from gpushop_tui.store import Store


@dataclass(frozen=True)
class ProviderCheck:
    """`gpushop check` for one provider: configured, key accepted, reachable, how fast."""

    provider: str
    configured: bool
    key_valid: bool | None = None
    reachable: bool | None = None
    latency_ms: float | None = None
    error: str | None = None

    @property
    def works(self) -> bool:
        return bool(self.configured and self.key_valid and self.reachable)


class Shopper:
    """Everything a face may ask of gpushop, over one database, clock and event bus."""

    def __init__(
        self, settings: Settings, store: Store, clock: Clock, secrets: SecretStore
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.secrets = secrets
        self.events = EventBus(store, clock)
        self.providers = connect_providers(
            settings, {name: secrets.get(name) for name in PROVIDERS}, store.install_id, clock
        )
        self.inventory = Inventory(
            self.providers,
            clock=clock,
            store=store,
            events=self.events,
            ttl_s=settings.inventory_refresh_s,
            timeout_s=settings.http_timeout_s,
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        secrets: SecretStore | None = None,
    ) -> Shopper:
        """Prepare the data dir, open (and migrate) the database, and wire the core together."""
        paths = settings.paths
        paths.prepare()
        store = await Store.open(paths.db_file)
        return cls(settings, store, clock or SystemClock(), secrets or SecretStore())

    async def aclose(self) -> None:
        await self.inventory.aclose()
        await self.store.aclose()

    async def __aenter__(self) -> Shopper:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def install_id(self) -> str:
        return self.store.install_id

    def subscribe(self) -> Subscription:
        """Live events from now on; close the subscription when done."""
        return self.events.subscribe()

    async def audit_log(self, session_id: str | None = None, limit: int = 200) -> list[AuditEvent]:
        """The most recent audit events, oldest first, optionally for one session."""
        return await self.store.list_audit(session_id=session_id, limit=limit)

    def credentials(self) -> tuple[list[CredentialStatus], str | None]:
        """Which providers have a credential and where from; plus why the keyring failed."""
        return self.secrets.status()

    async def offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False
    ) -> InventoryView:
        """The offer menu for `query`, from every configured provider at once."""
        return await self.inventory.view(query, refresh=refresh)

    async def check_providers(self) -> list[ProviderCheck]:
        """Per provider: is a key set, does the provider accept it, and how long it took."""
        return list(await asyncio.gather(*(self._check(name) for name in PROVIDERS)))

    async def _check(self, name: str) -> ProviderCheck:
        adapter = self.providers[name]
        if adapter is None:
            return ProviderCheck(name, configured=False)
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(self.settings.http_timeout_s):
                await adapter.check()
        except AuthError as err:
            return ProviderCheck(name, True, key_valid=False, reachable=True, error=err.message)
        except TransientError as err:
            return ProviderCheck(name, True, reachable=False, error=err.message)
        except ProviderError as err:
            return ProviderCheck(name, True, reachable=True, error=err.message)
        except TimeoutError:
            return ProviderCheck(name, True, reachable=False, error="no answer in time")
        latency = (self.clock.monotonic() - started) * 1000
        return ProviderCheck(name, True, key_valid=True, reachable=True, latency_ms=latency)
