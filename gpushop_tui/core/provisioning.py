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
from dataclasses import dataclass, replace
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
    UnknownOffer,
    Wake,
)
from gpushop_tui.core.teardown import wants_teardown
from gpushop_tui.core.ttl import provider_ttl
from gpushop_tui.core.workloads import image_for, public_ports
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import (
    IdleAction,
    InstanceState,
    Offer,
    OfferQuery,
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
    InstanceIdSink,
    InstanceRef,
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

Admission = Callable[[str, Offer, float, str | None], Awaitable[None]]
"""Checks a rental (consumer, offer, hours, the session it replaces if any) before the provider
is called; raises to refuse."""
MATCH_TRIES = 3
"""A rental by query tries at most this many of its matches, each taken by another rental."""


def instance_key_path(private_path: Path) -> Path:
    """Where a session's instance-scoped API key is kept, beside its SSH key (0600)."""
    return private_path.with_suffix(".instance_key")


def remove_key_files(private_path: Path) -> None:
    """Delete a session's key pair and instance key (any of them may already be gone)."""
    for path in (private_path, private_path.with_suffix(".pub"), instance_key_path(private_path)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass(frozen=True)
class _Rematch:
    """What a rental by query needs to move on to its next match when its offer is taken."""

    query: OfferQuery
    admit: Admission | None


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
        offer, query = await self._resolve_offer(request)
        adapter = self.providers.get(offer.provider)
        if adapter is None:
            raise NotConfigured.for_provider(offer.provider)
        if request.storage == StoragePolicy.KEEP and not adapter.can_stop:
            raise UserError(
                f"{offer.provider} cannot stop an instance and keep its disk",
                field="storage",
                hint=Hint.STORAGE_NOT_KEEPABLE,
            )
        if request.idle_action == IdleAction.STOP and not adapter.can_stop:
            raise UserError(
                f"{offer.provider} cannot stop an instance and keep its disk, so an idle "
                "session cannot be stopped there",
                field="idle_action",
                hint=Hint.CANNOT_STOP,
            )
        workload = request.workload
        if workload.image is not None and not adapter.INFO.capabilities.runs_images:
            raise UserError(
                f"{offer.provider} boots virtual machines, not images: leave the image out "
                f"(it cannot run {workload.image})",
                field="image",
            )
        if admit is not None:
            await admit(request.consumer, offer, request.hours, None)
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
            workload=workload.kind,
            workload_spec=workload if workload.serves else None,
            reservation_hours=request.hours,
            expires_at=min(now + timedelta(hours=request.hours), hard_max),
            hard_max_at=hard_max,
            idle_timeout_min=(
                request.idle_timeout_min
                if request.idle_timeout_min is not None
                else self.settings.default_idle_timeout_min
            ),
            storage_policy=request.storage,
            idle_action=request.idle_action,
            keep_days=request.keep_days,
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
        runs_images = adapter.INFO.capabilities.runs_images
        spec = CreateSpec(
            label=label,
            ssh_public_key=public_key,
            image=image_for(workload, runs_images),
            disk_gb=request.disk_gb or DEFAULT_DISK_GB,
            ports=public_ports(session.workload_spec, runs_images),
            terminate_at=provider_ttl(adapter, session),
        )
        known = asyncio.Event()
        self._creating.add(session_id)
        rematch = _Rematch(query, admit) if query is not None else None
        self._start(session_id, self._create_then_drive(session, adapter, spec, known, rematch))
        await known.wait()
        return Rental(await self.rows.get(session_id), created=True)

    async def _resolve_offer(self, request: ProvisionRequest) -> tuple[Offer, OfferQuery | None]:
        """The offer to rent, and the parsed query it was chosen by (None for an offer id)."""
        if request.offer_id is not None:
            return await self._named_offer(request.offer_id), None
        assert request.query is not None
        try:
            query = parse_query(request.query, await self.inventory.benchmarks.models())
        except QueryError as err:
            raise UserError(str(err), field="query") from None
        view = await self.inventory.view(query)
        if not view.offers:
            raise UserError(f"no offer matches {request.query!r} right now", field="query")
        return view.offers[0], query

    async def _named_offer(self, offer_id: str) -> Offer:
        """The menu's offer with this id: unknown when no such offer was listed (a typo),
        stale when it was and is not any more (taken)."""
        provider = offer_id.split(":", 1)[0]
        if ":" not in offer_id or provider not in self.providers:
            raise UnknownOffer.for_id(offer_id, "should look like 'vastai:12345'")
        if self.providers.get(provider) is None:
            raise NotConfigured.for_provider(provider)
        offer = await self.inventory.find(offer_id)
        if offer is not None:
            return offer
        if await self.inventory.was_listed(offer_id):
            raise StaleOffer(
                f"offer {offer_id!r} is not in the current menu any more (it was taken)",
                field="offer_id",
                hint=Hint.UNKNOWN_OFFER,
            )
        raise UnknownOffer.for_id(
            offer_id, f"is not in the current menu and {provider} has not listed it"
        )

    async def _create_then_drive(
        self,
        session: Session,
        adapter: Provider,
        spec: CreateSpec,
        known: asyncio.Event,
        rematch: _Rematch | None,
    ) -> None:
        with self.rows.driving(session.id) as changed:
            try:
                await self._create(session, adapter, spec, known, changed, rematch)
            finally:
                self._creating.discard(session.id)
                known.set()
        await self._drive(session.id)

    @staticmethod
    async def _answer_unless_ended(
        call: asyncio.Future[InstanceRef], changed: Wake
    ) -> InstanceRef | None:
        """The create call's answer; None when the session is ended (done, delete, failed)
        while the call goes on after the instance id is known (Blue Lobster follows its launch
        task): the rest of the call is dropped so that the teardown starts at once.

        The end is judged from the row the waking change committed, not from a store read,
        so the call is dropped the moment the loop wakes: no launch-task poll or wait of the
        call runs on while the teardown gets going."""
        try:
            while not call.done():
                woken = asyncio.ensure_future(changed.wait())
                try:
                    await asyncio.wait((call, woken), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                if call.done():
                    break
                changed.clear()
                row = changed.row
                if row is not None and row.instance_id is not None and wants_teardown(row):
                    return None
            return call.result()
        finally:
            call.cancel()

    async def _create(
        self,
        session: Session,
        adapter: Provider,
        spec: CreateSpec,
        known: asyncio.Event,
        changed: Wake,
        rematch: _Rematch | None,
    ) -> None:
        """Phase two: mark the create as under way, call the provider, commit the id at once.

        A rental by query (`rematch`) whose offer another rental took meanwhile moves on to the
        query's next match, up to `MATCH_TRIES` offers in all; a rental of a named offer fails.
        """
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
        refused: set[str] = set()
        while True:
            began = self.rows.clock.now()
            on_instance = self._instance_sink(session.id, began, known)
            call = asyncio.ensure_future(adapter.create(session.offer, spec, on_instance))
            try:
                ref = await self._answer_unless_ended(call, changed)
            except OfferGone as err:
                refused.add(session.offer_id)
                moved = None
                if rematch is not None and err.instance_id is None and len(refused) < MATCH_TRIES:
                    moved = await self._next_match(session, rematch, refused)
                if moved is None:
                    await self._create_failed(session, err, began)
                    return
                await self._remember_refused(session, err)
                session, adapter = moved
                runs_images = adapter.INFO.capabilities.runs_images
                spec = replace(
                    spec,
                    ports=public_ports(session.workload_spec, runs_images),
                    terminate_at=provider_ttl(adapter, session),
                )
                continue
            except ProviderError as err:
                await self._create_failed(session, err, began)
                return
            except Exception as err:  # a bug: we cannot tell what the provider did
                log.exception("create of session %s failed unexpectedly", session.id)
                await self._create_failed(
                    session, ProviderBug(session.provider, f"unexpected error: {err}"), began
                )
                return
            if ref is not None:
                await self.record_instance(session.id, ref.instance_id, began)
                if ref.instance_key is not None and session.key_path is not None:
                    where = instance_key_path(Path(session.key_path))
                    await asyncio.to_thread(node_keys.write_secret, where, ref.instance_key)
            return

    def _instance_sink(
        self, session_id: str, began: datetime, known: asyncio.Event
    ) -> InstanceIdSink:
        """The create call's hook: commit the instance id the moment the provider names it."""

        async def on_instance(instance_id: str) -> None:
            await self.record_instance(session_id, instance_id, began)
            known.set()

        return on_instance

    async def _next_match(
        self, session: Session, rematch: _Rematch, refused: set[str]
    ) -> tuple[Session, Provider] | None:
        """Switch the session to its query's best match whose id is not `refused` (taken by
        other rentals), asking the budgets again for the new price; the session keeps its id,
        label and key pair. None when no match is left, the budgets refuse it, or the session
        was ended or changed meanwhile."""
        matches = (await self.inventory.view(rematch.query)).offers
        offer = next(
            (o for o in matches if o.id not in refused and self._can_rent(session, o)), None
        )
        if offer is None:
            return None
        if rematch.admit is not None:
            try:
                await rematch.admit(session.consumer, offer, session.reservation_hours, session.id)
            except UserError as refusal:
                log.warning("session %s: next match %s refused: %s", session.id, offer.id, refusal)
                return None
        adapter = self.providers.get(offer.provider)
        assert adapter is not None
        note = (
            f"offer {session.offer_id} was taken by another rental; renting the next match "
            f"{offer.id} ({offer.gpu_count}x {offer.gpu_name}, ${offer.price_per_hour:.3f}/h)"
        )

        def decide(s: Session) -> Decision:
            if (
                s.status != SessionStatus.PROVISIONING
                or s.instance != InstanceState.CREATING
                or s.instance_id is not None
                or s.offer_id != session.offer_id
            ):
                return None
            return (
                {
                    "provider": offer.provider,
                    "offer_id": offer.id,
                    "offer": offer,
                    "price_per_hour": offer.price_per_hour,
                    "ssh_user": adapter.readiness.ssh_user,
                },
                note,
            )

        moved = await self.rows.change(session.id, decide)
        if moved is None or moved.offer_id != offer.id:
            return None
        await self.rows.events.publish(
            SessionChanged(
                message=note, session_id=moved.id, status=moved.status, instance=moved.instance
            )
        )
        return moved, adapter

    def _can_rent(self, session: Session, offer: Offer) -> bool:
        """Whether the session could move to `offer`: its provider is configured, keeps a disk
        where the session must, and runs the workload's image if it names one."""
        adapter = self.providers.get(offer.provider)
        spec = session.workload_spec
        return (
            adapter is not None
            and (adapter.can_stop or not session.meant_to_keep_disk)
            and (spec is None or spec.image is None or adapter.INFO.capabilities.runs_images)
        )

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

    async def _remember_refused(self, session: Session, err: ProviderError) -> None:
        """Remember that the provider refused the session's offer, so the menu demotes it."""
        await self.inventory.record_failure(
            session.offer, f"create failed: {err.message}", session_id=session.id
        )

    async def _create_failed(self, session: Session, err: ProviderError, began: datetime) -> None:
        if err.instance_id is not None:
            await self.record_instance(session.id, err.instance_id, began)
        maybe = isinstance(err, ProviderBug) or (isinstance(err, TransientError) and err.ambiguous)
        if isinstance(err, OfferGone | CapacityError):
            await self._remember_refused(session, err)

        def decide(s: Session) -> Decision:
            changes: dict[str, Any] = {"error": f"create failed: {err.message}"}
            if s.instance_id is None and s.instance == InstanceState.CREATING:
                changes["instance"] = InstanceState.UNKNOWN if maybe else InstanceState.NONE
            cancelled = s.status == SessionStatus.STOPPING
            absent = changes.get("instance", s.instance).absent
            if s.status in ACTIVE or (cancelled and absent):
                changes["status"] = SessionStatus.ENDED if cancelled else SessionStatus.FAILED
            note = (
                "; the provider may have created it anyway: reconciliation will look for it"
                if maybe
                else ""
            )
            return changes, f"create failed: {err.message}{note}"

        await self.rows.change(session.id, decide, severity=Severity.ERROR)
