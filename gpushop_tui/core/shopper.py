"""`Shopper`: the one façade the TUI, the API and the CLI call.

Built once per process by `await Shopper.open(settings)` and closed with `aclose()`; tests
build it on a temporary data dir with a `FakeClock`. It must never import a face, Textual or
the web framework (tests check this).
"""

from __future__ import annotations

from types import TracebackType

from gpushop_tui.clock import Clock, SystemClock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import EventBus, Subscription
from gpushop_tui.models import AuditEvent
from gpushop_tui.secrets import CredentialStatus, SecretStore
from gpushop_tui.store import Store


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
