"""Sessions: the two-phase rental, readiness over SSH, graceful stop and verified destroy.

DESIGN.md §2-§5. `Lifecycle` is the state machine and its public API; its parts are beside it:
`rows` (the compare-and-set writer, the errors and step outcomes they all share),
`provisioning` (the two-phase create), `readiness` (SSH, host key, hardware check) and
`teardown` (done, delete, fail and the destroy queue). Work that takes time runs as *steps*:
one readiness or teardown attempt that says when to try again. A process drives a session by
looping over steps (`ensure_driven`); a one-shot supervisor pass takes one step each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import EventBus
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.core.power import Power
from gpushop_tui.core.provisioning import Admission, Provisioning, Rental, remove_key_files
from gpushop_tui.core.readiness import Readiness
from gpushop_tui.core.rows import (
    ACTIVE,
    Decision,
    NotConfigured,
    SessionConflict,
    SessionExtended,
    SessionNotFound,
    SessionPower,
    SessionProgress,
    SessionRows,
    StaleOffer,
    Step,
)
from gpushop_tui.core.teardown import Teardown, wants_teardown
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import (
    ProvisionRequest,
    Session,
    SessionStatus,
    Severity,
)
from gpushop_tui.node.ssh import NodeAddress, NodeError
from gpushop_tui.providers.base import Provider, ProviderError
from gpushop_tui.store import Store

__all__ = [
    "ACTIVE",
    "Decision",
    "Lifecycle",
    "NotConfigured",
    "SessionConflict",
    "SessionExtended",
    "SessionNotFound",
    "SessionPower",
    "SessionProgress",
    "StaleOffer",
    "wants_teardown",
]

log = logging.getLogger(__name__)

RECORD_GRACE_S = 10.0
"""How long closing the process waits for committed changes to finish their records."""


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
        self.admit: Admission | None = None
        """Asked before any rental reaches a provider (the budgets); raises to refuse it."""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.rows = SessionRows(store=store, events=events, clock=clock, on_closed=self._forget)
        self.teardown = Teardown(
            rows=self.rows,
            providers=providers,
            settings=settings,
            inventory=inventory,
            ensure_driven=self.ensure_driven,
            creating=self.creating,
            adopt=self.record_instance,
        )
        self.readiness = Readiness(
            rows=self.rows,
            providers=providers,
            settings=settings,
            keys_dir=keys_dir,
            teardown=self.teardown,
            benchmarks=inventory.benchmarks,
        )
        self.power = Power(
            rows=self.rows,
            providers=providers,
            settings=settings,
            teardown=self.teardown,
            readiness=self.readiness,
            ensure_driven=self.ensure_driven,
        )
        self.provisioning = Provisioning(
            rows=self.rows,
            providers=providers,
            inventory=inventory,
            settings=settings,
            keys_dir=keys_dir,
            start=self._spawn,
            drive=self.drive,
        )

    # ------------------------------------------------------------------ reading

    async def get(self, session_id: str) -> Session:
        return await self.rows.get(session_id)

    def adapter(self, provider: str) -> Provider | None:
        return self.providers.get(provider)

    def creating(self, session_id: str) -> bool:
        """Whether this process has a create call for the session in flight."""
        return self.provisioning.creating(session_id)

    def provision_budget(self, provider: str) -> timedelta:
        """How long a session of `provider` may take to become ready (DESIGN.md §3.7)."""
        return self.readiness.budget(provider)

    def address(self, session: Session) -> NodeAddress:
        return self.readiness.address(session)

    def known_hosts_path(self, session_id: str) -> Path:
        return self.readiness.known_hosts_path(session_id)

    # ------------------------------------------------------------------ changing

    async def change(
        self,
        session_id: str,
        decide: Callable[[Session], Decision],
        *,
        severity: Severity = Severity.INFO,
    ) -> Session | None:
        """Compare-and-set one session (see `SessionRows.change`)."""
        return await self.rows.change(session_id, decide, severity=severity)

    async def alert(
        self, session_id: str | None, alert: str, message: str, severity: Severity
    ) -> None:
        await self.rows.alert(session_id, alert, message, severity)

    async def provision(self, request: ProvisionRequest) -> Rental:
        """Rent an offer; returns with the session provisioning (readiness goes on here)."""
        return await self.provisioning.provision(
            request, admit=self.admit, new_session_id=self.new_session_id
        )

    async def record_instance(self, session_id: str, instance_id: str, began: datetime) -> None:
        """Commit the provider's id for the session's instance (the create call's or adopted)."""
        await self.provisioning.record_instance(session_id, instance_id, began)

    async def fail(self, session_id: str, reason: str, *, record_offer: bool = False) -> None:
        """Fail a session that is not yet stopping; what exists is then destroyed."""
        await self.teardown.fail(session_id, reason, record_offer=record_offer)

    async def instance_gone(self, session_id: str, why: str) -> None:
        """The provider says the instance is gone: record it, and close what that closes."""
        await self.teardown.instance_gone(session_id, why)

    # ------------------------------------------------------------------ driving

    def ensure_driven(self, session_id: str) -> None:
        """Make sure this process works on the session until it needs nothing more."""
        task = self._tasks.get(session_id)
        if task is None or task.done():
            self._spawn(session_id, self.drive(session_id))

    def driven(self, session_id: str) -> bool:
        task = self._tasks.get(session_id)
        return task is not None and not task.done()

    def _spawn(self, session_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name=f"session-{session_id}")
        self._tasks[session_id] = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("session task %s failed", task.get_name(), exc_info=task.exception())

    async def drive(self, session_id: str) -> None:
        """Take steps until the session needs nothing from this process (running, or closed).

        Every wait between steps is cut short when someone else changes the session (a `done`
        during the provider's boot time acts at once, not when the wait ends).
        """
        with self.rows.driving(session_id) as changed:
            while True:
                changed.clear()
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
                    await self.rows.progress(session, step.note)
                await self.rows.pause(session_id, step.wait_s)

    async def step(self, session: Session) -> Step | None:
        """One attempt at what the session needs now; None when it needs nothing."""
        if session.closed:
            return None
        if wants_teardown(session):
            return await self.teardown.step(session)
        if session.status == SessionStatus.PROVISIONING:
            if session.instance_id is None:
                if self.creating(session.id):
                    return Step(1.0, "waiting for the provider's create call")
                return Step(30.0, "waiting for reconciliation to find the instance")
            return await self.readiness.step(session)
        if session.status == SessionStatus.STARTING:
            return await self.power.step(session)
        return None

    async def wait_settled(self, session_id: str, timeout_s: float) -> Session:
        """Wait (on this process's own work) until the session is running, stopped (its disk
        kept) or closed."""
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

    # ------------------------------------------------------------------ user actions

    async def done(self, session_id: str, reason: str = "requested") -> Session:
        """Graceful end: destroy, or stop and keep the disk when the policy says so (audited
        as a stop asked for by `reason`)."""
        before = await self.get(session_id)
        session = await self.teardown.done(session_id, reason)
        if session.keep_disk and not before.keep_disk:
            await self.power.audit(session, "stop", reason)
        return session

    async def stop(self, session_id: str, *, by: str, keep_days: float | None = None) -> Session:
        """Power a running session off, keeping its disk (see `core/power.py`)."""
        return await self.power.stop(session_id, by=by, keep_days=keep_days)

    async def start(self, session_id: str, *, by: str, hours: float | None = None) -> Session:
        """Power a stopped session on again (see `core/power.py`)."""
        return await self.power.start(session_id, by=by, hours=hours, admit=self.admit)

    async def delete(self, session_id: str, reason: str = "forced by the user") -> Session:
        """Destroy whatever exists, whatever the storage policy; harmless on a closed session."""
        return await self.teardown.delete(session_id, reason)

    async def extend(
        self, session_id: str, hours: float, override_reason: str | None = None
    ) -> Session:
        """Push the reservation out; never past the hard max without an audited reason.

        `hours` and `override_reason` are an `ExtendRequest`'s, already validated. Granted or
        refused, the extend is an audit event (`SessionExtended`) in the session's timeline.
        """
        overridden: list[Session] = []
        granted: list[str] = []

        def decide(s: Session) -> Decision:
            if s.status not in ACTIVE:
                raise SessionConflict(
                    f"session {s.id} is {s.status}; only an active one can be extended"
                )
            now = self.clock.now()
            new_expiry = max(s.expires_at, now) + timedelta(hours=hours)
            shown = (
                f"{new_expiry:%H:%M}"
                if new_expiry.date() == now.date()
                else f"{new_expiry:%Y-%m-%d %H:%M}"
            )
            message = f"extended by {hours:g} h to {shown} UTC"
            if new_expiry <= s.hard_max_at:
                granted[:] = [message]
                return {"expires_at": new_expiry}, message
            if not override_reason:
                raise UserError(
                    f"extending session {s.id} by {hours:g} h would end it at "
                    f"{new_expiry:%Y-%m-%d %H:%M} UTC, past its hard max "
                    f"{s.hard_max_at:%Y-%m-%d %H:%M} UTC; it needs an override reason",
                    field="override_reason",
                    hint=Hint.NEEDS_OVERRIDE,
                )
            overridden[:] = [s]
            granted[:] = [f"{message}, past its hard max: {override_reason}"]
            return {
                "expires_at": new_expiry,
                "hard_max_at": new_expiry,
                "hard_max_override": override_reason,
            }, granted[0]

        try:
            session = await self.change(session_id, decide)
        except UserError as refusal:
            await self.events.publish(
                SessionExtended(
                    message=f"extend by {hours:g} h refused: {refusal.message}",
                    severity=Severity.WARNING,
                    session_id=session_id,
                    hours=hours,
                    granted=False,
                )
            )
            raise
        if session is None:
            raise SessionNotFound.for_id(session_id)
        if self.readiness.watchdogs.out_of_date(session):
            session = await self.readiness.watchdogs.move(session)
        session = await self.teardown.ttls.sync(session)  # a hard max moved by an override
        await self.events.publish(
            SessionExtended(
                message=granted[0],
                session_id=session_id,
                hours=hours,
                granted=True,
                expires_at=session.expires_at,
            )
        )
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
            raise SessionNotFound.for_id(session_id)
        return session

    # ------------------------------------------------------------------ ending the process

    def _forget(self, session: Session) -> None:
        """A closed session: drop what this process kept about it, and its key files."""
        self.readiness.forget(session.id)
        if session.key_path:
            remove_key_files(Path(session.key_path))

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
        """Stop this process's work; every session stays where it stood, for the next process.

        Changes already committed still write their records (audit event, key files removed),
        for up to `RECORD_GRACE_S`: a one-shot command exits with its close recorded.
        """
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.rows.settle(RECORD_GRACE_S)
