"""Ending sessions: graceful stop, forced delete, failure, and the destroy queue (DESIGN.md §5).

Money paths are conservative: when we cannot tell whether an instance exists, it does, and the
queue keeps trying, backing off and escalating alerts, but never gives up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from gpushop_tui.config import Settings
from gpushop_tui.core import costs
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.core.rows import (
    ACTIVE,
    Decision,
    SessionConflict,
    SessionNotFound,
    SessionRows,
    Step,
)
from gpushop_tui.core.ttl import KEEP_STOP_GRACE, ProviderTtls
from gpushop_tui.models import InstanceState, Session, SessionStatus, Severity, StoragePolicy
from gpushop_tui.providers.base import NotFound, Provider, ProviderError

log = logging.getLogger(__name__)

DESTROY_BACKOFF_S = 5.0
"""First wait of the destroy queue; it doubles up to `destroy_backoff_max_s`, forever."""
ESCALATION = {4: Severity.WARNING, 7: Severity.ERROR, 10: Severity.CRITICAL}
"""Failed teardown attempts at which an alert is raised; critical again every 10 after that."""


def wants_teardown(session: Session) -> bool:
    """Whether something may exist at the provider that should be stopped or destroyed."""
    if session.instance.absent:
        return session.status == SessionStatus.STOPPING
    return session.status in (SessionStatus.STOPPING, SessionStatus.FAILED)


class Teardown:
    """Moves sessions towards closed and takes the stop/destroy steps that get them there."""

    def __init__(
        self,
        *,
        rows: SessionRows,
        providers: Mapping[str, Provider | None],
        settings: Settings,
        inventory: Inventory,
        ensure_driven: Callable[[str], None],
        creating: Callable[[str], bool],
        adopt: Callable[[str, str, datetime], Awaitable[None]],
    ) -> None:
        self.rows = rows
        self.providers = providers
        self.settings = settings
        self.inventory = inventory
        self._ensure_driven = ensure_driven
        """Starts this process's drive loop for a session that now wants teardown."""
        self._creating = creating
        """Whether this process has the session's create call in flight."""
        self._adopt = adopt
        """Commits an instance id found for a session (`Provisioning.record_instance`)."""
        self.ttls = ProviderTtls(rows=rows, providers=providers)

    # ------------------------------------------------------------------ ending a session

    async def done(self, session_id: str, reason: str) -> Session:
        """Graceful end: destroy, or stop and keep the disk when the policy says so; a stopped
        session's kept disk is destroyed (it is done with)."""

        def decide(s: Session) -> Decision:
            if s.status == SessionStatus.PENDING and s.instance == InstanceState.NONE:
                return {"status": SessionStatus.ENDED}, f"cancelled before renting: {reason}"
            if s.status in ACTIVE:
                keep = s.storage_policy == StoragePolicy.KEEP
                return {
                    "status": SessionStatus.STOPPING,
                    "keep_disk": keep,
                    "next_destroy_at": None,
                }, f"{'stopping, keeping the disk' if keep else 'stopping'}: {reason}"
            if s.status == SessionStatus.STOPPED or (
                s.status == SessionStatus.STOPPING and s.keep_disk
            ):
                return {"status": SessionStatus.STOPPING, "keep_disk": False}, (
                    f"destroying the kept disk: {reason}"
                )
            return None

        return await self._end(session_id, decide, Severity.INFO)

    async def delete(self, session_id: str, reason: str) -> Session:
        """Destroy whatever exists, whatever the storage policy; harmless on a closed session."""

        def decide(s: Session) -> Decision:
            if s.closed:
                return None
            changes: dict[str, Any] = {"keep_disk": False}
            if s.status == SessionStatus.PENDING and s.instance == InstanceState.NONE:
                changes["status"] = SessionStatus.ENDED
            elif s.status in (*ACTIVE, SessionStatus.STOPPED):
                changes["status"] = SessionStatus.STOPPING
            if not s.keep_disk and "status" not in changes:
                return None
            changes["next_destroy_at"] = None
            return changes, f"destroying: {reason}"

        return await self._end(session_id, decide, Severity.WARNING)

    async def stop(self, session_id: str, reason: str, keep_days: float | None) -> Session:
        """Power a running session off and keep its disk (for `keep_days`, if given)."""

        def decide(s: Session) -> Decision:
            if s.status != SessionStatus.RUNNING:
                raise SessionConflict(
                    f"session {s.id} is {s.status}; only a running session can be stopped"
                )
            changes: dict[str, Any] = {
                "status": SessionStatus.STOPPING,
                "keep_disk": True,
                "next_destroy_at": None,
            }
            if keep_days is not None:
                changes["keep_days"] = keep_days
            return changes, f"stopping, keeping the disk: {reason}"

        return await self._end(session_id, decide, Severity.INFO)

    async def _end(
        self, session_id: str, decide: Callable[[Session], Decision], severity: Severity
    ) -> Session:
        session = await self.rows.change(session_id, decide, severity=severity)
        if session is None:
            raise SessionNotFound.for_id(session_id)
        if wants_teardown(session):
            self._ensure_driven(session_id)
        return session

    async def fail(self, session_id: str, reason: str, *, record_offer: bool = False) -> None:
        """Fail a session that is not yet stopping; what exists is then destroyed. A session
        being started again goes back to stopped instead, its disk kept, with the reason."""
        updated = await self.rows.change(
            session_id,
            lambda s: (
                (
                    {
                        "status": SessionStatus.STOPPING,
                        "keep_disk": True,
                        "error": f"start failed: {reason}",
                        "next_destroy_at": None,
                    },
                    f"start failed: {reason}; stopping it again, keeping the disk",
                )
                if s.status == SessionStatus.STARTING
                else ({"status": SessionStatus.FAILED, "error": reason}, f"failed: {reason}")
                if s.status in ACTIVE
                else None
            ),
            severity=Severity.ERROR,
        )
        if record_offer and updated is not None and updated.status == SessionStatus.FAILED:
            await self.inventory.record_failure(updated.offer, reason, session_id=session_id)
        if updated is not None and wants_teardown(updated):
            self._ensure_driven(session_id)

    async def instance_gone(self, session_id: str, why: str) -> None:
        """The provider says the instance is gone: record it, and close what that closes."""

        def decide(s: Session) -> Decision:
            if s.instance.absent:
                return None
            changes: dict[str, Any] = {
                "instance": InstanceState.GONE,
                "instance_gone_at": self.rows.clock.now(),
                "destroy_attempts": 0,
                "next_destroy_at": None,
            }
            if s.status == SessionStatus.STOPPING and not s.keep_disk:
                changes["status"] = SessionStatus.ENDED
            elif s.status in (*ACTIVE, SessionStatus.STOPPED, SessionStatus.STOPPING):
                changes["status"] = SessionStatus.FAILED
                changes["error"] = f"the provider reports the instance gone ({why})"
            return changes, f"instance {s.instance_id} is gone ({why})"

        lost: list[Session] = []
        recorded: list[Session] = []

        def unexpected(s: Session) -> Decision:
            decision = decide(s)
            recorded[:] = [s] if decision is not None else []
            kept = s.status == SessionStatus.STOPPED or (
                s.status == SessionStatus.STOPPING and s.keep_disk
            )
            nobody_ended = kept or s.status in ACTIVE
            lost[:] = [s] if decision is not None and nobody_ended else []
            return decision

        updated = await self.rows.change(
            session_id,
            unexpected,
            severity=lambda s: Severity.WARNING if lost else Severity.INFO,
        )
        if recorded:
            await self.release(recorded[0])
        if updated is None or not lost:
            return
        await self.rows.alert(
            session_id,
            "instance_vanished",
            f"session {session_id}: {updated.provider} instance {lost[0].instance_id} is gone "
            f"although nobody ended it ({why}); the session is failed",
            Severity.WARNING,
        )
        if "vanished" in why:
            await self.inventory.record_failure(updated.offer, why, session_id=session_id)

    async def release(self, session: Session) -> None:
        """Its instance is gone, or none was ever created: remove what the adapter registered
        for it at the provider (Lambda's SSH key). A failure is logged, never in the way of
        the close."""
        adapter = self.providers.get(session.provider)
        if adapter is None:
            return
        try:
            await adapter.release(session.label)
        except ProviderError as err:
            log.warning(
                "session %s: could not release its %s leftovers: %s",
                session.id,
                session.provider,
                err.message,
            )

    # ------------------------------------------------------------------ the destroy queue

    async def step(self, session: Session) -> Step | None:
        """One stop or destroy attempt for a session that `wants_teardown`."""
        if session.instance.absent:
            await self.rows.change(
                session.id,
                lambda s: (
                    ({"status": SessionStatus.ENDED}, "ended; nothing exists")
                    if s.status == SessionStatus.STOPPING and s.instance.absent
                    else None
                ),
            )
            return Step()
        adapter = self.providers.get(session.provider)
        if adapter is None:
            await self.rows.alert(
                session.id,
                "no_credential",
                f"session {session.id} cannot be torn down: {session.provider} has no credential",
                Severity.CRITICAL,
            )
            return Step(60.0, f"{session.provider} has no credential")
        if session.instance_id is None:
            return await self._look_up(session, adapter)
        now = self.rows.clock.now()
        if session.next_destroy_at is not None and now < session.next_destroy_at:
            return Step((session.next_destroy_at - now).total_seconds(), None)
        keep = (
            session.status == SessionStatus.STOPPING
            and session.keep_disk
            and adapter.can_stop
            and now < session.hard_max_at + KEEP_STOP_GRACE
        )
        if keep:
            return await self._stop_step(session, adapter)
        if session.keep_disk:
            why = (
                f"{adapter.INFO.display_name} cannot stop an instance"
                if not adapter.can_stop
                else f"the stop did not complete by the hard max (+{KEEP_STOP_GRACE})"
            )
            await self.rows.change(
                session.id,
                lambda s: (
                    ({"keep_disk": False}, "")
                    if s.keep_disk and s.status == SessionStatus.STOPPING
                    else None
                ),
            )
            await self.rows.alert(
                session.id,
                "keep_stop_failed",
                f"session {session.id}: {why}; destroying the instance instead, disk included",
                Severity.WARNING,
            )
        return await self._destroy_step(session, adapter)

    async def _look_up(self, session: Session, adapter: Provider) -> Step:
        """A session to end whose instance id is not known here: wait for this process's own
        create call, else find the instance by its label in the provider's list (a one-shot
        that rented it exited before the provider named it), so the end does not wait for a
        reconciliation."""
        if self._creating(session.id):
            return Step(1.0, "waiting for the provider's create call to name the instance")
        try:
            listed = await adapter.list_ours()
        except ProviderError as err:
            return Step(30.0, f"waiting to learn the instance id (its list failed: {err.message})")
        found = [status for status in listed if status.label == session.label]
        if not found:
            return Step(30.0, "waiting to learn the instance id (not listed yet; still looking)")
        await self._adopt(session.id, found[0].instance_id, session.state_entered_at)
        return Step()

    async def _destroy_step(self, session: Session, adapter: Provider) -> Step | None:
        instance_id = session.instance_id
        assert instance_id is not None
        if session.instance != InstanceState.DESTROYING:
            await self.rows.change(
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
            return await self._retry(session, f"cannot confirm: {err.message}")
        if status is None:
            await self.instance_gone(session.id, "destroyed")
            return Step()
        return await self._retry(
            session, problem or f"the provider still reports it ({status.state})"
        )

    async def _stop_step(self, session: Session, adapter: Provider) -> Step | None:
        """One try at powering the instance off with its disk kept; once the provider says it
        is stopped (not merely not running), the session is stopped."""
        instance_id = session.instance_id
        assert instance_id is not None
        try:
            status = await adapter.get(instance_id)
        except ProviderError as err:
            return await self._retry(session, f"cannot read it: {err.message}")
        if status is None:
            await self.instance_gone(session.id, "gone while stopping")
            return Step()
        if not status.stopped or session.power_requested_at is not None:
            # running, on its way down, or a start we asked for may still be pending there
            # (Vast's "scheduling" starts it once GPUs free up; a "stopped" read just after an
            # accepted start may be stale): ask for the stop, and read it again after
            try:
                await adapter.stop(instance_id)
            except ProviderError as err:
                if not status.stopped:
                    return await self._retry(session, f"stop call failed: {err.message}")
            await self.rows.change(
                session.id,
                lambda s: (
                    ({"power_requested_at": None}, "") if s.power_requested_at is not None else None
                ),
            )
            return await self._retry(session, f"stop asked for; it is {status.state}")
        await self._stopped(session.id, status.state, adapter.stopped_price_per_hour(session.offer))
        await self.ttls.sync(await self.rows.get(session.id))  # the kept disk's keep time
        return Step()

    async def _stopped(self, session_id: str, state: str, disk_rate: float) -> None:
        """The provider says the instance is off: the session is stopped, its running stretch
        closed, its disk billed and kept until its keep time ends."""
        now = self.rows.clock.now()

        def decide(s: Session) -> Decision:
            if s.status != SessionStatus.STOPPING or not s.keep_disk:
                return None
            days = s.kept_days(self.settings.keep_days)
            keep_until = now + timedelta(days=days)
            return {
                "status": SessionStatus.STOPPED,
                "keep_disk": False,
                "destroy_attempts": 0,
                "next_destroy_at": None,
                "cycles": costs.closing_stretch(s, now),
                "stopped_at": now,
                "stopped_price_per_hour": disk_rate,
                "keep_until": keep_until,
                "power_requested_at": None,
                "watchdog_deadline": None,  # it died with the node's power
            }, (
                f"stopped ({state}); disk kept, ${disk_rate * 24:.2f}/day, until "
                f"{keep_until:%Y-%m-%d %H:%M} UTC"
            )

        await self.rows.change(session_id, decide)

    async def _retry(self, session: Session, why: str) -> Step:
        """Count a teardown attempt that did not finish; back off; escalate; never give up."""
        now = self.rows.clock.now()
        counted: list[int] = []

        def decide(s: Session) -> Decision:
            if s.instance.absent:
                return None
            attempts = s.destroy_attempts + 1
            counted[:] = [attempts]
            wait = timedelta(seconds=self._backoff(attempts))
            return {"destroy_attempts": attempts, "next_destroy_at": now + wait}, ""

        await self.rows.change(session.id, decide)
        if not counted:
            return Step()
        attempts = counted[0]
        wait = self._backoff(attempts)
        severity = ESCALATION.get(attempts)
        if severity is None and attempts > 10 and attempts % 10 == 0:
            severity = Severity.CRITICAL
        if severity is not None:
            await self.rows.alert(
                session.id,
                "teardown_failing",
                f"session {session.id}: {session.provider} instance {session.instance_id} is "
                f"not {'stopped' if session.keep_disk else 'gone'} after {attempts} attempts "
                f"({why}); still retrying",
                severity,
            )
        return Step(wait, f"teardown attempt {attempts}: {why}; next in {wait:g} s")

    def _backoff(self, attempts: int) -> float:
        return min(self.settings.destroy_backoff_max_s, DESTROY_BACKOFF_S * 2.0 ** (attempts - 1))
