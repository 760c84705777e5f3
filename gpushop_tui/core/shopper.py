"""`Shopper`: the one façade the TUI, the API and the CLI call.

Built once per process by `await Shopper.open(settings)` and closed with `aclose()`; tests
build it on a temporary data dir with a `FakeClock`. It must never import a face, Textual or
the web framework (tests check this).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal

from gpushop_tui.clock import Clock, SystemClock
from gpushop_tui.config import Settings
from gpushop_tui.core import costs
from gpushop_tui.core.benchmarks import Benchmarks
from gpushop_tui.core.budgets import Budgets
from gpushop_tui.core.costs import CostLine
from gpushop_tui.core.events import EventBus, Subscription
from gpushop_tui.core.inventory import Inventory, InventoryView
from gpushop_tui.core.notify import WebhookNotifier
from gpushop_tui.core.sessions import ACTIVE, Lifecycle
from gpushop_tui.core.supervisor import PassReport, Supervisor
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    PROVIDERS,
    AuditEvent,
    OfferQuery,
    ProvisionRequest,
    Session,
    SessionStatus,
)
from gpushop_tui.node import keys as node_keys
from gpushop_tui.node.probes import NodeSample
from gpushop_tui.node.ssh import NodeError, connect
from gpushop_tui.providers.base import (
    AuthError,
    Provider,
    ProviderError,
    TransientError,
    parse_label,
)
from gpushop_tui.providers.registry import connect_providers
from gpushop_tui.secrets import CredentialStatus, SecretStore
from gpushop_tui.store import Lease, Store


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


@dataclass(frozen=True)
class OrphanRow:
    """One of our instances as a provider lists it, and the session it belongs to, if any."""

    provider: str
    instance_id: str
    label: str | None
    state: str
    session_id: str | None
    session_status: str | None
    live_session: bool
    action: str = "none"
    """What cleanup did: none (dry run or kept), destroyed, destroy failed: ..."""


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
        self.lifecycle = Lifecycle(
            settings=settings,
            store=store,
            providers=self.providers,
            inventory=self.inventory,
            events=self.events,
            clock=clock,
            keys_dir=settings.paths.keys_dir,
        )
        self.budgets = Budgets(store, self.lifecycle, self.events, clock)
        self.lifecycle.admit = self.budgets.admit
        self.supervisor = Supervisor(self.lifecycle, budgets=self.budgets)
        self.notifier = WebhookNotifier(settings, secrets, clock, self.events, store.install_id)
        self._supervising: asyncio.Task[None] | None = None

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
        shopper = cls(settings, store, clock or SystemClock(), secrets or SecretStore())
        shopper.notifier.start()
        return shopper

    async def aclose(self, teardown_grace_s: float = 0.0) -> None:
        """Stop this process's work; every session stays as it is for the next supervisor.

        With `teardown_grace_s`, destroys already under way get that long to finish first
        (`--serve` on SIGTERM); nothing running is ever destroyed because the process stops.
        """
        if teardown_grace_s > 0:
            await self.lifecycle.finish_teardowns(teardown_grace_s)
        if self._supervising is not None:
            self._supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervising
        await self.lifecycle.aclose()
        await self.inventory.aclose()
        await self.notifier.aclose()
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

    # ------------------------------------------------------------------ sessions

    async def provision(self, request: ProvisionRequest) -> Session:
        """Rent an offer; returns with the session provisioning (readiness goes on here)."""
        return await self.lifecycle.provision(request)

    async def session(self, session_id: str) -> Session:
        return await self.lifecycle.get(session_id)

    async def sessions(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Session]:
        """Sessions, newest first; `open_only` keeps those still supervised."""
        return await self.store.list_sessions(
            consumer=consumer, status=status, open_only=open_only, provider=provider, limit=limit
        )

    async def session_by_request_id(self, request_id: str) -> Session | None:
        """The session a create call with this idempotency key made, if any."""
        return await self.store.session_by_request_id(request_id)

    async def done(self, session_id: str) -> Session:
        """End a session gracefully (destroy, or stop and keep the disk); answers at once."""
        return await self.lifecycle.done(session_id, reason="requested by the user")

    async def delete(self, session_id: str) -> Session:
        """Destroy a session's instance whatever its storage policy; answers at once."""
        return await self.lifecycle.delete(session_id)

    async def extend(
        self, session_id: str, hours: float, override_reason: str | None = None
    ) -> Session:
        return await self.lifecycle.extend(session_id, hours, override_reason)

    async def touch(self, session_id: str) -> Session:
        """Record activity on a session (it is not idle)."""
        return await self.lifecycle.touch(session_id)

    async def wait_settled(self, session_id: str, timeout_s: float) -> Session:
        """Wait until the session is running, stopped or closed (or the time is up)."""
        return await self.lifecycle.wait_settled(session_id, timeout_s)

    # ------------------------------------------------------------------ money

    async def cost_lines(
        self,
        since: datetime,
        until: datetime,
        *,
        consumer: str | None = None,
        session_id: str | None = None,
    ) -> list[CostLine]:
        """What was billed in [since, until), per session, kind and local day, up to now."""
        billing = await self.store.sessions_billing_between(since, until, consumer)
        if session_id is not None:
            billing = [s for s in billing if s.id == session_id]
        return costs.daily_lines(billing, since, until, self.clock.now())

    async def billing_now(self) -> list[tuple[Session, float, float]]:
        """Every session whose instance bills right now: (session, cost so far, USD/h)."""
        now = self.clock.now()
        return [
            (s, costs.cost_of(s, now), costs.burn_rate(s))
            for s in await self.store.list_sessions(open_only=True)
            if costs.burn_rate(s) > 0
        ]

    def node_sample(self, session_id: str) -> tuple[datetime, NodeSample] | None:
        """The supervisor's latest GPU/SSH reading of a running session, if it took one."""
        return self.supervisor.samples.get(session_id)

    # ------------------------------------------------------------------ supervision

    def start_supervisor(self) -> None:
        """Supervise in the background (TUI, --serve) until `aclose`; a viewer if another does."""
        if self._supervising is None or self._supervising.done():
            self._supervising = asyncio.create_task(self.supervisor.run(), name="supervisor")

    async def supervisor_lease(self) -> Lease | None:
        """The live supervisor's lease, if any process holds one."""
        return await self.supervisor.lease()

    async def reconcile_once(self) -> PassReport | None:
        """One supervisor pass for cron; None when a live supervisor already holds the lease."""
        return await self.supervisor.run_once()

    async def cleanup_orphans(
        self, provider: str | None = None, *, execute: bool = False, include_live: bool = False
    ) -> tuple[list[OrphanRow], list[str]]:
        """Our instances straight from the provider lists, with their sessions; destroy on ask.

        Instances of live sessions are shown and never destroyed unless `include_live`.
        Returns the rows and one sentence per provider that could not be listed.
        """
        if provider is not None and provider not in PROVIDERS:
            raise UserError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
        rows: list[OrphanRow] = []
        problems: list[str] = []
        for name, adapter in self.providers.items():
            if adapter is None or (provider is not None and name != provider):
                continue
            try:
                listed = await adapter.list_ours()
            except ProviderError as err:
                problems.append(f"{name}: cannot list instances: {err.message}")
                continue
            for instance in listed:
                parsed = parse_label(instance.label)
                session = await self.store.get_session(parsed[1]) if parsed else None
                live = session is not None and (
                    session.status in ACTIVE
                    or (session.status == SessionStatus.STOPPED and not session.instance.absent)
                )
                action = "none"
                if execute and (include_live or not live):
                    action = await self._destroy_listed(adapter, instance.instance_id, session)
                rows.append(
                    OrphanRow(
                        provider=name,
                        instance_id=instance.instance_id,
                        label=instance.label,
                        state=instance.state,
                        session_id=session.id if session else None,
                        session_status=session.status.value if session else None,
                        live_session=live,
                        action=action,
                    )
                )
        return rows, problems

    async def _destroy_listed(
        self, adapter: Provider, instance_id: str, session: Session | None
    ) -> str:
        if session is not None and session.instance_id in (None, instance_id):
            if session.instance_id is None:
                await self.lifecycle.record_instance(session.id, instance_id, self.clock.now())
            await self.lifecycle.delete(session.id, reason="cleanup-orphans")
            await self.lifecycle.drive(session.id)
            after = await self.lifecycle.get(session.id)
            return "destroyed" if after.instance.absent else f"destroying ({after.instance})"
        try:
            await adapter.destroy(instance_id)
        except ProviderError as err:
            return f"destroy failed: {err.message}"
        return "destroy requested"

    # ------------------------------------------------------------------ access

    async def ssh_argv(self, session_id: str, *command: str) -> list[str]:
        """The OpenSSH command line that reaches the session's node with its own key."""
        session = await self.lifecycle.get(session_id)
        address = self.lifecycle.address(session)
        known_hosts = self.lifecycle.known_hosts_path(session.id)
        if session.host_key is not None:
            await asyncio.to_thread(
                node_keys.write_known_hosts,
                known_hosts,
                address.host,
                address.port,
                session.host_key,
            )
        strict = "yes" if session.host_key is not None else "accept-new"
        return [
            "ssh",
            "-i",
            str(address.key_path),
            "-p",
            str(address.port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            f"StrictHostKeyChecking={strict}",
            f"{address.user}@{address.host}",
            *command,
        ]

    async def key_path(self, session_id: str) -> Path:
        """The session's private key file (kept until the session is closed)."""
        session = await self.lifecycle.get(session_id)
        path = Path(session.key_path) if session.key_path else None
        if path is None or not await asyncio.to_thread(path.exists):
            raise UserError(f"session {session_id} has no key any more (it is closed)")
        return path

    async def transfer(
        self,
        session_id: str,
        direction: Literal["upload", "download"],
        local: Path,
        remote: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Copy one file to or from the session's node over SFTP; returns the bytes copied."""
        session = await self.lifecycle.get(session_id)
        if session.status != SessionStatus.RUNNING:
            raise UserError(f"session {session_id} is {session.status}, not running")
        try:
            conn = await connect(
                self.lifecycle.address(session), timeout_s=self.settings.ssh_connect_timeout_s
            )
            async with conn:
                if direction == "upload":
                    return await conn.upload(local, remote, progress)
                return await conn.download(remote, local, progress)
        except NodeError as err:
            raise UserError(f"transfer failed: {err.message}") from None

    # ------------------------------------------------------------------ benchmarks

    @property
    def benchmarks(self) -> Benchmarks:
        """Measured tokens/s (the shipped seed plus imports): rankings, import, and the models
        a query's `model=` may name; the inventory prices offers by them."""
        return self.inventory.benchmarks
