"""The lifecycle supervisor: the one loop that makes sure nothing bills unattended.

One process at a time acts (the lease in the database); the others watch. Every tick re-reads
the open sessions and enforces, from what is stored: the hard max and the reservation expiry
(with warnings before both), idle stops, stuck states, the destroy queue, and every few minutes
a reconciliation against each provider's own list of our instances. A restart resumes every
session where it stood; nothing that runs is destroyed because a process went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gpushop_tui.core.budgets import Budgets
from gpushop_tui.core.rows import SETTING_UP
from gpushop_tui.core.sessions import (
    ACTIVE,
    Decision,
    Lifecycle,
    SessionConflict,
    wants_teardown,
)
from gpushop_tui.core.views import DISK_WARNING, EXPIRY_WARNING, HARD_MAX_WARNING
from gpushop_tui.core.watchdogs import ARM_TIMEOUT_S
from gpushop_tui.core.workloads import healthy_within, launch_of
from gpushop_tui.models import (
    SERVES_MODEL,
    IdleAction,
    InstanceState,
    InstanceStatus,
    Session,
    SessionStatus,
    Severity,
)
from gpushop_tui.node import probes
from gpushop_tui.node import workloads as node_workloads
from gpushop_tui.node.ssh import NodeConnection, NodeError, connect
from gpushop_tui.providers.base import Provider, ProviderError, parse_label
from gpushop_tui.store import Lease

log = logging.getLogger(__name__)

LEASE = "supervisor"
PENDING_BUDGET = timedelta(minutes=2)
"""A pending session older than this never reached its create call (the process died)."""
STUCK_MARGIN = timedelta(minutes=2)
"""Past the provisioning budget, readiness fails the session itself; this is the backstop."""
UNSEEN_GRACE = timedelta(minutes=15)
"""A create with no id that no list has shown for this long created nothing."""
LIST_LAG = timedelta(minutes=10)
"""How long a destroyed instance may still appear in a provider's list."""
IDLE_SAMPLE_S = 60.0
SAMPLE_TIMEOUT_S = 30.0
RECONCILE_BUDGETS = 8
"""HTTP timeouts one provider's reconciliation may take in all (its list alone gets 4)."""
WATCHDOG_RETRY_S = 300.0
"""How often a tick tries again to move a node watchdog that missed an extend."""
ONE_SHOT_BUDGET_S = 120.0
"""How long a one-shot pass (cron) keeps driving sessions before it leaves them to the next."""


@dataclass
class ProviderReconcile:
    """What one provider's reconciliation found and did."""

    provider: str
    ok: bool
    listed: int = 0
    error: str | None = None
    adopted: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


@dataclass
class PassReport:
    """One supervisor pass: how many sessions it looked at, and each reconciliation."""

    sessions: int
    reconciled: list[ProviderReconcile]


class Supervisor:
    """Acts on every open session while it holds the lease; a viewer otherwise."""

    def __init__(
        self, lifecycle: Lifecycle, *, budgets: Budgets | None = None, holder: str | None = None
    ) -> None:
        self.lifecycle = lifecycle
        self.budgets = budgets
        self.store = lifecycle.store
        self.clock = lifecycle.clock
        self.settings = lifecycle.settings
        self.holder = holder or self.store.origin
        self.holding = False
        self._last_reconcile: float | None = None
        self._sampled: dict[str, float] = {}
        self.samples: dict[str, tuple[datetime, probes.NodeSample]] = {}
        """The latest node reading of each sampled session, with when it was taken."""
        self.served: dict[str, float] = {}
        """Each model server's request counter at the last idle check."""
        self._warned: set[tuple[str, str, datetime]] = set()
        self._pass_ends: float | None = None
        """When a one-shot pass must be over (monotonic), while one runs."""
        self._checked: list[ProviderReconcile] = []
        """The providers a one-shot pass has reconciled so far."""
        self._moved: dict[str, float] = {}
        """When each session's node watchdog was last moved by a tick (monotonic)."""
        self.decided = asyncio.Event()
        """Set once `run` has tried the lease: from then on `holding` says acting or viewing."""
        self.recovered = asyncio.Event()
        """Set once `run` finished its first pass (startup recovery), or found another acting."""

    # ------------------------------------------------------------------ the lease

    async def acquire(self) -> bool:
        """Take or renew the lease; False while another live process holds it, and False when
        the database cannot say (this process no longer claims to supervise)."""
        try:
            self.holding = await self.store.acquire_lease(
                LEASE, self.holder, os.getpid(), self.clock.now(), self.settings.lease_ttl_s
            )
        except Exception:
            self.holding = False
            raise
        return self.holding

    async def release(self) -> None:
        """Give the lease up if this process holds it (at once for the next supervisor); a
        no-op otherwise, also when a renewal was cut short."""
        await self.store.release_lease(LEASE, self.holder)
        self.holding = False

    async def lease(self) -> Lease | None:
        """Who holds the lease now, if anyone (an expired lease is nobody's)."""
        lease = await self.store.get_lease(LEASE)
        if lease is None or lease.expires_at <= self.clock.now():
            return None
        return lease

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Supervise until cancelled: a tick every `supervisor_tick_s` while holding the lease."""
        try:
            while True:
                try:
                    acting = await self.acquire()
                    self.decided.set()
                    if acting:
                        await self.tick(drive=True)
                except (OSError, ProviderError) as err:
                    log.warning("supervisor tick failed: %s", err)
                except Exception:
                    log.exception("supervisor tick failed unexpectedly")
                self.recovered.set()
                await self.clock.sleep(self.settings.supervisor_tick_s)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release())

    async def run_once(self) -> PassReport | None:
        """One full pass with reconciliation (for cron), within `reconcile_bound_s` even when
        every provider hangs; None if another process supervises (the lease is the lock that
        keeps overlapping cron runs from stacking)."""
        if not await self.acquire():
            return None
        bound = self.settings.reconcile_bound_s
        self._pass_ends = self.clock.monotonic() + bound
        self._checked = []
        try:
            async with asyncio.timeout(bound):
                return await self.tick(drive=False, reconcile=True)
        except TimeoutError:
            done = {r.provider for r in self._checked}
            late = [
                ProviderReconcile(name, ok=False, error=f"not checked within {bound:g} s")
                for name, adapter in self.lifecycle.providers.items()
                if adapter is not None and name not in done
            ]
            sessions = len(await self.store.list_sessions(open_only=True))
            return PassReport(sessions=sessions, reconciled=[*self._checked, *late])
        finally:
            self._pass_ends = None
            await self.release()

    def _left(self, seconds: float) -> float:
        """`seconds`, or less where a one-shot pass must end sooner."""
        if self._pass_ends is None:
            return seconds
        return max(0.0, min(seconds, self._pass_ends - self.clock.monotonic()))

    async def tick(self, *, drive: bool, reconcile: bool | None = None) -> PassReport:
        """Enforce every rule once. `drive`: keep working on sessions in the background."""
        for session in await self.store.list_sessions(open_only=True):
            await self._deadlines(session)
        if self.budgets is not None:
            await self.budgets.enforce()
        reconciled: list[ProviderReconcile] = []
        if reconcile or (reconcile is None and self._reconcile_due()):
            reconciled = await self.reconcile()
        sessions = await self.store.list_sessions(open_only=True)
        await self._move_watchdogs(sessions)
        await self._check_idle(sessions)
        work = [s.id for s in sessions if _needs_work(s)]
        if drive:
            for session_id in work:
                self.lifecycle.ensure_driven(session_id)
        elif work:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._left(ONE_SHOT_BUDGET_S)):
                    await asyncio.gather(*(self.lifecycle.drive(sid) for sid in work))
        return PassReport(sessions=len(sessions), reconciled=reconciled)

    async def _move_watchdogs(self, sessions: list[Session]) -> None:
        """Move node watchdogs whose deadline is not their session's (an extend that could
        not reach the node, a start that now runs), and provider time limits not where their
        session's deadlines put them (a move the provider refused): together, bounded, each
        session at most every `WATCHDOG_RETRY_S`, so an unreachable node or provider holds up
        nothing else."""
        watchdogs = self.lifecycle.readiness.watchdogs
        ttls = self.lifecycle.teardown.ttls
        mono = self.clock.monotonic()
        for gone in set(self._moved) - {s.id for s in sessions}:
            del self._moved[gone]
        due = [
            s
            for s in sessions
            if (watchdogs.out_of_date(s) or ttls.out_of_date(s))
            and mono - self._moved.get(s.id, -WATCHDOG_RETRY_S) >= WATCHDOG_RETRY_S
        ]
        for s in due:
            self._moved[s.id] = mono
        moves = [watchdogs.move(s) for s in due if watchdogs.out_of_date(s)]
        moves += [ttls.sync(s) for s in due if ttls.out_of_date(s)]
        if moves:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._left(ARM_TIMEOUT_S)):
                    await asyncio.gather(*moves)

    def _reconcile_due(self) -> bool:
        now = self.clock.monotonic()
        due = (
            self._last_reconcile is None
            or now - self._last_reconcile >= self.settings.reconcile_interval_s
        )
        return due

    # ------------------------------------------------------------------ deadlines

    async def _deadlines(self, s: Session) -> None:
        now = self.clock.now()
        lifecycle = self.lifecycle
        if (
            s.status == SessionStatus.PENDING
            and s.instance == InstanceState.NONE
            and now - s.created_at > PENDING_BUDGET
            and not lifecycle.driven(s.id)
        ):
            await lifecycle.change(
                s.id,
                lambda c: (
                    (
                        {"status": SessionStatus.FAILED, "error": "interrupted before renting"},
                        "failed: interrupted before the provider was called; nothing was rented",
                    )
                    if c.status == SessionStatus.PENDING and c.instance == InstanceState.NONE
                    else None
                ),
            )
            return
        if not s.instance.absent and now >= s.hard_max_at and s.status in ACTIVE:
            keep = self._keeps_disk(s)
            await lifecycle.alert(
                s.id,
                "hard_max",
                f"session {s.id} reached its hard max ({s.hard_max_at:%Y-%m-%d %H:%M} UTC): "
                + (
                    "stopping its instance, keeping the disk" if keep else "destroying its instance"
                ),
                Severity.WARNING,
            )
            if keep:
                await self._stop_kept(s, "hard max reached")
            else:
                await lifecycle.delete(s.id, reason="hard max reached")
            return
        if s.status == SessionStatus.STOPPED and s.keep_until is None:
            await self._set_keep_until(s)
            return
        if s.status == SessionStatus.STOPPED and s.keep_until is not None:
            if now >= s.keep_until:
                await lifecycle.alert(
                    s.id,
                    "disk_kept_until",
                    f"session {s.id}: its disk was kept until {s.keep_until:%Y-%m-%d %H:%M} UTC "
                    "(keep policy): destroying it",
                    Severity.WARNING,
                )
                await lifecycle.delete(s.id, reason="keep policy: the disk's keep time ended")
                return
            await self._warn(s, "disk_expiry", s.keep_until, DISK_WARNING, "its kept disk ends")
            return
        if s.status in (SessionStatus.PROVISIONING, SessionStatus.RUNNING):
            # a starting session's reservation counts from when it runs (`ready_changes`)
            if now >= s.expires_at:
                if self._keeps_disk(s):
                    await self._stop_kept(s, "reservation expired")
                else:
                    await lifecycle.done(s.id, reason="reservation expired")
                return
            await self._warn(s, "expiry", s.expires_at, EXPIRY_WARNING, "its reservation ends")
            await self._warn(s, "hard_max", s.hard_max_at, HARD_MAX_WARNING, "its hard max")
        if s.status in SETTING_UP:
            budget = lifecycle.provision_budget(s.provider)
            since = s.state_entered_at
            if s.workload_spec is not None and s.workload_started_at is not None:
                budget, since = healthy_within(s.workload_spec), s.workload_started_at
            if now - since > budget + STUCK_MARGIN:
                minutes = (now - s.state_entered_at).total_seconds() / 60
                await lifecycle.fail(
                    s.id, f"stuck in {s.status} for {minutes:.0f} min", record_offer=True
                )

    def _keeps_disk(self, s: Session) -> bool:
        """Whether the session's end by a deadline stops it and keeps its disk: its storage
        policy says keep, or it is powered off when idle (and so was meant to come back)."""
        adapter = self.lifecycle.adapter(s.provider)
        return s.meant_to_keep_disk and adapter is not None and adapter.can_stop

    async def _stop_kept(self, s: Session, reason: str) -> None:
        """End a session at a deadline by stopping it, its disk kept; one not yet running is
        ended as `done` would (its policy decides)."""
        if s.status == SessionStatus.RUNNING:
            with contextlib.suppress(SessionConflict):  # it stopped running meanwhile
                await self.lifecycle.stop(s.id, by=reason)
                return
        await self.lifecycle.done(s.id, reason=reason)

    async def _set_keep_until(self, s: Session) -> None:
        """A session stopped before keep times were stored: its disk is kept for its keep
        days from when it stopped (or from now, if that is not known either)."""
        days = s.kept_days(self.settings.keep_days)
        until = (s.stopped_at or self.clock.now()) + timedelta(days=days)
        await self.lifecycle.change(
            s.id,
            lambda c: (
                ({"keep_until": until}, f"disk kept until {until:%Y-%m-%d %H:%M} UTC")
                if c.status == SessionStatus.STOPPED and c.keep_until is None
                else None
            ),
        )

    async def _warn(
        self, s: Session, what: str, deadline: datetime, ahead: timedelta, words: str
    ) -> None:
        left = deadline - self.clock.now()
        key = (s.id, what, deadline)
        if timedelta(0) < left <= ahead and key not in self._warned:
            self._warned.add(key)
            await self.lifecycle.alert(
                s.id,
                f"{what}_soon",
                f"session {s.id}: {words} in {left.total_seconds() / 60:.0f} min "
                f"({deadline:%H:%M} UTC)",
                Severity.WARNING,
            )

    # ------------------------------------------------------------------ idle

    async def _check_idle(self, sessions: list[Session]) -> None:
        mono = self.clock.monotonic()
        due = [
            s
            for s in sessions
            if s.status == SessionStatus.RUNNING
            and s.idle_timeout_min > 0
            and mono - self._sampled.get(s.id, -IDLE_SAMPLE_S) >= IDLE_SAMPLE_S
        ]
        for s in due:
            self._sampled[s.id] = mono
        running = {s.id for s in sessions if s.status == SessionStatus.RUNNING}
        for gone in set(self.samples) - running:
            del self.samples[gone]
        for gone in set(self.served) - running:
            del self.served[gone]
        await asyncio.gather(*(self._idle_one(s) for s in due))

    async def _idle_one(self, s: Session) -> None:
        busy = await self._busy_reason(s)
        now = self.clock.now()
        if busy is not None:
            await self.lifecycle.change(
                s.id,
                lambda c: (
                    ({"last_busy_at": now, "idle_reason": busy}, "")
                    if c.status == SessionStatus.RUNNING
                    else None
                ),
            )
            return
        since = max(filter(None, (s.last_busy_at, s.state_entered_at)))
        idle_min = (now - since).total_seconds() / 60
        served = ", no model requests" if s.endpoint is not None else ""
        reason = (
            f"idle {idle_min:.0f} of {s.idle_timeout_min:g} min: GPU under "
            f"{self.settings.idle_gpu_util_pct:g}%, no other SSH connection{served}, "
            "no activity ping"
        )
        if idle_min >= s.idle_timeout_min:
            adapter = self.lifecycle.adapter(s.provider)
            if s.idle_action == IdleAction.STOP and adapter is not None and adapter.can_stop:
                with contextlib.suppress(SessionConflict):  # it left running meanwhile
                    await self.lifecycle.stop(s.id, by=f"idle policy ({idle_min:.0f} min idle)")
                return
            await self.lifecycle.done(s.id, reason=f"idle for {idle_min:.0f} min")
            return
        await self.lifecycle.change(
            s.id,
            lambda c: ({"idle_reason": reason}, "") if c.status == SessionStatus.RUNNING else None,
        )

    async def _busy_reason(self, s: Session) -> str | None:
        """Why the session counts as busy (a signal we cannot read counts); None if idle."""
        try:
            async with asyncio.timeout(SAMPLE_TIMEOUT_S):
                conn = await connect(
                    self.lifecycle.address(s), timeout_s=self.settings.ssh_connect_timeout_s
                )
                async with conn:
                    sample = await probes.sample(conn)
                    served = await self._requests_served(s, conn)
            self.samples[s.id] = (self.clock.now(), sample)
        except (NodeError, TimeoutError, OSError) as err:
            return f"busy: the node cannot be read ({err or 'timed out'})"
        if served is not None:
            return served
        if sample.gpus is None:
            return "busy: GPU utilization unknown (" + "; ".join(sample.problems) + ")"
        utils = [g.utilization_pct for g in sample.gpus]
        if not utils or any(u is None for u in utils):
            return "busy: GPU utilization unknown"
        top = max(u for u in utils if u is not None)
        if top >= self.settings.idle_gpu_util_pct:
            return f"busy: GPU {top:.0f}%"
        if sample.ssh_connections is None:
            return "busy: SSH connections unknown (" + "; ".join(sample.problems) + ")"
        if sample.ssh_connections > 0:
            return f"busy: {sample.ssh_connections} SSH connection(s)"
        return None

    async def _requests_served(self, s: Session, conn: NodeConnection) -> str | None:
        """The model server's own request counter as an idle signal: requests served since the
        last look (or a counter that cannot be read, or no earlier look) is busy."""
        spec = s.workload_spec
        if spec is None or spec.kind not in SERVES_MODEL or s.endpoint is None:
            return None
        token = await asyncio.to_thread(self.lifecycle.readiness.workloads.read_token, s.id)
        counter = (
            await node_workloads.requests_served(conn, launch_of(spec), token)
            if token is not None
            else None
        )
        before = self.served.get(s.id)
        if counter is None:
            phase = await node_workloads.read_phase(conn)
            if phase is not None and phase.startswith("failed"):
                await self._server_died(s, phase)
                return None  # a dead server serves nothing: the GPU and SSH signals decide
            return "busy: the model server's request counter cannot be read"
        self.served[s.id] = counter
        if before is None:
            return "busy: the model server's requests are counted from now"
        if counter != before:
            return "busy: the model server served requests since the last look"
        return None

    async def _server_died(self, s: Session, phase: str) -> None:
        """Record, once, that a running session's model server is gone (its endpoint answers
        nothing now); the session itself stays under its idle stop, expiry and hard max."""
        changed = await self.lifecycle.change(
            s.id,
            lambda c: (
                ({"workload_phase": phase}, f"workload: {phase}")
                if c.status == SessionStatus.RUNNING and c.workload_phase != phase
                else None
            ),
        )
        if changed is not None and changed.workload_phase == phase and s.workload_phase != phase:
            await self.lifecycle.alert(
                s.id,
                "workload_died",
                f"session {s.id}: its model server failed ({phase.removeprefix('failed: ')}); "
                "the endpoint answers nothing, and the session is stopped when it turns idle",
                Severity.WARNING,
            )

    # ------------------------------------------------------------------ reconciliation

    async def reconcile(self) -> list[ProviderReconcile]:
        """Compare each provider's list of our instances with the sessions (invariant 4).

        Providers are checked at the same time, each within `RECONCILE_BUDGETS` HTTP timeouts,
        so one slow or silent provider neither adds to nor holds up the others.
        """
        self._last_reconcile = self.clock.monotonic()
        open_sessions = await self.store.list_sessions(open_only=True)
        checks = []
        for name, adapter in self.lifecycle.providers.items():
            mine = [s for s in open_sessions if s.provider == name]
            if adapter is None:
                if mine:
                    await self.lifecycle.alert(
                        None,
                        "no_credential",
                        f"{len(mine)} open session(s) on {name} cannot be supervised: "
                        "no credential",
                        Severity.CRITICAL,
                    )
                continue
            checks.append(self._reconcile_bounded(name, adapter, mine))
        return list(await asyncio.gather(*checks))

    async def _reconcile_bounded(
        self, name: str, adapter: Provider, mine: list[Session]
    ) -> ProviderReconcile:
        try:
            async with asyncio.timeout(
                self._left(self.settings.http_timeout_s * RECONCILE_BUDGETS)
            ):
                checked = await self._reconcile_provider(name, adapter, mine)
                if self._pass_ends is not None:
                    self._checked.append(checked)
                return checked
        except TimeoutError:
            await self.lifecycle.alert(
                None,
                "reconcile_unknown",
                f"{name}: reconciliation did not finish (no answer in time); "
                "treating our instances as unknown",
                Severity.WARNING,
            )
            return ProviderReconcile(name, ok=False, error="no answer in time")

    async def _reconcile_provider(
        self, name: str, adapter: Provider, mine: list[Session]
    ) -> ProviderReconcile:
        try:
            async with asyncio.timeout(self._left(self.settings.http_timeout_s * 4)):
                listed = await adapter.list_ours()
        except (ProviderError, TimeoutError) as err:
            reason = getattr(err, "message", None) or "no answer in time"
            await self.lifecycle.alert(
                None,
                "reconcile_unknown",
                f"{name}: cannot list our instances ({reason}); treating them as unknown",
                Severity.WARNING,
            )
            return ProviderReconcile(name, ok=False, error=reason)
        report = ProviderReconcile(name, ok=True, listed=len(listed))
        seen_ids = {i.instance_id for i in listed}
        seen_sessions = set()
        for instance in listed:
            parsed = parse_label(instance.label)
            session_id = parsed[1] if parsed else None
            if session_id is not None:
                seen_sessions.add(session_id)
            await self._listed(adapter, instance, session_id, report)
        now = self.clock.now()
        for s in mine:
            if s.instance_id is not None and s.instance_id not in seen_ids:
                if s.instance.absent:
                    continue
                try:
                    status = await adapter.get(s.instance_id)
                except ProviderError:
                    continue
                if status is None:
                    await self.lifecycle.instance_gone(s.id, "missing from the list, confirmed")
                    report.gone.append(s.id)
            elif (
                s.instance_id is None
                and s.instance in (InstanceState.CREATING, InstanceState.UNKNOWN)
                and s.id not in seen_sessions
                and now - s.state_entered_at > UNSEEN_GRACE
                and not self.lifecycle.creating(s.id)
            ):
                await self.lifecycle.change(s.id, _nothing_created)
                await self.lifecycle.teardown.release(s)  # a key registered for the create
                report.gone.append(s.id)
        return report

    async def _listed(
        self,
        adapter: Provider,
        instance: InstanceStatus,
        session_id: str | None,
        report: ProviderReconcile,
    ) -> None:
        """One of our instances as the provider lists it: adopt it, or make sure it dies."""
        s = await self.store.get_session(session_id) if session_id else None
        if s is not None and s.instance_id in (None, instance.instance_id):
            if s.instance_id is None and not s.instance.absent:
                # a create whose answer we have not (yet) seen: this is its instance
                await self.lifecycle.record_instance(s.id, instance.instance_id, s.state_entered_at)
                report.adopted.append(instance.instance_id)
                return
            if s.status == SessionStatus.STOPPED and not instance.stopped:
                await self._stopped_but_up(s, instance)
                return
            recently_gone = (
                s.instance == InstanceState.GONE
                and s.instance_gone_at is not None
                and self.clock.now() - s.instance_gone_at < LIST_LAG
            )
            if not s.instance.absent or recently_gone:
                if s.instance == InstanceState.UNKNOWN:
                    await self.lifecycle.change(
                        s.id,
                        lambda c: (
                            ({"instance": InstanceState.LIVE}, "instance seen in the list")
                            if c.instance == InstanceState.UNKNOWN
                            else None
                        ),
                    )
                return
            await self.lifecycle.change(s.id, lambda c: _reopen(c, instance.instance_id))
            report.orphans.append(instance.instance_id)
            await self.lifecycle.alert(
                s.id,
                "orphan",
                f"{adapter.name} instance {instance.instance_id} of session {s.id} exists "
                "although the session expected none: destroying it",
                Severity.ERROR,
            )
            self.lifecycle.ensure_driven(s.id)
            return
        report.orphans.append(instance.instance_id)
        whose = f"session {session_id}" if s is not None else "no session"
        problem = ""
        try:
            await adapter.destroy(instance.instance_id)
        except ProviderError as err:
            problem = f"; destroy failed ({err.message}), retrying next reconciliation"
        await self.lifecycle.alert(
            session_id if s is not None else None,
            "orphan",
            f"orphan {adapter.name} instance {instance.instance_id} ({instance.label}, {whose}) "
            f"destroyed{problem}",
            Severity.ERROR,
        )

    async def _stopped_but_up(self, s: Session, instance: InstanceStatus) -> None:
        """A stopped session whose instance the provider lists as not stopped (started from
        its console, restarted by the provider, or a start still pending there): it may bill
        its GPU, so it is stopped again."""
        await self.lifecycle.change(
            s.id,
            lambda c: (
                (
                    {"status": SessionStatus.STOPPING, "keep_disk": True, "destroy_attempts": 0},
                    f"the provider lists it {instance.state}: stopping it again",
                )
                if c.status == SessionStatus.STOPPED
                else None
            ),
        )
        await self.lifecycle.alert(
            s.id,
            "stopped_instance_up",
            f"session {s.id} is stopped, but {instance.provider} lists instance "
            f"{instance.instance_id} as {instance.state}: stopping it again",
            Severity.WARNING,
        )
        self.lifecycle.ensure_driven(s.id)


def _needs_work(s: Session) -> bool:
    """Whether driving the session can get anywhere now: an instance without an id can only
    wait for a create answer or a reconciliation, so a one-shot pass must not sit on it."""
    if s.instance_id is None and not s.instance.absent:
        return False
    return wants_teardown(s) or (s.status in SETTING_UP and s.instance_id is not None)


def _nothing_created(s: Session) -> Decision:
    if s.instance_id is not None or s.instance not in (
        InstanceState.CREATING,
        InstanceState.UNKNOWN,
    ):
        return None
    changes: dict[str, object] = {"instance": InstanceState.NONE}
    if s.status in ACTIVE:
        changes.update(status=SessionStatus.FAILED, error="the create call produced no instance")
    elif s.status == SessionStatus.STOPPING:
        changes["status"] = SessionStatus.ENDED
    return changes, "no instance was created (no list has shown one)"


def _reopen(s: Session, instance_id: str) -> Decision:
    """A session that expected no instance, but the provider lists one: destroy queue."""
    if not s.instance.absent:
        return None
    changes: dict[str, object] = {
        "instance_id": instance_id,
        "instance": InstanceState.LIVE,
        "keep_disk": False,
        "destroy_attempts": 0,
        "next_destroy_at": None,
    }
    if s.status == SessionStatus.ENDED:
        changes["status"] = SessionStatus.STOPPING
    elif s.status in ACTIVE:
        changes.update(status=SessionStatus.FAILED, error="an unexpected instance exists")
    return changes, f"instance {instance_id} still exists at the provider"
