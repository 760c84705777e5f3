"""Provisioning: the two-phase rental (DESIGN.md §3.6).

Phase one commits a pending session (with its key pair) before any provider is called; phase
two marks the create as under way, calls the provider and commits the instance id the moment
it is known. A crash between the two leaves a row that reconciliation can settle, never an
instance nobody knows of. The same `request_id` always answers with the same session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gpushop_tui.config import Settings
from gpushop_tui.core.events import SessionChanged
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.core.rows import (
    ACTIVE,
    Decision,
    NotConfigured,
    SessionConflict,
    SessionRows,
    StaleOffer,
)
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import (
    InstanceState,
    Offer,
    ProvisionRequest,
    Session,
    SessionStatus,
    Severity,
    StoragePolicy,
)
from gpushop_tui.node import keys as node_keys
from gpushop_tui.providers.base import (
    DEFAULT_DISK_GB,
    CapacityError,
    CreateSpec,
    OfferGone,
    Provider,
    ProviderBug,
    ProviderError,
    TransientError,
    label_for,
)
from gpushop_tui.query import QueryError, parse_query
from gpushop_tui.store import DuplicateSession

log = logging.getLogger(__name__)

Admission = Callable[[str, Offer, float], Awaitable[None]]
"""Checks a rental (consumer, offer, hours) before the provider is called; raises to refuse."""


def remove_key_files(private_path: Path) -> None:
    """Delete a session's key pair (either half may already be gone)."""
    for path in (private_path, private_path.with_suffix(".pub")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass(frozen=True)
class Rental:
    """What a rent call answered: the session, and whether this call created it."""

    session: Session
    created: bool


def _repeated(existing: Session, request: ProvisionRequest) -> Rental:
    """The answer to a `request_id` already used: its session, if it is this consumer's."""
    if existing.consumer != request.consumer:
        raise SessionConflict(
            "this request id is already used by another consumer's session", field="request_id"
        )
    return Rental(existing, created=False)


class Provisioning:
    """Turns a `ProvisionRequest` into a session and its provider instance."""

    def __init__(
        self,
        *,
        rows: SessionRows,
        providers: Mapping[str, Provider | None],
        inventory: Inventory,
        settings: Settings,
        keys_dir: Path,
        start: Callable[[str, Coroutine[Any, Any, None]], None],
        drive: Callable[[str], Awaitable[None]],
    ) -> None:
        self.rows = rows
        self.providers = providers
        self.inventory = inventory
        self.settings = settings
        self.keys_dir = keys_dir
        self._start = start
        """Runs a session's background work as this process's task for it."""
        self._drive = drive
        """Takes the session on to readiness once the create call has ended."""
        self._creating: set[str] = set()

    def creating(self, session_id: str) -> bool:
        """Whether this process has a create call for the session in flight."""
        return session_id in self._creating

    async def provision(
        self,
        request: ProvisionRequest,
        *,
        admit: Admission | None,
        new_session_id: Callable[[], str],
    ) -> Rental:
        """Rent an offer: commit the pending session, then call the provider in the background.

        `admit` may refuse the rental before anything is stored; `new_session_id` names the
        session. Returns once the provider's instance id is committed (or the create call has
        ended), with the session `provisioning`; readiness continues in this process. A
        `request_id` seen before answers with its session, whoever asks at the same time.
        """
        store = self.rows.store
        if request.request_id is not None:
            existing = await store.session_by_request_id(request.request_id)
            if existing is not None:
                return _repeated(existing, request)
        offer = await self._resolve_offer(request)
        adapter = self.providers.get(offer.provider)
        if adapter is None:
            raise NotConfigured.for_provider(offer.provider)
        if request.storage == StoragePolicy.KEEP and not adapter.can_stop:
            raise UserError(
                f"{offer.provider} cannot stop an instance and keep its disk",
                field="storage",
                hint=Hint.STORAGE_NOT_KEEPABLE,
            )
        if admit is not None:
            await admit(request.consumer, offer, request.hours)
        now = self.rows.clock.now()
        session_id = new_session_id()
        label = label_for(store.install_id, session_id)
        key_path = self.keys_dir / session_id
        public_key = await asyncio.to_thread(node_keys.create_key_pair, key_path, label)
        hard_max = now + timedelta(hours=self.settings.hard_max_hours)
        session = Session(
            id=session_id,
            consumer=request.consumer,
            provider=offer.provider,
            offer_id=offer.id,
            offer=offer,
            label=label,
            ssh_user=adapter.readiness.ssh_user,
            key_path=str(key_path),
            workload=request.workload,
            reservation_hours=request.hours,
            expires_at=min(now + timedelta(hours=request.hours), hard_max),
            hard_max_at=hard_max,
            idle_timeout_min=(
                request.idle_timeout_min
                if request.idle_timeout_min is not None
                else self.settings.default_idle_timeout_min
            ),
            storage_policy=request.storage,
            price_per_hour=offer.price_per_hour,
            created_at=now,
            state_entered_at=now,
            request_id=request.request_id,
        )
        try:
            await store.insert_session(session)
        except DuplicateSession:
            remove_key_files(key_path)
            if request.request_id is not None:
                existing = await store.session_by_request_id(request.request_id)
                if existing is not None:
                    return _repeated(existing, request)
            raise
        await self.rows.events.publish(
            SessionChanged(
                message=f"renting {offer.id} ({offer.gpu_count}x {offer.gpu_name}, "
                f"${offer.price_per_hour:.3f}/h) for {request.consumer}",
                session_id=session_id,
                status=session.status,
                instance=session.instance,
            )
        )
        spec = CreateSpec(
            label=label,
            ssh_public_key=public_key,
            image=request.image,
            disk_gb=request.disk_gb or DEFAULT_DISK_GB,
        )
        known = asyncio.Event()
        self._creating.add(session_id)
        self._start(session_id, self._create_then_drive(session, adapter, spec, known))
        await known.wait()
        return Rental(await self.rows.get(session_id), created=True)

    async def _resolve_offer(self, request: ProvisionRequest) -> Offer:
        if request.offer_id is not None:
            provider = request.offer_id.split(":", 1)[0]
            if ":" not in request.offer_id or provider not in self.providers:
                raise UserError(
                    f"offer id {request.offer_id!r} should look like 'vastai:12345'",
                    field="offer_id",
                    hint=Hint.UNKNOWN_OFFER,
                )
            if self.providers.get(provider) is None:
                raise NotConfigured.for_provider(provider)
            offer = await self.inventory.find(request.offer_id)
            if offer is None:
                raise StaleOffer(
                    f"offer {request.offer_id!r} is not in the current menu (it may be taken)",
                    field="offer_id",
                    hint=Hint.UNKNOWN_OFFER,
                )
            return offer
        assert request.query is not None
        try:
            query = parse_query(request.query, await self.inventory.benchmarks.models())
        except QueryError as err:
            raise UserError(str(err), field="query") from None
        view = await self.inventory.view(query)
        if not view.offers:
            raise UserError(f"no offer matches {request.query!r} right now", field="query")
        return view.offers[0]

    async def _create_then_drive(
        self, session: Session, adapter: Provider, spec: CreateSpec, known: asyncio.Event
    ) -> None:
        try:
            await self._create(session, adapter, spec, known)
        finally:
            self._creating.discard(session.id)
            known.set()
        await self._drive(session.id)

    async def _create(
        self, session: Session, adapter: Provider, spec: CreateSpec, known: asyncio.Event
    ) -> None:
        """Phase two: mark the create as under way, call the provider, commit the id at once."""
        started = await self.rows.change(
            session.id,
            lambda s: (
                (
                    {"status": SessionStatus.PROVISIONING, "instance": InstanceState.CREATING},
                    f"asking {s.provider} for an instance of {s.offer_id}",
                )
                if s.status == SessionStatus.PENDING and s.instance == InstanceState.NONE
                else None
            ),
        )
        if started is None or started.instance != InstanceState.CREATING:
            return
        began = self.rows.clock.now()

        async def on_instance(instance_id: str) -> None:
            await self.record_instance(session.id, instance_id, began)
            known.set()

        try:
            ref = await adapter.create(session.offer, spec, on_instance)
        except ProviderError as err:
            await self._create_failed(session, err, began)
            return
        except Exception as err:  # a bug: we cannot tell what the provider did
            log.exception("create of session %s failed unexpectedly", session.id)
            await self._create_failed(
                session, ProviderBug(session.provider, f"unexpected error: {err}"), began
            )
            return
        await self.record_instance(session.id, ref.instance_id, began)

    async def record_instance(self, session_id: str, instance_id: str, began: datetime) -> None:
        """Commit the provider's id for the session's instance (the create call's or adopted)."""

        def decide(s: Session) -> Decision:
            if s.instance_id == instance_id:
                return None
            if s.instance_id is not None:
                log.critical(
                    "session %s already has instance %s; %s is left to reconciliation",
                    s.id,
                    s.instance_id,
                    instance_id,
                )
                return None
            state = s.instance if s.instance == InstanceState.DESTROYING else InstanceState.LIVE
            return (
                {"instance_id": instance_id, "instance": state, "instance_created_at": began},
                f"{s.provider} instance {instance_id} exists",
            )

        await self.rows.change(session_id, decide)

    async def _create_failed(self, session: Session, err: ProviderError, began: datetime) -> None:
        if err.instance_id is not None:
            await self.record_instance(session.id, err.instance_id, began)
        maybe = isinstance(err, ProviderBug) or (isinstance(err, TransientError) and err.ambiguous)
        if isinstance(err, OfferGone | CapacityError):
            await self.inventory.record_failure(
                session.offer, f"create failed: {err.message}", session_id=session.id
            )

        def decide(s: Session) -> Decision:
            changes: dict[str, Any] = {"error": f"create failed: {err.message}"}
            if s.instance_id is None and s.instance == InstanceState.CREATING:
                changes["instance"] = InstanceState.UNKNOWN if maybe else InstanceState.NONE
            cancelled = s.status == SessionStatus.STOPPING
            absent = changes.get("instance", s.instance).absent
            if s.status in ACTIVE or (cancelled and absent):
                changes["status"] = SessionStatus.STOPPED if cancelled else SessionStatus.FAILED
            note = (
                "; the provider may have created it anyway: reconciliation will look for it"
                if maybe
                else ""
            )
            return changes, f"create failed: {err.message}{note}"

        await self.rows.change(session.id, decide, severity=Severity.ERROR)
