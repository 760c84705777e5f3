"""What the faces show of a session, worked out once in the core.

A `SessionView` carries everything a face renders beside the stored row: the ssh command line,
the supervisor's latest node reading, and the cost and deadlines as of any moment (the TUI
redraws them every second from the absolute times, so they are methods, not frozen numbers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from gpushop_tui.core import costs
from gpushop_tui.models import CostEntry, CostKind, InstanceState, Session, SessionStatus
from gpushop_tui.node.probes import NodeSample
from gpushop_tui.providers.registry import PROVIDERS, provider_info

EXPIRY_WARNING = timedelta(minutes=15)
"""How long before a reservation ends the supervisor warns, and faces turn the countdown amber."""
HARD_MAX_WARNING = timedelta(minutes=30)
"""How long before the hard max the supervisor warns, and faces turn the countdown amber."""
DISK_WARNING = timedelta(days=1)
"""How long before a stopped session's kept disk is destroyed the supervisor warns."""


@dataclass(frozen=True)
class NodeReading:
    """The supervisor's latest GPU/SSH reading of a running session, and when it was taken."""

    at: datetime
    sample: NodeSample


@dataclass(frozen=True)
class Deadline:
    """A session's next deadline: its reservation's end, its hard max, or (stopped) the end of
    its kept disk."""

    what: Literal["expiry", "hard max", "disk kept until"]
    at: datetime
    warn_before: timedelta

    def left(self, now: datetime) -> timedelta:
        return self.at - now

    def warning(self, now: datetime) -> bool:
        """Within the warning window (or past it)."""
        return self.at - now <= self.warn_before


@dataclass(frozen=True)
class PowerStretch:
    """One stretch of a session's power cycles: running (compute, the GPU rate) or stopped
    (storage, the disk rate), with its runtime and cost as of `now` while it is open."""

    entry: CostEntry
    now: datetime

    @property
    def kind(self) -> CostKind:
        return self.entry.kind

    @property
    def started_at(self) -> datetime:
        return self.entry.started_at

    @property
    def ended_at(self) -> datetime | None:
        return self.entry.ended_at

    @property
    def rate_per_hour(self) -> float:
        return self.entry.rate_per_hour

    @property
    def hours(self) -> float:
        end = self.entry.ended_at or self.now
        return max(0.0, (end - self.entry.started_at).total_seconds() / 3600)

    @property
    def cost(self) -> float:
        return self.entry.amount(self.now)


@dataclass(frozen=True)
class SessionView:
    """A session as every face shows it."""

    session: Session
    ssh_command: str | None
    """The OpenSSH command line, while the session has an address and is not closed."""
    node: NodeReading | None = None
    keep_days: float | None = None
    """Days a stop keeps the disk: the session's own, else the setting."""
    stopped_usd_per_day: float | None = None
    """What the disk bills a day once stopped (the provider's stopped rate), for a face to
    name before a stop; None where the provider cannot stop."""
    supervisor: str | None = None
    """Who holds the supervisor lease now (None: no supervisor runs)."""

    @property
    def kill_paths(self) -> list[str]:
        """What ends the instance if nobody does, in words: the supervisor (while one runs;
        cron's reconcile is one too), the provider's own time limit where one is set, and the
        node's own watchdog, armed or why not (or none, where the provider's nodes cannot)."""
        s = self.session
        if s.closed:
            return []
        paths = [
            f"supervisor: {self.supervisor} enforces the deadlines"
            if self.supervisor is not None
            else "supervisor: none runs now (the next gpushop or cron reconcile acts)"
        ]
        info = provider_info(s.provider) if s.provider in PROVIDERS else None
        name = info.display_name if info is not None else s.provider
        if s.provider_ttl_at is not None:
            paths.append(
                f"provider time limit: {name} itself ends the instance at "
                f"{s.provider_ttl_at:%Y-%m-%d %H:%M} UTC"
            )
        if info is not None and not info.capabilities.node_watchdog:
            paths.append(f"node watchdog: none on {name} (nothing on the node can end its bill)")
            return paths
        if s.watchdog_deadline is not None:
            paths.append(
                f"node watchdog: ends the instance at {s.watchdog_deadline:%Y-%m-%d %H:%M} UTC"
            )
        if s.watchdog_error is not None:
            paths.append(f"node watchdog: not as it should be ({s.watchdog_error})")
        elif s.watchdog_deadline is None and s.status == SessionStatus.RUNNING:
            paths.append("node watchdog: not armed")
        return paths

    @property
    def status_words(self) -> str:
        """The status as every face says it: `running`, `stopped (disk kept, $1.23/day)`,
        `ended (destroyed)`, `failed`, ..."""
        s = self.session
        match s.status:
            case SessionStatus.STOPPED:
                day = self.disk_usd_per_day or 0.0
                failed = f"; {s.error}" if s.error else ""
                return f"stopped (disk kept, ${day:.2f}/day{failed})"
            case SessionStatus.ENDED:
                never = s.instance == InstanceState.NONE or s.instance_created_at is None
                return "ended (nothing was rented)" if never else "ended (destroyed)"
            case SessionStatus.STOPPING:
                return "stopping (keeping the disk)" if s.keep_disk else "stopping"
            case _:
                return str(s.status)

    @property
    def disk_usd_per_day(self) -> float | None:
        """What the kept disk of a stopped session bills a day; None unless stopped."""
        if self.session.status != SessionStatus.STOPPED:
            return None
        return (self.session.stopped_price_per_hour or 0.0) * 24

    @property
    def keep_until(self) -> datetime | None:
        """When a stopped session's kept disk is destroyed, unless it is started before."""
        return self.session.keep_until if self.session.status == SessionStatus.STOPPED else None

    def cycles(self, now: datetime) -> list[PowerStretch]:
        """Each running and each stopped stretch the session billed (or bills), oldest first."""
        return [PowerStretch(entry, now) for entry in costs.entries(self.session)]

    @property
    def idle_verdict(self) -> str | None:
        """Why the supervisor counts the session idle or busy (None before its first reading)."""
        return self.session.idle_reason

    @property
    def burn_usd_per_hour(self) -> float:
        """What it bills right now: 0 once its instance is gone or never existed."""
        return costs.burn_rate(self.session)

    def cost_at(self, now: datetime) -> float:
        """USD so far at `now` (all of it, once its instance is gone)."""
        return costs.cost_of(self.session, now)

    @property
    def next_deadline(self) -> Deadline | None:
        """The earlier of expiry and hard max of a session not yet ended (a stopped one's:
        when its kept disk is destroyed); None once it has ended."""
        if self.session.status.terminal:
            return None
        if self.session.status == SessionStatus.STOPPED:
            until = self.session.keep_until
            return None if until is None else Deadline("disk kept until", until, DISK_WARNING)
        expiry = Deadline("expiry", self.session.expires_at, EXPIRY_WARNING)
        hard_max = Deadline("hard max", self.session.hard_max_at, HARD_MAX_WARNING)
        return min(expiry, hard_max, key=lambda deadline: deadline.at)


@dataclass(frozen=True)
class Endpoint:
    """A session's model endpoint: the base URL on the node's loopback and its bearer token,
    and the URL on the provider's public address where the port is published (vLLM on a
    provider that runs images; None elsewhere: reached through the tunnel only)."""

    session_id: str
    url: str
    token: str
    public_url: str | None = None


@dataclass(frozen=True)
class Tunnel:
    """A local port forwarded to a session's endpoint: its base URL, and a wait that ends when
    the SSH connection under it closes (the node went away, or the session ended)."""

    url: str
    closed: Callable[[], Awaitable[None]]
