"""Sessions: the two-phase rental, readiness over SSH, graceful stop and verified destroy.

DESIGN.md §2-§5. Every change is a compare-and-set on the stored row, so the TUI, `--serve` and a
cron one-shot can act on the same session without losing an update. Work that takes time runs
as *steps*: one readiness or teardown attempt that says when to try again. A process drives a
session by looping over steps (`ensure_driven`); a one-shot supervisor pass takes one step each.
Money paths are conservative: when we cannot tell whether an instance exists, it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import Alert, Event, EventBus, SessionChanged
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    MAX_RESERVATION_HOURS,
    InstanceState,
    Offer,
    ProvisionRequest,
    Session,
    SessionStatus,
    Severity,
    StoragePolicy,
)
from gpushop_tui.node import keys as node_keys
from gpushop_tui.node import probes
from gpushop_tui.node.ssh import NodeAddress, NodeError, connect
from gpushop_tui.providers.base import (
    DEFAULT_DISK_GB,
    CapacityError,
    CreateSpec,
    NotFound,
    OfferGone,
    Provider,
    ProviderBug,
    ProviderError,
    TransientError,
    label_for,
)
from gpushop_tui.providers.gpus import gpu_matches
from gpushop_tui.query import QueryError, parse_query
from gpushop_tui.store import DuplicateSession, Store

log = logging.getLogger(__name__)

Admission = Callable[[str, Offer, float], Awaitable[None]]
"""Checks a rental (consumer, offer, hours) before the provider is called; raises to refuse."""
ACTIVE = (SessionStatus.PENDING, SessionStatus.PROVISIONING, SessionStatus.RUNNING)
SMI_RECHECK_S = 5.0
"""Providers that rebuild drivers at boot must answer `nvidia-smi` twice, this far apart."""
READY_POLL_S = (5.0, 30.0)
"""Readiness polls back off from the first value to the second."""
DESTROY_BACKOFF_S = 5.0
"""First wait of the destroy queue; it doubles up to `destroy_backoff_max_s`, forever."""
ESCALATION = {4: Severity.WARNING, 7: Severity.ERROR, 10: Severity.CRITICAL}
"""Failed teardown attempts at which an alert is raised; critical again every 10 after that."""
VRAM_TOLERANCE = 0.95
"""A card reports a little less memory than its marketing size (24564 MiB for "24 GB")."""


class StaleOffer(UserError):
    """The offer is not in the current menu (taken, or the menu moved on): try again."""


class NotConfigured(UserError):
    """The offer's provider has no credential here."""


class SessionConflict(UserError):
    """The session is not in a state that allows the change asked for."""


class SessionNotFound(UserError):
    """No session with that id."""


class SessionProgress(Event):
    """What a session is waiting for now (readiness, teardown); stored only when it changes."""

    kind = "session_progress"
    note: str


@dataclass(frozen=True)
class Step:
    """The outcome of one lifecycle step: try again after `wait_s`, with what it waits for."""

    wait_s: float = 0.0
    note: str | None = None


def spec_mismatch(offer: Offer, spec: probes.NodeSpec) -> str | None:
    """Why the node is not what the offer promised (GPU model, count, VRAM, CUDA), or None."""
    if not spec.gpus:
        return "the node reports no GPU"
    if len(spec.gpus) < offer.gpu_count:
        return f"the node has {len(spec.gpus)} GPUs, the offer promised {offer.gpu_count}"
    wrong = [g.name for g in spec.gpus if not gpu_matches(offer.gpu_name, g.name)]
    if wrong:
        return f"the node has {wrong[0]}, the offer promised {offer.gpu_name}"
    sizes = [g.memory_total_mib for g in spec.gpus if g.memory_total_mib is not None]
    if sizes and min(sizes) / 1024 < offer.vram_gb * VRAM_TOLERANCE:
        return (
            f"the node's GPUs have {min(sizes) / 1024:.1f} GB of memory, "
            f"the offer promised {offer.vram_gb:g} GB"
        )
    if spec.cuda is not None and offer.cuda is not None and spec.cuda + 1e-6 < offer.cuda:
        return f"the node supports CUDA {spec.cuda:g}, the offer promised {offer.cuda:g}"
    return None


def wants_teardown(session: Session) -> bool:
    """Whether something may exist at the provider that should be stopped or destroyed."""
    if session.instance.absent:
        return session.status == SessionStatus.STOPPING
    return session.status in (SessionStatus.STOPPING, SessionStatus.FAILED)


Decision = tuple[dict[str, Any], str] | None
"""Changes to a session and the message that says why; None for nothing to change."""


class Lifecycle:
    """Moves sessions through their states; shared by the faces (via `Shopper`) and supervisor."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        providers: Mapping[str, Provider | None],
        inventory: Inventory,
        events: EventBus,
        clock: Clock,
        keys_dir: Path,
    ) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.inventory = inventory
        self.events = events
        self.clock = clock
        self.keys_dir = keys_dir
        self.new_session_id: Callable[[], str] = lambda: secrets.token_hex(6)
        """Makes session ids; tests that need stable ids (screenshots) replace it."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._creating: set[str] = set()
        self._polls: dict[str, int] = {}
        self._notes: dict[str, str] = {}
        self.admit: Admission | None = None
        """Asked before any rental reaches a provider (the budgets); raises to refuse it."""

    # ------------------------------------------------------------------ reading

    async def get(self, session_id: str) -> Session:
        session = await self.store.get_session(session_id)
        if session is None:
            raise SessionNotFound(f"no session {session_id!r} (see 'gpushop sessions list')")
        return session

    def adapter(self, provider: str) -> Provider | None:
        return self.providers.get(provider)

    def creating(self, session_id: str) -> bool:
        """Whether this process has a create call for the session in flight."""
        return session_id in self._creating

    def provision_budget(self, provider: str) -> timedelta:
        """How long a session of `provider` may take to become ready (DESIGN.md §3.7)."""
        seconds: float = getattr(self.settings, f"{provider}_provision_budget_s")
        return timedelta(seconds=seconds)

    # ------------------------------------------------------------------ changing

    async def change(
        self,
        session_id: str,
        decide: Callable[[Session], Decision],
        *,
        severity: Severity = Severity.INFO,
    ) -> Session | None:
        """Read, decide, compare-and-set; again if someone else changed the row meanwhile.

        Returns the session as stored afterwards (None if it does not exist). A change of
        status or instance stamps `state_entered_at` and is published as `SessionChanged`.
        """
        for _ in range(20):
            current = await self.store.get_session(session_id)
            if current is None:
                return None
            decision = decide(current)
            if decision is None:
                return current
            changes, message = decision
            moved = {"status", "instance"} & changes.keys()
            if moved:
                changes.setdefault("state_entered_at", self.clock.now())
            updated = await self.store.update_session(
                session_id, {"version": current.version}, **changes
            )
            if updated is None:
                continue
            if moved:
                await self.events.publish(
                    SessionChanged(
                        message=message,
                        session_id=session_id,
                        status=updated.status,
                        instance=updated.instance,
                        severity=severity,
                    )
                )
            elif message:
                log.info("session %s: %s", session_id, message)
            if updated.closed:
                self._forget(updated)
            return updated
        raise RuntimeError(f"session {session_id} kept changing under us")

    async def alert(
        self, session_id: str | None, alert: str, message: str, severity: Severity
    ) -> None:
        await self.events.publish(
            Alert(message=message, alert=alert, session_id=session_id, severity=severity)
        )

    async def progress(self, session: Session, note: str) -> None:
        """Tell subscribers what the session waits for; stored only when the note changes."""
        if self._notes.get(session.id) == note:
            return
        self._notes[session.id] = note
        await self.events.publish(SessionProgress(message=note, note=note, session_id=session.id))

    # ------------------------------------------------------------------ provisioning

    async def provision(self, request: ProvisionRequest) -> Session:
        """Rent an offer: commit the pending session, then call the provider in the background.

        Returns once the provider's instance id is committed (or the create call has ended),
        with the session `provisioning`; readiness continues in this process.
        """
        if request.request_id is not None:
            existing = await self.store.session_by_request_id(request.request_id)
            if existing is not None:
                return existing
        offer = await self._resolve_offer(request)
        adapter = self.adapter(offer.provider)
        if adapter is None:
            raise NotConfigured(f"{offer.provider} is not configured (see 'gpushop keys set')")
        if request.storage == StoragePolicy.KEEP and not adapter.can_stop:
            raise UserError(
                f"{offer.provider} cannot stop an instance and keep its disk; use --storage destroy"
            )
        if self.admit is not None:
            await self.admit(request.consumer, offer, request.hours)
        now = self.clock.now()
        session_id = self.new_session_id()
        label = label_for(self.store.install_id, session_id)
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
            await self.store.insert_session(session)
        except DuplicateSession:
            _remove_key_files(key_path)
            if request.request_id is not None:
                existing = await self.store.session_by_request_id(request.request_id)
                if existing is not None:
                    return existing
            raise
        await self.events.publish(
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
        self._spawn(session_id, self._create_then_drive(session, adapter, spec, known))
        await known.wait()
        return await self.get(session_id)

    async def _resolve_offer(self, request: ProvisionRequest) -> Offer:
        if request.offer_id is not None:
            provider = request.offer_id.split(":", 1)[0]
            if ":" not in request.offer_id or provider not in self.providers:
                raise UserError(
                    f"offer id {request.offer_id!r} should look like 'vastai:12345' "
                    "(see 'gpushop inventory')"
                )
            if self.adapter(provider) is None:
                raise NotConfigured(f"{provider} is not configured (see 'gpushop keys set')")
            offer = await self.inventory.find(request.offer_id)
            if offer is None:
                raise StaleOffer(
                    f"offer {request.offer_id!r} is not in the current menu "
                    "(it may be taken; see 'gpushop inventory')"
                )
            return offer
        assert request.query is not None
        try:
            query = parse_query(request.query, await self.inventory.benchmarks.models())
        except QueryError as err:
            raise UserError(str(err)) from None
        view = await self.inventory.view(query)
        if not view.offers:
            raise UserError(f"no offer matches {request.query!r} right now")
        return view.offers[0]

    async def _create_then_drive(
        self, session: Session, adapter: Provider, spec: CreateSpec, known: asyncio.Event
    ) -> None:
        try:
            await self._create(session, adapter, spec, known)
        finally:
            self._creating.discard(session.id)
            known.set()
        await self.drive(session.id)

    async def _create(
        self, session: Session, adapter: Provider, spec: CreateSpec, known: asyncio.Event
    ) -> None:
        """Phase two: mark the create as under way, call the provider, commit the id at once."""
        started = await self.change(
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
        began = self.clock.now()

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

        await self.change(session_id, decide)

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

        await self.change(session.id, decide, severity=Severity.ERROR)

    # ------------------------------------------------------------------ driving

    def ensure_driven(self, session_id: str) -> None:
        """Make sure this process works on the session until it needs nothing more."""
        task = self._tasks.get(session_id)
        if task is None or task.done():
            self._spawn(session_id, self.drive(session_id))

    def driven(self, session_id: str) -> bool:
        task = self._tasks.get(session_id)
        return task is not None and not task.done()

    def _spawn(self, session_id: str, work: Any) -> None:
        task = asyncio.create_task(work, name=f"session-{session_id}")
        self._tasks[session_id] = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("session task %s failed", task.get_name(), exc_info=task.exception())

    async def drive(self, session_id: str) -> None:
        """Take steps until the session needs nothing from this process (running, or closed)."""
        while True:
            session = await self.store.get_session(session_id)
            if session is None:
                return
            try:
                step = await self.step(session)
            except (OSError, ProviderError, NodeError) as err:  # keep going; never drop it
                log.warning("session %s: step failed: %s", session_id, err)
                step = Step(30.0, f"retrying after an error: {err}")
            except Exception:
                log.exception("session %s: step failed unexpectedly", session_id)
                step = Step(60.0, "retrying after an unexpected error (details in the log)")
            if step is None:
                return
            if step.note:
                await self.progress(session, step.note)
            await self.clock.sleep(step.wait_s)

    async def step(self, session: Session) -> Step | None:
        """One attempt at what the session needs now; None when it needs nothing."""
        if session.closed:
            return None
        if wants_teardown(session):
            return await self._teardown_step(session)
        if session.status == SessionStatus.PROVISIONING:
            if session.instance_id is None:
                if self.creating(session.id):
                    return Step(1.0, "waiting for the provider's create call")
                return Step(30.0, "waiting for reconciliation to find the instance")
            return await self._readiness_step(session)
        return None

    async def wait_settled(self, session_id: str, timeout_s: float) -> Session:
        """Wait (on this process's own work) until the session is running or closed."""
        deadline = self.clock.monotonic() + timeout_s
        with self.events.subscribe() as events:
            while True:
                session = await self.get(session_id)
                settled = session.status == SessionStatus.RUNNING or session.closed
                if settled or session.status == SessionStatus.STOPPED:
                    return session
                left = deadline - self.clock.monotonic()
                if left <= 0:
                    return session
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(left, 5.0)):
                        while (await events.get()).session_id != session_id:
                            pass

    # ------------------------------------------------------------------ readiness

    def _poll_wait(self, session_id: str) -> float:
        attempt = self._polls.get(session_id, 0)
        self._polls[session_id] = attempt + 1
        first, most = READY_POLL_S
        return min(most, first * 1.5**attempt)

    async def _readiness_step(self, session: Session) -> Step | None:
        adapter = self.adapter(session.provider)
        if adapter is None:
            return Step(60.0, f"{session.provider} has no credential; cannot check the instance")
        now = self.clock.now()
        budget = self.provision_budget(session.provider)
        if now - session.state_entered_at > budget:
            last = self._notes.get(session.id, "no answer")
            await self.fail(
                session.id,
                f"not ready after {budget.total_seconds() / 60:g} min ({last})",
                record_offer=True,
            )
            return Step()
        assert session.instance_id is not None
        try:
            status = await adapter.get(session.instance_id)
        except ProviderError as err:
            return Step(self._poll_wait(session.id), f"status call failed: {err.message}")
        if status is None:
            await self.instance_gone(session.id, "vanished while provisioning")
            return Step()
        if status.price_per_hour is not None and status.price_per_hour != session.price_per_hour:
            session = await self._charged(session.id, status.price_per_hour) or session
        if not status.running or not status.ssh_host or not status.ssh_port:
            return Step(self._poll_wait(session.id), f"instance is {status.state}")
        if (status.ssh_host, status.ssh_port) != (session.ssh_host, session.ssh_port):
            host, port = status.ssh_host, status.ssh_port
            updated = await self.change(
                session.id,
                lambda s: (
                    ({"ssh_host": host, "ssh_port": port}, f"SSH at {host}:{port}")
                    if (s.ssh_host, s.ssh_port) != (host, port)
                    else None
                ),
            )
            session = updated or session
        boot_delay = adapter.readiness.initial_delay_s * self.settings.boot_delay_scale
        ready_from = (session.instance_created_at or session.created_at) + timedelta(
            seconds=boot_delay
        )
        if now < ready_from:
            return Step((ready_from - now).total_seconds(), "waiting out the provider's boot time")
        try:
            spec = await self._probe(session, adapter)
        except NodeError as err:
            if err.kind == "host_key":
                await self.fail(session.id, f"refusing the node: {err.message}")
                return Step()
            if err.kind == "auth":
                await self._attach_key_again(session, adapter)
            return Step(self._poll_wait(session.id), f"SSH: {err.message}")
        if isinstance(spec, str):
            return Step(self._poll_wait(session.id), spec)
        mismatch = spec_mismatch(session.offer, spec)
        if mismatch is not None:
            await self.fail(session.id, f"wrong hardware: {mismatch}", record_offer=True)
            return Step()
        await self.change(
            session.id,
            lambda s: (
                (
                    {
                        "status": SessionStatus.RUNNING,
                        "last_busy_at": self.clock.now(),
                        "idle_reason": None,
                        "error": None,
                    },
                    f"ready: {len(spec.gpus)}x {spec.gpus[0].name} at "
                    f"{s.ssh_user}@{s.ssh_host}:{s.ssh_port}",
                )
                if s.status == SessionStatus.PROVISIONING
                else None
            ),
        )
        self._polls.pop(session.id, None)
        return None

    async def _charged(self, session_id: str, rate: float) -> Session | None:
        """Record the rate the provider says it charges, while the rental is being set up
        (the rate at rental time: a later change does not rewrite what was billed)."""
        return await self.change(
            session_id,
            lambda s: (
                ({"price_per_hour": rate}, f"the provider charges ${rate:.4f}/h")
                if s.status == SessionStatus.PROVISIONING and s.price_per_hour != rate
                else None
            ),
        )

    async def _attach_key_again(self, session: Session, adapter: Provider) -> None:
        """The node refuses our key: attach it again, in case the create that attached it was
        cut off after the instance existed (a lost response never means a lost key)."""
        assert session.instance_id is not None and session.key_path is not None
        public = Path(session.key_path).with_suffix(".pub")
        try:
            key = await asyncio.to_thread(public.read_text)
            await adapter.attach_key(session.instance_id, key)
        except (OSError, ProviderError) as err:
            log.warning("session %s: attaching the key again failed: %s", session.id, err)

    async def _probe(self, session: Session, adapter: Provider) -> probes.NodeSpec | str:
        """SSH in, pin the host key, and read the hardware; a string says what is not ready."""
        conn = await connect(self.address(session), timeout_s=self.settings.ssh_connect_timeout_s)
        async with conn:
            if session.host_key is None:
                await self._pin(session, conn.host_key)
            if not await probes.echo_ok(conn):
                return "the node does not answer 'echo ok' yet"
            if not adapter.readiness.probe_dpkg_and_smi:
                return await probes.read_spec(conn)
            if await probes.dpkg_lock_free(conn) is False:
                return "the dpkg lock is held (drivers still installing)"
            await probes.read_spec(conn)
            await self.clock.sleep(SMI_RECHECK_S)
            return await probes.read_spec(conn)

    async def _pin(self, session: Session, host_key: str) -> None:
        assert session.ssh_host is not None and session.ssh_port is not None
        await self.change(
            session.id,
            lambda s: (
                ({"host_key": host_key}, "host key pinned on first contact")
                if s.host_key is None
                else None
            ),
        )
        await asyncio.to_thread(
            node_keys.write_known_hosts,
            self.known_hosts_path(session.id),
            session.ssh_host,
            session.ssh_port,
            host_key,
        )

    def address(self, session: Session) -> NodeAddress:
        if not (session.ssh_host and session.ssh_port and session.ssh_user and session.key_path):
            raise UserError(f"session {session.id} has no SSH address yet")
        return NodeAddress(
            host=session.ssh_host,
            port=session.ssh_port,
            user=session.ssh_user,
            key_path=Path(session.key_path),
            host_key=session.host_key,
        )

    def known_hosts_path(self, session_id: str) -> Path:
        return self.keys_dir / f"{session_id}.known_hosts"

    async def fail(self, session_id: str, reason: str, *, record_offer: bool = False) -> None:
        """Fail a session that is not yet stopping; what exists is then destroyed."""
        updated = await self.change(
            session_id,
            lambda s: (
                ({"status": SessionStatus.FAILED, "error": reason}, f"failed: {reason}")
                if s.status in ACTIVE
                else None
            ),
            severity=Severity.ERROR,
        )
        if record_offer and updated is not None:
            await self.inventory.record_failure(updated.offer, reason, session_id=session_id)
        if updated is not None and wants_teardown(updated):
            self.ensure_driven(session_id)

    async def instance_gone(self, session_id: str, why: str) -> None:
        """The provider says the instance is gone: record it, and close what that closes."""

        def decide(s: Session) -> Decision:
            if s.instance.absent:
                return None
            changes: dict[str, Any] = {
                "instance": InstanceState.GONE,
                "instance_gone_at": self.clock.now(),
                "destroy_attempts": 0,
                "next_destroy_at": None,
            }
            if s.status == SessionStatus.STOPPING:
                changes["status"] = SessionStatus.STOPPED
            elif s.status in ACTIVE:
                changes["status"] = SessionStatus.FAILED
                changes["error"] = f"the provider reports the instance gone ({why})"
            return changes, f"instance {s.instance_id} is gone ({why})"

        updated = await self.change(session_id, decide)
        if updated is not None and updated.status == SessionStatus.FAILED and "vanished" in why:
            await self.inventory.record_failure(updated.offer, why, session_id=session_id)

    # ------------------------------------------------------------------ user actions

    async def done(self, session_id: str, reason: str = "requested") -> Session:
        """Graceful end: destroy, or stop and keep the disk when the policy says so."""

        def decide(s: Session) -> Decision:
            if s.status == SessionStatus.PENDING and s.instance == InstanceState.NONE:
                return {"status": SessionStatus.STOPPED}, f"cancelled before renting: {reason}"
            if s.status in ACTIVE:
                return {"status": SessionStatus.STOPPING, "next_destroy_at": None}, (
                    f"stopping: {reason}"
                )
            return None

        session = await self.change(session_id, decide)
        if session is None:
            raise SessionNotFound(f"no session {session_id!r} (see 'gpushop sessions list')")
        if wants_teardown(session):
            self.ensure_driven(session_id)
        return session

    async def delete(self, session_id: str, reason: str = "forced by the user") -> Session:
        """Destroy whatever exists, whatever the storage policy; harmless on a closed session."""

        def decide(s: Session) -> Decision:
            if s.closed:
                return None
            changes: dict[str, Any] = {"storage_policy": StoragePolicy.DESTROY}
            if s.status == SessionStatus.PENDING and s.instance == InstanceState.NONE:
                changes["status"] = SessionStatus.STOPPED
            elif s.status in (*ACTIVE, SessionStatus.STOPPED):
                changes["status"] = SessionStatus.STOPPING
            if s.storage_policy == StoragePolicy.DESTROY and "status" not in changes:
                return None
            changes["next_destroy_at"] = None
            return changes, f"destroying: {reason}"

        session = await self.change(session_id, decide, severity=Severity.WARNING)
        if session is None:
            raise SessionNotFound(f"no session {session_id!r} (see 'gpushop sessions list')")
        if wants_teardown(session):
            self.ensure_driven(session_id)
        return session

    async def extend(
        self, session_id: str, hours: float, override_reason: str | None = None
    ) -> Session:
        """Push the reservation out; never past the hard max without an audited reason."""
        if not 0 < hours <= MAX_RESERVATION_HOURS:
            raise UserError(f"extend by more than 0 and at most {MAX_RESERVATION_HOURS:g} hours")
        overridden: list[Session] = []

        def decide(s: Session) -> Decision:
            if s.status not in ACTIVE:
                raise SessionConflict(
                    f"session {s.id} is {s.status}; only an active one can be extended"
                )
            new_expiry = max(s.expires_at, self.clock.now()) + timedelta(hours=hours)
            if new_expiry <= s.hard_max_at:
                return {"expires_at": new_expiry}, f"extended to {new_expiry:%Y-%m-%d %H:%M} UTC"
            if not override_reason:
                raise UserError(
                    f"extending session {s.id} by {hours:g} h would end it at "
                    f"{new_expiry:%Y-%m-%d %H:%M} UTC, past its hard max "
                    f"{s.hard_max_at:%Y-%m-%d %H:%M} UTC; pass --override-hard-max REASON"
                )
            overridden.append(s)
            return {
                "expires_at": new_expiry,
                "hard_max_at": new_expiry,
                "hard_max_override": override_reason,
            }, f"hard max overridden to {new_expiry:%Y-%m-%d %H:%M} UTC"

        session = await self.change(session_id, decide)
        if session is None:
            raise SessionNotFound(f"no session {session_id!r} (see 'gpushop sessions list')")
        if overridden:
            await self.alert(
                session_id,
                "hard_max_override",
                f"hard max of session {session_id} moved from "
                f"{overridden[0].hard_max_at:%Y-%m-%d %H:%M} to "
                f"{session.hard_max_at:%Y-%m-%d %H:%M} UTC: {override_reason}",
                Severity.WARNING,
            )
        return session

    async def touch(self, session_id: str) -> Session:
        """An activity ping (from the API): the session is busy now."""
        session = await self.change(
            session_id,
            lambda s: (
                (
                    {"last_busy_at": self.clock.now(), "idle_reason": "busy: activity ping"},
                    "",
                )
                if s.status == SessionStatus.RUNNING
                else None
            ),
        )
        if session is None:
            raise SessionNotFound(f"no session {session_id!r} (see 'gpushop sessions list')")
        return session

    # ------------------------------------------------------------------ teardown

    async def _teardown_step(self, session: Session) -> Step | None:
        if session.instance.absent:
            await self.change(
                session.id,
                lambda s: (
                    ({"status": SessionStatus.STOPPED}, "stopped; nothing exists")
                    if s.status == SessionStatus.STOPPING and s.instance.absent
                    else None
                ),
            )
            return Step()
        adapter = self.adapter(session.provider)
        if adapter is None:
            await self.alert(
                session.id,
                "no_credential",
                f"session {session.id} cannot be torn down: {session.provider} has no credential",
                Severity.CRITICAL,
            )
            return Step(60.0, f"{session.provider} has no credential")
        if session.instance_id is None:
            return Step(30.0, "waiting to learn the instance id (create call or reconciliation)")
        now = self.clock.now()
        if session.next_destroy_at is not None and now < session.next_destroy_at:
            return Step((session.next_destroy_at - now).total_seconds(), None)
        keep = (
            session.status == SessionStatus.STOPPING
            and session.storage_policy == StoragePolicy.KEEP
            and adapter.can_stop
            and now < session.hard_max_at
        )
        if keep:
            return await self._stop_step(session, adapter)
        return await self._destroy_step(session, adapter)

    async def _destroy_step(self, session: Session, adapter: Provider) -> Step | None:
        instance_id = session.instance_id
        assert instance_id is not None
        if session.instance != InstanceState.DESTROYING:
            await self.change(
                session.id,
                lambda s: (
                    ({"instance": InstanceState.DESTROYING}, f"destroying {instance_id}")
                    if not s.instance.absent and s.instance != InstanceState.DESTROYING
                    else None
                ),
            )
        problem = None
        try:
            await adapter.destroy(instance_id)
        except NotFound:
            pass
        except ProviderError as err:
            problem = f"destroy call failed: {err.message}"
        try:
            status = await adapter.get(instance_id)
        except ProviderError as err:
            return await self._teardown_retry(session, f"cannot confirm: {err.message}")
        if status is None:
            await self.instance_gone(session.id, "destroyed")
            return Step()
        return await self._teardown_retry(
            session, problem or f"the provider still reports it ({status.state})"
        )

    async def _stop_step(self, session: Session, adapter: Provider) -> Step | None:
        instance_id = session.instance_id
        assert instance_id is not None
        try:
            status = await adapter.get(instance_id)
        except ProviderError as err:
            return await self._teardown_retry(session, f"cannot read it: {err.message}")
        if status is None:
            await self.instance_gone(session.id, "gone while stopping")
            return Step()
        if not status.running:
            now, disk_rate = self.clock.now(), adapter.stopped_price_per_hour(session.offer)
            await self.change(
                session.id,
                lambda s: (
                    (
                        {
                            "status": SessionStatus.STOPPED,
                            "destroy_attempts": 0,
                            "next_destroy_at": None,
                            "stopped_at": now,
                            "stopped_price_per_hour": disk_rate,
                        },
                        f"stopped ({status.state}); disk kept until the hard max "
                        f"{s.hard_max_at:%Y-%m-%d %H:%M} UTC",
                    )
                    if s.status == SessionStatus.STOPPING
                    else None
                ),
            )
            return Step()
        problem = None
        try:
            await adapter.stop(instance_id)
        except ProviderError as err:
            problem = f"stop call failed: {err.message}"
        return await self._teardown_retry(session, problem or f"still {status.state}")

    async def _teardown_retry(self, session: Session, why: str) -> Step:
        """Count a teardown attempt that did not finish; back off; escalate; never give up."""
        now = self.clock.now()
        counted: list[int] = []

        def decide(s: Session) -> Decision:
            if s.instance.absent:
                return None
            attempts = s.destroy_attempts + 1
            counted[:] = [attempts]
            wait = timedelta(seconds=self._teardown_backoff(attempts))
            return {"destroy_attempts": attempts, "next_destroy_at": now + wait}, ""

        await self.change(session.id, decide)
        if not counted:
            return Step()
        attempts = counted[0]
        wait = self._teardown_backoff(attempts)
        severity = ESCALATION.get(attempts)
        if severity is None and attempts > 10 and attempts % 10 == 0:
            severity = Severity.CRITICAL
        if severity is not None:
            await self.alert(
                session.id,
                "teardown_failing",
                f"session {session.id}: {session.provider} instance {session.instance_id} is "
                f"not gone after {attempts} attempts ({why}); still retrying",
                severity,
            )
        return Step(wait, f"teardown attempt {attempts}: {why}; next in {wait:g} s")

    def _teardown_backoff(self, attempts: int) -> float:
        return min(self.settings.destroy_backoff_max_s, DESTROY_BACKOFF_S * 2 ** (attempts - 1))

    def _forget(self, session: Session) -> None:
        """A closed session: drop what this process kept about it, and its key files."""
        self._polls.pop(session.id, None)
        self._notes.pop(session.id, None)
        if session.key_path:
            _remove_key_files(Path(session.key_path))
        with contextlib.suppress(FileNotFoundError):
            self.known_hosts_path(session.id).unlink()

    async def finish_teardowns(self, timeout_s: float) -> None:
        """Give teardowns already under way up to `timeout_s` to finish before the process
        stops (a cut-off one is resumed by the next supervisor from the stored state)."""
        stopping = {
            s.id
            for s in await self.store.list_sessions(open_only=True)
            if s.status == SessionStatus.STOPPING
        }
        tasks = [t for sid, t in self._tasks.items() if sid in stopping and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def aclose(self) -> None:
        """Stop this process's work; every session stays where it stood, for the next process."""
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _remove_key_files(private_path: Path) -> None:
    for path in (private_path, private_path.with_suffix(".pub")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
