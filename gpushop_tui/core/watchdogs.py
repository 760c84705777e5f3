"""The node's own deadline watchdog: a kill path that works when no gpushop process is left.

Readiness arms it on every node before the session runs (and again after each start): at the
session's deadline (its reservation's end plus a grace period, never past the hard max) the node
destroys its own instance with the instance-scoped API key where the provider makes one (Vast),
or powers the VM off (the bill drops to its disk until a supervisor destroys it). The account
key never leaves this machine. An extend moves the deadline on the node; a move that fails is
alerted and retried by the supervisor. A node that cannot be armed is said so loudly, and stays
usable: the other kill paths (the supervisor, cron's reconcile) still hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from gpushop_tui.config import Settings
from gpushop_tui.core.provisioning import instance_key_path
from gpushop_tui.core.rows import ACTIVE, SessionRows
from gpushop_tui.models import Session, SessionStatus, Severity
from gpushop_tui.node import watchdog as node_watchdog
from gpushop_tui.node.ssh import NodeAddress, NodeConnection, NodeError, connect
from gpushop_tui.providers.base import Provider

ARM_TIMEOUT_S = 60.0
"""How long arming or moving a watchdog may take (SSH, SFTP, one exec)."""
SKEW_TOLERANCE_S = 30
"""A node clock off by more than this gets its deadline written in its own time."""
STARTING_SLACK = timedelta(minutes=5)
"""A starting session's node deadline is moved on once it is this close to what a session
running from now would get (its reservation counts from when it runs)."""


class Watchdogs:
    """Arms and moves the deadline watchdog on sessions' nodes."""

    def __init__(
        self,
        *,
        rows: SessionRows,
        providers: Mapping[str, Provider | None],
        settings: Settings,
        address: Callable[[Session], NodeAddress],
    ) -> None:
        self.rows = rows
        self.providers = providers
        self.settings = settings
        self.address = address

    def deadline(self, session: Session) -> datetime:
        """When the node ends the instance by itself: the reservation's end plus the grace
        period, never past the hard max (whole seconds, as the node's clock counts). A
        starting session's reservation counts from when it runs: as if that were now."""
        grace = timedelta(minutes=self.settings.watchdog_grace_min)
        ends = session.expires_at
        if session.status == SessionStatus.STARTING:
            now = self.rows.clock.now()
            ends = max(ends, now + timedelta(hours=session.reservation_hours))
        return min(ends + grace, session.hard_max_at).replace(microsecond=0)

    def out_of_date(self, session: Session) -> bool:
        """A watchdog (armed, or perhaps armed by a try that failed late) whose deadline is
        not the session's: an extend it missed, or a start still waiting to run."""
        armed = session.watchdog_deadline
        if armed is None or session.status not in ACTIVE:
            return False
        if session.status == SessionStatus.STARTING:
            return armed + STARTING_SLACK < self.deadline(session)
        return armed != self.deadline(session)

    def _plan(self, session: Session, adapter: Provider) -> node_watchdog.WatchdogPlan:
        """Destroy through the API with the instance key where the provider makes one (stop,
        keeping the disk, for a session meant to keep it); else power the VM off."""
        if adapter.INFO.capabilities.instance_scoped_key:
            return node_watchdog.WatchdogPlan(
                session_id=session.id,
                action="stop" if session.meant_to_keep_disk and adapter.can_stop else "destroy",
                deadline=self.deadline(session),
                api_base=adapter.http.base_url,
                instance_id=session.instance_id,
            )
        return node_watchdog.WatchdogPlan(
            session_id=session.id, action="poweroff", deadline=self.deadline(session)
        )

    async def arm(self, session: Session) -> Session:
        """Install and start the watchdog on the session's checked node; a failure is
        recorded on the session and alerted, and the session goes on without it."""
        adapter = self.providers.get(session.provider)
        if (
            adapter is None
            or session.key_path is None
            or not self.settings.node_watchdog
            or not adapter.INFO.capabilities.node_watchdog
        ):
            return session
        try:
            plan = self._plan(session, adapter)
        except ValueError as err:  # an id or URL the node's shell must not see
            return await self._failed(session, f"cannot arm it: {err}")
        key: str | None = None
        if plan.action != "poweroff":  # none kept: the node's own CONTAINER_API_KEY may do
            key = await asyncio.to_thread(_read_key, instance_key_path(Path(session.key_path)))
        try:
            async with asyncio.timeout(ARM_TIMEOUT_S):
                conn = await connect(
                    self.address(session), timeout_s=self.settings.ssh_connect_timeout_s
                )
                async with conn:
                    skew = await _skew(conn, self.rows.clock.now())
                    node_plan = replace(plan, deadline=plan.deadline + timedelta(seconds=skew))
                    await node_watchdog.arm(conn, node_plan, key)
        except (NodeError, TimeoutError, OSError, ValueError) as err:
            # the script may have started before the failure: later extends must move it too
            return await self._failed(
                session, f"arming failed: {err or 'timed out'}", maybe_armed=plan.deadline
            )
        what = {
            "destroy": "destroys the instance",
            "stop": "stops the instance, its disk kept",
            "poweroff": "powers the VM off",
        }[plan.action]
        return await self._armed(
            session.id,
            plan.deadline,
            f"node watchdog armed: {what} at {plan.deadline:%H:%M} UTC{_skew_words(skew)}",
        )

    async def move(self, session: Session) -> Session:
        """Move an armed watchdog to the session's deadline now (after an extend)."""
        deadline = self.deadline(session)
        try:
            async with asyncio.timeout(ARM_TIMEOUT_S):
                conn = await connect(
                    self.address(session), timeout_s=self.settings.ssh_connect_timeout_s
                )
                async with conn:
                    skew = await _skew(conn, self.rows.clock.now())
                    await node_watchdog.move(conn, deadline + timedelta(seconds=skew))
        except (NodeError, TimeoutError, OSError) as err:
            return await self._failed(
                session,
                f"moving it to {deadline:%Y-%m-%d %H:%M} UTC failed ({err or 'timed out'}); it "
                f"still acts at {session.watchdog_deadline:%Y-%m-%d %H:%M} UTC",
            )
        return await self._armed(
            session.id,
            deadline,
            f"node watchdog moved to {deadline:%Y-%m-%d %H:%M} UTC{_skew_words(skew)}",
        )

    async def _armed(self, session_id: str, deadline: datetime, message: str) -> Session:
        updated = await self.rows.change(
            session_id,
            lambda s: ({"watchdog_deadline": deadline, "watchdog_error": None}, message),
        )
        assert updated is not None
        await self.rows.progress(updated, message)  # in the session's timeline
        return updated

    async def _failed(
        self, session: Session, why: str, *, maybe_armed: datetime | None = None
    ) -> Session:
        """Record why the watchdog is not as it should be (and the deadline it may hold all the
        same); alert once per reason (the supervisor retries a move every few minutes)."""
        changes: dict[str, object] = {"watchdog_error": why}
        if maybe_armed is not None:
            changes["watchdog_deadline"] = maybe_armed
        updated = await self.rows.change(
            session.id,
            lambda s: (changes, f"node watchdog: {why}") if s.watchdog_error != why else None,
        )
        if session.watchdog_error == why:
            return updated or session
        await self.rows.alert(
            session.id,
            "watchdog_not_armed",
            f"session {session.id}: the node's own watchdog is not armed as it should be "
            f"({why}); only a running gpushop supervisor or cron reconcile ends it now",
            Severity.ERROR,
        )
        return updated or session


async def _skew(conn: NodeConnection, now: datetime) -> int:
    """How far the node's clock is ahead of ours (behind: negative), in whole seconds; 0
    within `SKEW_TOLERANCE_S` (the SSH round trip and NTP's own error)."""
    skew = await node_watchdog.node_clock(conn) - round(now.timestamp())
    return skew if abs(skew) > SKEW_TOLERANCE_S else 0


def _skew_words(skew: int) -> str:
    if not skew:
        return ""
    side = "ahead of" if skew > 0 else "behind"
    return f" (the node's clock is {abs(skew)} s {side} ours: written in its own time)"


def _read_key(path: Path) -> str | None:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return key or None
