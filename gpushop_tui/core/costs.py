"""What rentals cost: per second, from the session's own timestamps, in local-time buckets.

DESIGN.md §6. A session bills from the provider create call (`instance_created_at`) until the
provider confirms the instance gone (`instance_gone_at`), at the rate actually charged
(`price_per_hour`, fixed at rental time); a stopped instance bills its disk from `stopped_at`
at `stopped_price_per_hour`. Each power cycle's closed stretches are kept on the session
(`cycles`); the open one is derived from the timestamps. A create that made no instance has no
`instance_created_at` and costs nothing. Nothing is accumulated in memory, so a restart loses
no accrued cost, and a later price change of the offer cannot rewrite history. Times are UTC;
days and months are local.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Literal

from gpushop_tui.clock import utc
from gpushop_tui.errors import UserError
from gpushop_tui.models import BilledStretch, CostEntry, CostKind, Session

Grouping = Literal["consumer", "provider", "gpu", "session", "day", "month"]


def entries(session: Session) -> list[CostEntry]:
    """The stretches a session has billed, or is billing (`ended_at` None), in time order:
    each power cycle's running (compute) and stopped (storage) stretch."""
    start, rate = session.instance_created_at, session.price_per_hour
    if start is None or rate is None:
        return []
    base = {
        "session_id": session.id,
        "consumer": session.consumer,
        "provider": session.provider,
        "gpu_name": session.offer.gpu_name,
    }
    closed = list(session.cycles)
    if session.stopped_at is not None and not closed:  # stopped before cycles were kept
        closed.append(
            BilledStretch(
                kind=CostKind.COMPUTE,
                rate_per_hour=rate,
                started_at=start,
                ended_at=max(session.stopped_at, start),
            )
        )
    billed = [
        CostEntry(
            **base,
            kind=stretch.kind,
            rate_per_hour=stretch.rate_per_hour,
            started_at=stretch.started_at,
            ended_at=stretch.ended_at,
        )
        for stretch in closed
    ]
    if session.stopped_at is not None:
        kind, rate, start = (
            CostKind.STORAGE,
            session.stopped_price_per_hour or 0.0,
            session.stopped_at,
        )
    else:
        kind = CostKind.COMPUTE
        start = closed[-1].ended_at if closed else start
    billed.append(
        CostEntry(
            **base,
            kind=kind,
            rate_per_hour=rate,
            started_at=start,
            ended_at=session.instance_gone_at,
        )
    )
    return billed


def closing_stretch(session: Session, at: datetime) -> list[BilledStretch]:
    """The session's closed stretches with the open one closed at `at`: what `cycles` holds
    after a power change at `at` (a stop confirmed, a start asked for)."""
    billed = entries(session)
    if not billed:
        return list(session.cycles)
    return [
        BilledStretch(
            kind=entry.kind,
            rate_per_hour=entry.rate_per_hour,
            started_at=entry.started_at,
            ended_at=entry.ended_at or max(utc(at), entry.started_at),
        )
        for entry in billed
    ]


def cost_of(session: Session, now: datetime) -> float:
    """USD the session has cost so far (all of it, once its instance is gone)."""
    return sum(entry.amount(now) for entry in entries(session))


def burn_rate(session: Session) -> float:
    """USD/h the session bills right now: 0 once its instance is gone or never existed; a
    stopped instance's disk rate while it is stopped."""
    if session.instance_created_at is None or session.instance_gone_at is not None:
        return 0.0
    if session.stopped_at is not None:
        return session.stopped_price_per_hour or 0.0
    return session.price_per_hour or 0.0


def local_midnight(day: date, tz: tzinfo | None) -> datetime:
    """The instant a local day begins (`tz` None: this machine's zone, DST included), in UTC."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    return utc(start if tz is not None else start.astimezone())


def local_date(moment: datetime, tz: tzinfo | None) -> date:
    return moment.astimezone(tz).date()


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass(frozen=True)
class CostLine:
    """What one session's one kind of billing cost on one local day, inside a report's range."""

    session_id: str
    consumer: str
    provider: str
    gpu_name: str
    kind: CostKind
    day: date
    seconds: float
    amount: float


def daily_lines(
    sessions: Iterable[Session],
    since: datetime,
    until: datetime,
    now: datetime,
    tz: tzinfo | None = None,
) -> list[CostLine]:
    """Every session's cost split at local midnights, clipped to [since, until) and to `now`."""
    lines = []
    end_of_range = min(utc(until), utc(now))
    for session in sessions:
        for entry in entries(session):
            start = max(entry.started_at, utc(since))
            end = min(entry.ended_at or end_of_range, end_of_range)
            for day, piece_start, piece_end in _days(start, end, tz):
                seconds = (piece_end - piece_start).total_seconds()
                lines.append(
                    CostLine(
                        session_id=entry.session_id,
                        consumer=entry.consumer,
                        provider=entry.provider,
                        gpu_name=entry.gpu_name,
                        kind=entry.kind,
                        day=day,
                        seconds=seconds,
                        amount=seconds * entry.rate_per_hour / 3600,
                    )
                )
    return lines


def _days(
    start: datetime, end: datetime, tz: tzinfo | None
) -> Iterator[tuple[date, datetime, datetime]]:
    """[start, end) cut at local midnights: each local day with its piece."""
    while start < end:
        day = local_date(start, tz)
        boundary = min(end, local_midnight(day + timedelta(days=1), tz))
        yield day, start, boundary
        start = boundary


def group(lines: Iterable[CostLine], by: Grouping) -> dict[str, float]:
    """Totals keyed by consumer, provider, GPU, session, local day (ISO) or month (YYYY-MM)."""
    totals: dict[str, float] = defaultdict(float)
    for line in lines:
        totals[_key(line, by)] += line.amount
    return dict(sorted(totals.items()))


def _key(line: CostLine, by: Grouping) -> str:
    match by:
        case "consumer":
            return line.consumer
        case "provider":
            return line.provider
        case "gpu":
            return line.gpu_name
        case "session":
            return line.session_id
        case "day":
            return line.day.isoformat()
        case "month":
            return f"{line.day:%Y-%m}"


def month_days(day: date) -> tuple[date, date]:
    """The first and last local day of `day`'s month."""
    first = month_start(day)
    return first, next_month(first) - timedelta(days=1)


def report_days(today: date, first: date | None, last: date | None) -> tuple[date, date]:
    """The local days a report covers, the same for every face.

    Neither given: this month. One given: the rest of that day's month (from its first day,
    or to its last). A last day before the first is refused.
    """
    if first is None and last is None:
        return month_days(today)
    if first is None:
        assert last is not None
        return month_start(last), last
    if last is None:
        return first, month_days(first)[1]
    if last < first:
        raise UserError(f"the last day {last} is before the first day {first}", field="until")
    return first, last


@dataclass(frozen=True)
class Billing:
    """A session whose instance bills right now: what it cost so far and its USD/h."""

    session: Session
    cost_usd: float
    usd_per_hour: float

    @property
    def kind(self) -> CostKind:
        """`compute` while it bills GPU time, `storage` while it bills only a kept disk."""
        return CostKind.STORAGE if self.session.stopped_at is not None else CostKind.COMPUTE


@dataclass(frozen=True)
class CostRow:
    """What one session cost in one period (a local day, or a month as YYYY-MM)."""

    period: str
    session_id: str
    consumer: str
    provider: str
    gpu_name: str
    amount: float


@dataclass(frozen=True)
class CostReport:
    """What was billed over local days `first_day`..`last_day` (both included), up to now.

    The one cost report the CLI, the API and the Costs pane all render; `billing` is what
    bills right now within the same scope (consumer), whatever the days.
    """

    first_day: date
    last_day: date
    since: datetime
    until: datetime
    now: datetime
    today: date
    consumer: str | None
    lines: tuple[CostLine, ...]
    billing: tuple[Billing, ...]

    @property
    def total(self) -> float:
        return sum(line.amount for line in self.lines)

    @property
    def today_total(self) -> float:
        return sum(line.amount for line in self.lines if line.day == self.today)

    @property
    def session_count(self) -> int:
        """Distinct sessions that billed in the range."""
        return len({line.session_id for line in self.lines})

    @property
    def burn_usd_per_hour(self) -> float:
        return sum(billed.usd_per_hour for billed in self.billing)

    @property
    def gpu_billing(self) -> tuple[Billing, ...]:
        """The sessions billing GPU time now (running, or on their way up or down)."""
        return tuple(b for b in self.billing if b.kind == CostKind.COMPUTE)

    @property
    def disk_billing(self) -> tuple[Billing, ...]:
        """The stopped sessions billing only their kept disk now."""
        return tuple(b for b in self.billing if b.kind == CostKind.STORAGE)

    def by(self, grouping: Grouping) -> dict[str, float]:
        """Totals keyed by consumer, provider, GPU, session, day (ISO) or month (YYYY-MM)."""
        return group(self.lines, grouping)

    def rows(self, period: Literal["day", "month"]) -> list[CostRow]:
        """One row per period and session, in period then session order."""
        named: dict[tuple[str, str], CostLine] = {}
        totals: dict[tuple[str, str], float] = defaultdict(float)
        for line in self.lines:
            key = (_key(line, period), line.session_id)
            named[key] = line
            totals[key] += line.amount
        return [
            CostRow(
                period=key[0],
                session_id=key[1],
                consumer=named[key].consumer,
                provider=named[key].provider,
                gpu_name=named[key].gpu_name,
                amount=totals[key],
            )
            for key in sorted(named)
        ]
