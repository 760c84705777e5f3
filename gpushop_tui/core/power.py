"""Power off, power on: a running session stopped with its disk kept, and started again.

A stop is a teardown that keeps the disk (`Teardown.stop`, confirmed by the destroy queue's stop
step). A start is admitted by the budgets like a rental, commits `starting` first (the intent
survives a kill), then asks the provider to start the instance once, and hands a running
instance to readiness, which checks it like a new rental (SSH, the hardware, the workload's
health). The disk bills until the provider says running; the GPU from then on, and the new
reservation counts from when the session runs. A start that cannot complete (no capacity,
never running within the provider's budget, the wrong hardware) goes back to stopped with the
reason, its disk kept until the user decides; it never fails the session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from gpushop_tui.config import Settings
from gpushop_tui.core import costs
from gpushop_tui.core.provisioning import Admission
from gpushop_tui.core.readiness import Readiness
from gpushop_tui.core.rows import (
    Decision,
    NotConfigured,
    SessionConflict,
    SessionNotFound,
    SessionPower,
    SessionRows,
    Step,
)
from gpushop_tui.core.teardown import Teardown
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import Session, SessionStatus
from gpushop_tui.providers.base import CapacityError, Provider, ProviderError

START_POLL_S = 10.0
"""How often a start is checked while the provider has not said running."""


class Power:
    """Stops and starts sessions whose provider keeps a stopped instance's disk."""

    def __init__(
        self,
        *,
        rows: SessionRows,
        providers: Mapping[str, Provider | None],
        settings: Settings,
        teardown: Teardown,
        readiness: Readiness,
        ensure_driven: Callable[[str], None],
    ) -> None:
        self.rows = rows
        self.providers = providers
        self.settings = settings
        self.teardown = teardown
        self.readiness = readiness
        self._ensure_driven = ensure_driven

    def _can_stop(self, session: Session) -> None:
        adapter = self.providers.get(session.provider)
        if adapter is None:
            raise NotConfigured.for_provider(session.provider)
        if not adapter.can_stop:
            raise UserError(
                f"{adapter.INFO.display_name} cannot stop an instance and keep its disk; "
                f"session {session.id} can only be ended",
                field="session_id",
                hint=Hint.CANNOT_STOP,
            )

    async def stop(self, session_id: str, *, by: str, keep_days: float | None) -> Session:
        """Power a running session off, keeping its disk; answers once the stop is committed
        (the drive loop carries it out)."""
        self._can_stop(await self.rows.get(session_id))
        session = await self.teardown.stop(session_id, f"asked by {by}", keep_days)
        await self.audit(session, "stop", by)
        return session

    async def start(
        self, session_id: str, *, by: str, hours: float | None, admit: Admission | None
    ) -> Session:
        """Power a stopped session on for a new reservation (`hours`, or its own length) and a
        hard max counted from now; answers once `starting` is committed. `admit` (the
        budgets) may refuse it first, as it would a rental of the same GPU."""
        current = await self.rows.get(session_id)
        self._can_stop(current)
        if admit is not None and current.status == SessionStatus.STOPPED:
            rate = current.price_per_hour or current.offer.price_per_hour
            offer = current.offer.model_copy(update={"price_per_hour": rate})
            length = hours if hours is not None else current.reservation_hours
            await admit(current.consumer, offer, length, current.id)
        now = self.rows.clock.now()
        hard_max = timedelta(hours=self.settings.hard_max_hours)

        def decide(s: Session) -> Decision:
            if s.status != SessionStatus.STOPPED:
                raise SessionConflict(
                    f"session {s.id} is {s.status}; only a stopped session can be started"
                )
            length = timedelta(hours=hours if hours is not None else s.reservation_hours)
            changes: dict[str, Any] = {
                "status": SessionStatus.STARTING,
                "keep_until": None,
                "watchdog_deadline": None,
                "watchdog_error": None,
                "expires_at": now + min(length, hard_max),
                "hard_max_at": now + hard_max,
                "hard_max_override": None,
                "power_requested_at": None,
                "workload_started_at": None,
                "workload_phase": None,
                "endpoint": None,
                "endpoint_public": None,
                "last_busy_at": None,
                "idle_reason": None,
                "error": None,
                "destroy_attempts": 0,
                "next_destroy_at": None,
            }
            if hours is not None:
                changes["reservation_hours"] = hours
            return changes, f"starting: asked by {by}"

        session = await self.rows.change(session_id, decide)
        if session is None:
            raise SessionNotFound.for_id(session_id)
        await self.audit(session, "start", by)
        self._ensure_driven(session_id)
        return session

    async def _gpu_bills(self, session_id: str) -> Session | None:
        """The provider says the started instance runs: its disk stretch ends and its GPU
        bills from now."""
        now = self.rows.clock.now()
        return await self.rows.change(
            session_id,
            lambda s: (
                (
                    {
                        "cycles": costs.closing_stretch(s, now),
                        "stopped_at": None,
                        "stopped_price_per_hour": None,
                    },
                    "the instance runs again: its GPU bills from now",
                )
                if s.status == SessionStatus.STARTING and s.stopped_at is not None
                else None
            ),
        )

    async def audit(self, session: Session, action: str, by: str) -> None:
        """Record who asked for a stop or a start of `session` (the audit log's `by`)."""
        words = {"stop": "stop (disk kept)", "start": "start"}[action]
        await self.rows.events.publish(
            SessionPower(
                message=f"{words} of session {session.id} asked by {by}",
                session_id=session.id,
                action=action,
                by=by,
            )
        )

    async def step(self, session: Session) -> Step | None:
        """One check of a starting session: ask the provider once, wait for it to say running
        (within the provider's budget), then readiness checks the node as for a rental."""
        adapter = self.providers.get(session.provider)
        if adapter is None:
            return Step(60.0, f"{session.provider} has no credential; cannot start the instance")
        instance_id = session.instance_id
        assert instance_id is not None
        budget = self.readiness.budget(session.provider)
        waited = self.rows.clock.now() - session.state_entered_at
        if session.workload_started_at is None and waited > budget:
            last = self.rows.note(session.id) or "no answer"
            await self.teardown.fail(
                session.id, f"not running after {budget.total_seconds() / 60:g} min ({last})"
            )
            return Step()
        try:
            status = await adapter.get(instance_id)
        except ProviderError as err:
            return Step(START_POLL_S, f"status call failed: {err.message}")
        if status is None:
            await self.teardown.instance_gone(session.id, "vanished while starting")
            return Step()
        if status.running and session.stopped_at is not None:
            session = await self._gpu_bills(session.id) or session
        if status.running or session.workload_started_at is not None:
            step = await self.readiness.step(session)  # it keeps the workload's own budget
            if step is None:  # it runs: its reservation, so its node's deadline, counts from now
                ran = await self.rows.get(session.id)
                if self.readiness.watchdogs.out_of_date(ran):
                    await self.readiness.watchdogs.move(ran)
            return step
        if session.power_requested_at is None:
            session = await self.teardown.ttls.sync(session)  # to the new hard max
            try:
                await adapter.start(instance_id)
            except CapacityError as err:
                await self.teardown.fail(session.id, f"no capacity to start: {err.message}")
                return Step()
            except ProviderError as err:
                return Step(START_POLL_S, f"start call failed: {err.message}")
            now = self.rows.clock.now()
            await self.rows.change(
                session.id,
                lambda s: (
                    ({"power_requested_at": now}, "the provider accepted the start")
                    if s.status == SessionStatus.STARTING and s.power_requested_at is None
                    else None
                ),
            )
            return Step(START_POLL_S, "start asked for; waiting for the provider")
        return Step(START_POLL_S, f"instance is {status.state}")
