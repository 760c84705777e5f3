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
from gpushop_tui.models import Session
from gpushop_tui.node.probes import NodeSample

EXPIRY_WARNING = timedelta(minutes=15)
"""How long before a reservation ends the supervisor warns, and faces turn the countdown amber."""
HARD_MAX_WARNING = timedelta(minutes=30)
"""How long before the hard max the supervisor warns, and faces turn the countdown amber."""


@dataclass(frozen=True)
class NodeReading:
    """The supervisor's latest GPU/SSH reading of a running session, and when it was taken."""

    at: datetime
    sample: NodeSample


@dataclass(frozen=True)
class Deadline:
    """A session's next deadline: its reservation's end, or its hard max."""

    what: Literal["expiry", "hard max"]
    at: datetime
    warn_before: timedelta

    def left(self, now: datetime) -> timedelta:
        return self.at - now

    def warning(self, now: datetime) -> bool:
        """Within the warning window (or past it)."""
        return self.at - now <= self.warn_before


@dataclass(frozen=True)
class SessionView:
    """A session as every face shows it."""

    session: Session
    ssh_command: str | None
    """The OpenSSH command line, while the session has an address and is not closed."""
    node: NodeReading | None = None

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
        """The earlier of expiry and hard max of a session not yet ended; None once it has."""
        if self.session.status.terminal:
            return None
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
