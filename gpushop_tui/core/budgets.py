"""Budgets that act: checked before every rental, and enforced by the supervisor each tick.

DESIGN.md §6. A budget belongs to one consumer or is global, limits the month's spend (USD),
the sessions running at once, or the burn rate (USD/h of everything billing), and acts when
crossed: `warn` (an alert), `block` (new rentals are refused, naming the budget), or `stop`
(the scope's sessions are ended gracefully, most expensive first, until the budget holds; a
`stop` budget also refuses rentals that would cross it). Thresholds at 50/80/100 % fire once
per budget per local month, remembered in the database so a restart neither repeats nor forgets
them. A provider's balance, where it reports one, is read before renting: too little for the
reservation refuses the rental, less than twice that warns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from gpushop_tui.clock import Clock
from gpushop_tui.core import costs
from gpushop_tui.core.events import Alert, EventBus
from gpushop_tui.core.sessions import ACTIVE, Lifecycle
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import (
    Budget,
    BudgetAction,
    BudgetKind,
    Offer,
    Session,
    SessionStatus,
    Severity,
)
from gpushop_tui.providers.base import ProviderError
from gpushop_tui.store import Store

log = logging.getLogger(__name__)

THRESHOLDS = (50, 80, 100)
_THRESHOLD_SEVERITY = {50: Severity.INFO, 80: Severity.WARNING, 100: Severity.ERROR}
LOW_BALANCE_FACTOR = 2.0
"""A balance under this many reservations' worth warns; under one reservation refuses."""


class BudgetRefused(UserError):
    """A rental that a budget, or the provider balance, does not allow."""


def describe_budget(budget: Budget) -> str:
    """`alice's monthly spend budget ($50.00/month, block)`, for messages."""
    scope = f"{budget.consumer}'s" if budget.consumer else "the global"
    kind = budget.kind.value.replace("_", " ")
    return f"{scope} {kind} budget ({limit_text(budget)}, {budget.action})"


def limit_text(budget: Budget) -> str:
    match budget.kind:
        case BudgetKind.MONTHLY_SPEND:
            return f"${budget.limit:.2f}/month"
        case BudgetKind.BURN_RATE:
            return f"${budget.limit:.2f}/h"
        case BudgetKind.CONCURRENT_SESSIONS:
            return f"{budget.limit:g} sessions"
        case BudgetKind.DISK_PER_DAY:
            return f"${budget.limit:.2f}/day of kept disks"


@dataclass(frozen=True)
class Usage:
    """Where a budget stands now."""

    budget: Budget
    used: float

    @property
    def fraction(self) -> float:
        return self.used / self.budget.limit

    @property
    def over(self) -> bool:
        """A month's spend is over at its limit (any more would pass it); counts and rates
        only above it."""
        if self.budget.kind == BudgetKind.MONTHLY_SPEND:
            return self.used >= self.budget.limit
        return self.used > self.budget.limit


@dataclass(frozen=True)
class BudgetCheck:
    """One budget a rental would count against: where it stands now and where the rental would
    take it (a month's spend by the whole reservation, a session more, or its hourly rate)."""

    budget: Budget
    used: float
    after: float

    @property
    def crosses(self) -> bool:
        """The rental would take the budget past its limit."""
        return self.after > self.budget.limit

    @property
    def refuses(self) -> bool:
        """A `block` or `stop` budget refuses a rental that would cross it; `warn` only warns."""
        return self.crosses and self.budget.action != BudgetAction.WARN

    def would(self) -> str:
        """`this rental would bring it to $12.00 of $10.00/month`."""
        return _would(self.budget, self.after)


_COUNTS_DISKS = (BudgetKind.MONTHLY_SPEND, BudgetKind.DISK_PER_DAY)
"""The budgets a stopped session's kept disk counts against, so a `stop` budget destroys it."""


@dataclass(frozen=True)
class _Books:
    """The month's spend per session and the open sessions: what every budget is measured on."""

    month: str
    spent: dict[str, float]
    consumers: dict[str, str]
    running: list[Session]
    stopped: list[Session]
    """Stopped sessions, billing their kept disks."""

    def in_scope(self, budget: Budget) -> Callable[[str], bool]:
        return lambda consumer: budget.consumer is None or consumer == budget.consumer

    def measure(self, budget: Budget) -> float:
        mine = self.in_scope(budget)
        match budget.kind:
            case BudgetKind.MONTHLY_SPEND:
                return sum(v for sid, v in self.spent.items() if mine(self.consumers[sid]))
            case BudgetKind.CONCURRENT_SESSIONS:
                return float(sum(1 for s in self.running if mine(s.consumer)))
            case BudgetKind.BURN_RATE:
                return sum(costs.burn_rate(s) for s in self.running if mine(s.consumer))
            case BudgetKind.DISK_PER_DAY:
                return sum(costs.burn_rate(s) * 24 for s in self.stopped if mine(s.consumer))


class Budgets:
    """The budgets of this install, measured from the database."""

    def __init__(
        self,
        store: Store,
        lifecycle: Lifecycle,
        events: EventBus,
        clock: Clock,
        tz: tzinfo | None = None,
    ) -> None:
        self.store, self.lifecycle, self.events, self.clock = store, lifecycle, events, clock
        self.tz = tz

    async def set(self, budget: Budget) -> Budget:
        return await self.store.set_budget(budget, self.clock.now())

    async def all(self) -> list[Budget]:
        return await self.store.list_budgets()

    async def delete(self, budget_id: int) -> None:
        if not await self.store.delete_budget(budget_id):
            raise UserError(f"no budget {budget_id}", field="budget_id", hint=Hint.UNKNOWN_BUDGET)

    async def usage(self) -> list[Usage]:
        books = await self._books(self.clock.now())
        return [Usage(b, books.measure(b)) for b in await self.store.list_budgets()]

    async def _books(self, now: datetime, replacing: str | None = None) -> _Books:
        today = costs.local_date(now, self.tz)
        since = costs.local_midnight(costs.month_start(today), self.tz)
        billing = await self.store.sessions_billing_between(since, now)
        lines = costs.daily_lines(billing, since, now, now, self.tz)
        open_sessions = await self.store.list_sessions(open_only=True)
        return _Books(
            month=f"{today:%Y-%m}",
            spent=costs.group(lines, "session"),
            consumers={s.id: s.consumer for s in billing},
            running=[s for s in open_sessions if s.status in ACTIVE and s.id != replacing],
            stopped=[s for s in open_sessions if s.status == SessionStatus.STOPPED],
        )

    # ------------------------------------------------------------------ before renting

    async def preview(
        self, consumer: str, offer: Offer, hours: float, replacing: str | None = None
    ) -> list[BudgetCheck]:
        """Every budget a rental of `offer` for `hours` by `consumer` counts against (the global
        ones and the consumer's), with what it would do. Reads only: no alert is published and
        no provider is called, so a dialog may ask as often as its fields change. `replacing`
        names a session this rental stands in for (a query rental moving to its next match, or
        a stopped session started again), which is then not counted twice. A disk budget is not
        asked: a rental adds no kept disk (it is enforced on the disks kept, by `enforce`)."""
        budgets = [
            b
            for b in await self.store.list_budgets()
            if b.consumer in (None, consumer) and b.kind != BudgetKind.DISK_PER_DAY
        ]
        if not budgets:
            return []
        books = await self._books(self.clock.now(), replacing)
        added = {
            BudgetKind.MONTHLY_SPEND: offer.price_per_hour * hours,
            BudgetKind.CONCURRENT_SESSIONS: 1.0,
            BudgetKind.BURN_RATE: offer.price_per_hour,
        }
        checks = []
        for budget in budgets:
            used = books.measure(budget)
            checks.append(BudgetCheck(budget, used, used + added[budget.kind]))
        return checks

    async def admit(
        self, consumer: str, offer: Offer, hours: float, replacing: str | None = None
    ) -> None:
        """Refuse a rental a `block`/`stop` budget or the balance does not allow (before any
        provider call); warn for a `warn` budget it would cross. The budgets' verdict is
        `preview`'s."""
        for check in await self.preview(consumer, offer, hours, replacing):
            if not check.crosses:
                continue
            if not check.refuses:
                await self._alert(
                    "budget_warning", f"{check.would()}; renting anyway", Severity.WARNING
                )
                continue
            raise BudgetRefused(f"refused by {describe_budget(check.budget)}: {check.would()}")
        await self._check_balance(offer, hours)

    async def _check_balance(self, offer: Offer, hours: float) -> None:
        adapter = self.lifecycle.adapter(offer.provider)
        if adapter is None:
            return
        try:
            balance = await adapter.balance()
        except ProviderError as err:
            log.warning("%s: cannot read the balance before renting: %s", offer.provider, err)
            return
        if balance is None:
            return
        needed = offer.price_per_hour * hours
        if balance < needed:
            raise BudgetRefused(
                f"the {offer.provider} balance (${balance:.2f}) does not cover this rental "
                f"(${needed:.2f} for {hours:g} h); add credit first"
            )
        if balance < needed * LOW_BALANCE_FACTOR:
            await self._alert(
                "low_balance",
                f"the {offer.provider} balance is low: ${balance:.2f} left, this rental may "
                f"take ${needed:.2f}",
                Severity.WARNING,
            )

    # ------------------------------------------------------------------ every tick

    async def enforce(self) -> list[str]:
        """Fire newly crossed thresholds and apply `stop` budgets; the ids of sessions ended."""
        budgets = await self.store.list_budgets()
        if not budgets:
            return []
        books = await self._books(self.clock.now())
        ended: list[str] = []
        for budget in budgets:
            usage = Usage(budget, books.measure(budget))
            await self._fire_thresholds(usage, books.month)
            if usage.over and budget.action == BudgetAction.STOP:
                ended += await self._stop_until_within(usage, books)
        return ended

    async def _fire_thresholds(self, usage: Usage, month: str) -> None:
        """Record every threshold newly crossed this month; alert once, for the highest (a
        jump from 40 % to 100 % is one alert, not three)."""
        budget = usage.budget
        assert budget.id is not None
        now = self.clock.now()
        crossed = [t for t in THRESHOLDS if usage.fraction * 100 >= t]
        fired = [
            t for t in crossed if await self.store.fire_budget_threshold(budget.id, month, t, now)
        ]
        if fired:
            await self._alert(
                "budget_threshold",
                f"{describe_budget(budget)} is at {usage.fraction:.0%} "
                f"({used_text(budget, usage.used)})",
                _THRESHOLD_SEVERITY[max(fired)],
            )

    async def _stop_until_within(self, usage: Usage, books: _Books) -> list[str]:
        """End the scope's sessions, most expensive first, until the budget holds (a month's
        spend cannot fall, so that ends them all): running ones gracefully, and kept disks
        (which a disk budget counts, and a month's spend too) destroyed."""
        budget = usage.budget
        mine = books.in_scope(budget)
        running = [] if budget.kind == BudgetKind.DISK_PER_DAY else books.running
        kept = books.stopped if budget.kind in _COUNTS_DISKS else []
        victims = sorted(
            (s for s in (*running, *kept) if mine(s.consumer)), key=costs.burn_rate, reverse=True
        )
        ended, used = [], usage.used
        reason = f"over {describe_budget(budget)}"
        for session in victims:
            if not Usage(budget, used).over:
                break
            if session.status == SessionStatus.STOPPED:
                await self.lifecycle.delete(session.id, reason)
                books.stopped.remove(session)
            else:
                await self.lifecycle.done(session.id, reason)
                books.running.remove(session)
            ended.append(session.id)
            used = books.measure(budget)
        if ended:
            await self._alert(
                "budget_stop",
                f"{describe_budget(budget)} is exceeded: ended {len(ended)} session(s) "
                f"({', '.join(ended)})",
                Severity.ERROR,
            )
        return ended

    async def _alert(self, alert: str, message: str, severity: Severity) -> None:
        await self.events.publish(Alert(message=message, alert=alert, severity=severity))


def used_text(budget: Budget, used: float) -> str:
    """`$18.50 of $50.00/month`, `2 of 3 sessions`: where a budget stands, as alerts say it."""
    if budget.kind == BudgetKind.CONCURRENT_SESSIONS:
        return f"{used:g} of {budget.limit:g} sessions"
    unit = {BudgetKind.MONTHLY_SPEND: "/month", BudgetKind.DISK_PER_DAY: "/day"}.get(
        budget.kind, "/h"
    )
    return f"${used:.2f} of ${budget.limit:.2f}{unit}"


def _would(budget: Budget, after: float) -> str:
    return f"this rental would bring it to {used_text(budget, after)}"
