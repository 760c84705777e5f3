"""What every part of the session lifecycle shares: the row writer, step outcomes, the errors.

Every change to a session is a compare-and-set on its stored row (`SessionRows.change`), so
the TUI, `--serve` and a cron one-shot can act on the same session without losing an update.
The lifecycle's parts (provisioning, readiness, teardown) all write through one `SessionRows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gpushop_tui.clock import Clock
from gpushop_tui.core.events import Alert, Event, EventBus, SessionChanged
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import Session, SessionStatus, Severity
from gpushop_tui.store import Store

log = logging.getLogger(__name__)

ACTIVE = (
    SessionStatus.PENDING,
    SessionStatus.PROVISIONING,
    SessionStatus.RUNNING,
    SessionStatus.STARTING,
)
"""Sessions on their way up or running: ended by `done`, extended, failed when they break."""
SETTING_UP = (SessionStatus.PROVISIONING, SessionStatus.STARTING)
"""Sessions readiness works on: a new rental, or a stopped one powered on again."""

Decision = tuple[dict[str, Any], str] | None
"""Changes to a session and the message that says why; None for nothing to change."""

_driving: contextvars.ContextVar[str | None] = contextvars.ContextVar("_driving", default=None)
"""The session whose own drive loop runs here: its changes do not wake that loop."""


async def wait_for(event: asyncio.Event, clock: Clock, seconds: float) -> bool:
    """Wait `seconds` of `clock`'s time, or less if `event` is set; True when it was set.

    Works with any `Clock` (a `FakeClock` too), so tests stay on fake time.
    """
    if event.is_set():
        return True
    woken = asyncio.ensure_future(event.wait())
    slept = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((woken, slept), return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        slept.cancel()
    return event.is_set()


class StaleOffer(UserError):
    """The offer was on the menu and is not any more (taken): pick another."""


class UnknownOffer(UserError):
    """No offer with that id has been listed (a typo or a malformed id): look at the menu."""

    @classmethod
    def for_id(cls, offer_id: str, why: str) -> UnknownOffer:
        """The one way a rental says its offer id names nothing, with `why` in words."""
        return cls(f"offer {offer_id!r} {why}", field="offer_id", hint=Hint.UNKNOWN_OFFER)


class NotConfigured(UserError):
    """The offer's provider has no credential here."""

    @classmethod
    def for_provider(cls, provider: str) -> NotConfigured:
        """The one way a rental says its provider has no credential."""
        return cls(f"{provider} is not configured", field="offer_id", hint=Hint.NOT_CONFIGURED)


class SessionConflict(UserError):
    """The session is not in a state that allows the change asked for."""


class SessionNotFound(UserError):
    """No session with that id."""

    @classmethod
    def for_id(cls, session_id: str) -> SessionNotFound:
        """The one way every lifecycle call says a session id is unknown."""
        return cls(f"no session {session_id!r}", field="session_id", hint=Hint.UNKNOWN_SESSION)


class SessionProgress(Event):
    """What a session is waiting for now (readiness, teardown); stored only when it changes."""

    kind = "session_progress"
    note: str


class SessionExtended(Event):
    """An extend asked for, granted (the new end in `expires_at`) or refused (the reason in
    the message): audited, because it moves a kill path or was stopped by one."""

    kind = "session_extended"
    hours: float
    granted: bool
    expires_at: datetime | None = None


def ready_changes(session: Session, now: datetime) -> dict[str, Any]:
    """What a session set up by readiness changes when it runs: busy from now, no error, and
    a started one's reservation counted from now (its wait for the GPU is not its time)."""
    changes: dict[str, Any] = {
        "status": SessionStatus.RUNNING,
        "last_busy_at": now,
        "idle_reason": None,
        "error": None,
    }
    if session.status == SessionStatus.STARTING:
        length = timedelta(hours=session.reservation_hours)
        changes["expires_at"] = min(now + length, session.hard_max_at)
    return changes


class SessionPower(Event):
    """A stop or start asked for, and who asked (the operator through a face, a consumer's
    token, the idle policy, a budget): audited, because it moves money."""

    kind = "session_power"
    action: str
    by: str


@dataclass(frozen=True)
class Step:
    """The outcome of one lifecycle step: try again after `wait_s`, with what it waits for."""

    wait_s: float = 0.0
    note: str | None = None


class Wake(asyncio.Event):
    """A drive loop's wake-up: set when anyone else changes the session's row in this process."""

    def __init__(self) -> None:
        super().__init__()
        self.row: Session | None = None
        """The row as the latest such change committed it, so the loop can judge the change
        without reading the store."""


class SessionRows:
    """Reads and changes stored sessions by compare-and-set, and publishes what moved."""

    def __init__(
        self,
        *,
        store: Store,
        events: EventBus,
        clock: Clock,
        on_closed: Callable[[Session], None],
    ) -> None:
        self.store = store
        self.events = events
        self.clock = clock
        self._on_closed = on_closed
        """Drops what the process keeps about a session once a change closes it."""
        self._notes: dict[str, str] = {}
        self._wake: dict[str, Wake] = {}
        """Set when someone other than the session's drive loop changes its row."""
        self._records: set[asyncio.Task[Session | None]] = set()
        """Committed changes whose records (event, audit, key files) are still being written."""

    async def get(self, session_id: str) -> Session:
        session = await self.store.get_session(session_id)
        if session is None:
            raise SessionNotFound.for_id(session_id)
        return session

    async def change(
        self,
        session_id: str,
        decide: Callable[[Session], Decision],
        *,
        severity: Severity | Callable[[Session], Severity] = Severity.INFO,
    ) -> Session | None:
        """Read, decide, compare-and-set; again if someone else changed the row meanwhile.

        Returns the session as stored afterwards (None if it does not exist). A change of
        status or instance stamps `state_entered_at` and is published as `SessionChanged`
        (`severity` may depend on the updated session). The write and its records run to the
        end even if the caller is cancelled (`settle` waits for them).
        """
        for _ in range(20):
            current = await self.store.get_session(session_id)
            if current is None:
                return None
            decision = decide(current)
            if decision is None:
                return current
            changes, message = decision
            commit = asyncio.ensure_future(self._commit(current, changes, message, severity))
            self._records.add(commit)
            commit.add_done_callback(self._records.discard)
            updated = await asyncio.shield(commit)
            if updated is None:
                continue
            return updated
        raise RuntimeError(f"session {session_id} kept changing under us")

    async def _commit(
        self,
        current: Session,
        changes: dict[str, Any],
        message: str,
        severity: Severity | Callable[[Session], Severity],
    ) -> Session | None:
        """Compare-and-set one decided change and write what it records; None if it lost."""
        session_id = current.id
        moved = {"status", "instance"} & changes.keys()
        if moved:
            changes.setdefault("state_entered_at", self.clock.now())
        updated = await self.store.update_session(
            session_id, {"version": current.version}, **changes
        )
        if updated is None:
            return None
        if _driving.get() != session_id and (wake := self._wake.get(session_id)) is not None:
            wake.row = updated
            wake.set()
        if moved:
            await self.events.publish(
                SessionChanged(
                    message=message,
                    session_id=session_id,
                    status=updated.status,
                    instance=updated.instance,
                    severity=severity(updated) if callable(severity) else severity,
                )
            )
        elif message:
            log.info("session %s: %s", session_id, message)
        if updated.closed:
            self._notes.pop(updated.id, None)
            self._on_closed(updated)
        return updated

    async def settle(self, timeout_s: float) -> None:
        """Give committed changes up to `timeout_s` to finish their records (see `change`)."""
        if self._records:
            await asyncio.wait(set(self._records), timeout=timeout_s)

    @contextlib.contextmanager
    def driving(self, session_id: str) -> Iterator[Wake]:
        """Mark the code inside as the session's drive loop; yields its wake-up event, set
        when anyone else changes the session's row (the loop clears it before each step)."""
        token = _driving.set(session_id)
        wake = self._wake.setdefault(session_id, Wake())
        try:
            yield wake
        finally:
            _driving.reset(token)
            if self._wake.get(session_id) is wake:
                del self._wake[session_id]

    async def pause(self, session_id: str, seconds: float) -> bool:
        """Wait `seconds`, cut short when the session's row is changed by someone else while
        its drive loop runs; True when it was cut short."""
        wake = self._wake.get(session_id)
        if wake is None:
            await self.clock.sleep(seconds)
            return False
        return await wait_for(wake, self.clock, seconds)

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

    def note(self, session_id: str) -> str | None:
        """The last thing the session was reported waiting for, if any."""
        return self._notes.get(session_id)
