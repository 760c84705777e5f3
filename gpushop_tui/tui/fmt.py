"""Text for money, time, freshness and refusals, shared by every pane (one way to write each)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from textual.content import Content

from gpushop_tui.errors import Hint, UserError

WAYS_OUT = {
    Hint.NEEDS_OVERRIDE: "; extend by fewer hours (the cockpit cannot override the hard max)",
    Hint.STORAGE_NOT_KEEPABLE: "; choose 'destroy the instance' under When done in the rent dialog",
    Hint.CANNOT_STOP: "; only destroying works there: d or x on the Sessions pane, 'destroy the "
    "instance' in the rent dialog",
    Hint.NOT_CONFIGURED: ": there is no credential for it",
    Hint.UNKNOWN_OFFER: "; refresh the menu (r on the Inventory pane) and pick again",
}
"""The cockpit's words for the way out a core error's `hint` names, appended to its message."""


SPENT_PLACES = 4
"""Decimal places of every amount spent (costs, a session's cost so far), as the CLI prints."""


def usd(amount: float | None, places: int = 2) -> str:
    """`$1.23`; `—` when unknown."""
    return "—" if amount is None else f"${amount:,.{places}f}"


def spent(amount: float | None) -> str:
    """Money spent, in one precision everywhere (`$0.0070`): sub-cent costs never read $0.00."""
    return usd(amount, SPENT_PLACES)


def rate(amount: float | None) -> str:
    """An hourly price: `$0.350/h`."""
    return "—" if amount is None else f"${amount:,.3f}/h"


def span(seconds: float) -> str:
    """A duration the way a person reads it: `45s`, `12m 05s`, `3h 07m`, `2d 04h`."""
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def countdown(deadline: datetime, now: datetime) -> str:
    """Time left until `deadline`: `1h 02m`, or `overdue 3m 10s` once it has passed."""
    left = (deadline - now).total_seconds()
    return span(left) if left >= 0 else f"overdue {span(-left)}"


def age(when: datetime | None, now: datetime) -> str:
    """How old a reading is: `now`, `40s`, `3m 02s`; `never` when there is none."""
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    return "now" if seconds < 1 else span(seconds)


def local_time(when: datetime, now: datetime) -> str:
    """`14:05:09` today, `Nov 21 14:05` on another day: local time, the way a log reads."""
    local, today = when.astimezone(), now.astimezone()
    if local.date() == today.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%b %d %H:%M")


def urgency(deadline: datetime, now: datetime, warn: timedelta) -> str:
    """`ok`, `warning` (inside `warn`) or `danger` (inside a fifth of it, or past)."""
    left = deadline - now
    if left <= warn / 5:
        return "danger"
    return "warning" if left <= warn else "ok"


def problem(err: UserError) -> str:
    """A refusal as one sentence for a toast: the core's message and the cockpit's way out."""
    return err.message + WAYS_OUT.get(err.hint or "", "")


def joined(parts: Iterable[Content | str], separator: str = "·") -> Content:
    """`parts` apart as `a · b · c`, each separating space at the end of the run before it:
    a screenshot's text (or a screen reader) reads each styled run on its own and loses a
    space that starts one, so `vastai ok` + ` 42 offers` would read `vastai ok42 offers`."""
    pieces = [Content(part) if isinstance(part, str) else part for part in parts]
    out: list[Content] = []
    for index, piece in enumerate(pieces):
        if index:
            out.append(Content(f"{separator} "))
        out.append(_with_trailing_space(piece) if index < len(pieces) - 1 else piece)
    return Content("").join(out)


def _with_trailing_space(piece: Content) -> Content:
    """`piece` and a space in the style of its last character."""
    end = len(piece.plain)
    styles = [span.style for span in piece.spans if span.start < end <= span.end]
    return piece + (Content.styled(" ", styles[-1]) if styles else Content(" "))
