"""What every part of the session lifecycle shares: the row writer, step outcomes, the errors.

Every change to a session is a compare-and-set on its stored row (`SessionRows.change`), so
the TUI, `--serve` and a cron one-shot can act on the same session without losing an update.
The lifecycle's parts (provisioning, readiness, teardown) all write through one `SessionRows`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpushop_tui.clock import Clock
from gpushop_tui.core.events import Alert, Event, EventBus, SessionChanged
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import Session, SessionStatus, Severity
from gpushop_tui.store import Store

log = logging.getLogger(__name__)

ACTIVE = (SessionStatus.PENDING, SessionStatus.PROVISIONING, SessionStatus.RUNNING)

Decision = tuple[dict[str, Any], str] | None
"""Changes to a session and the message that says why; None for nothing to change."""


class StaleOffer(UserError):
    """The offer is not in the current menu (taken, or the menu moved on): try again."""


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


@dataclass(frozen=True)
class Step:
    """The outcome of one lifecycle step: try again after `wait_s`, with what it waits for."""

    wait_s: float = 0.0
    note: str | None = None


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
                self._notes.pop(updated.id, None)
                self._on_closed(updated)
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

    def note(self, session_id: str) -> str | None:
        """The last thing the session was reported waiting for, if any."""
        return self._notes.get(session_id)
