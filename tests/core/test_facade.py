"""The façade owns what the faces used to work out each on their own (issue 16).

Cost reports, session views, query parsing with the benchmark model list, budget previews,
audit filters done in SQL and benchmark rankings: each answered once by `Shopper`, so the CLI,
the API and the TUI cannot disagree.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from gpushop_tui.core import QueryError, SessionConflict, SessionNotFound, UnknownModel
from gpushop_tui.core.costs import month_days, report_days
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    AuditEvent,
    Budget,
    BudgetAction,
    BudgetKind,
    ProvisionRequest,
    Severity,
)
from tests.core.market import Market, open_market

HOUR = timedelta(hours=1)


@pytest.fixture
async def market(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> AsyncIterator[Market]:
    async with open_market(monkeypatch, isolated_env) as opened:
        yield opened


def test_report_days_are_one_rule_for_every_face() -> None:
    today = date(2026, 2, 10)
    assert report_days(today, None, None) == (date(2026, 2, 1), date(2026, 2, 28))
    assert report_days(today, date(2026, 1, 5), None) == (date(2026, 1, 5), date(2026, 1, 31))
    assert report_days(today, None, date(2026, 2, 3)) == (date(2026, 2, 1), date(2026, 2, 3))
    assert report_days(today, date(2026, 1, 2), date(2026, 1, 3)) == (
        date(2026, 1, 2),
        date(2026, 1, 3),
    )
    assert month_days(date(2024, 2, 29)) == (date(2024, 2, 1), date(2024, 2, 29))
    with pytest.raises(UserError) as refused:
        report_days(today, date(2026, 1, 5), date(2026, 1, 4))
    assert refused.value.field == "until"
    assert "--" not in refused.value.message  # names no face's flag


async def test_cost_report_totals_groups_and_rows_agree(market: Market) -> None:
    alice = await market.running(consumer="alice")
    bob = await market.running(consumer="bob")
    await market.advance(HOUR.total_seconds(), step_s=60)
    report = await market.shopper.cost_report()
    assert report.first_day.day == 1 and report.today == market.shopper.today()
    expected = sum(
        view.cost_at(market.clock.now())
        for view in [await market.shopper.session_view(s.id) for s in (alice, bob)]
    )
    assert report.total == pytest.approx(expected)
    assert set(report.by("consumer")) == {"alice", "bob"}
    assert sum(report.by("provider").values()) == pytest.approx(report.total)
    assert report.session_count == 2
    rows = report.rows("day")
    assert {row.session_id for row in rows} == {alice.id, bob.id}
    assert sum(row.amount for row in rows) == pytest.approx(report.total)
    assert report.burn_usd_per_hour == pytest.approx(
        (alice.price_per_hour or 0) + (bob.price_per_hour or 0)
    )
    mine = await market.shopper.cost_report(consumer="alice")
    assert set(mine.by("consumer")) == {"alice"}
    assert [b.session.id for b in mine.billing] == [alice.id]
    one = await market.shopper.cost_report(session_id=bob.id)
    assert {line.session_id for line in one.lines} == {bob.id}


async def test_session_view_has_ssh_cost_and_next_deadline(market: Market) -> None:
    running = await market.running(hours=2)
    view = await market.shopper.session_view(running.id)
    assert view.ssh_command is not None
    argv = shlex.split(view.ssh_command)
    assert argv[0] == "ssh" and f"{running.ssh_user}@{running.ssh_host}" in argv
    assert view.next_deadline is not None
    assert view.next_deadline.what == "expiry" and view.next_deadline.at == running.expires_at
    assert not view.next_deadline.warning(market.clock.now())
    assert view.next_deadline.warning(running.expires_at - timedelta(minutes=10))
    later = market.clock.now() + HOUR
    assert view.cost_at(later) == pytest.approx(
        view.cost_at(market.clock.now()) + (running.price_per_hour or 0)
    )
    await market.run(market.shopper.done(running.id))
    await market.until(running.id, lambda s: s.closed)
    closed = await market.shopper.session_view(running.id)
    assert closed.ssh_command is None and closed.next_deadline is None
    assert closed.burn_usd_per_hour == 0
    listed = await market.shopper.session_views()
    assert [v.session.id for v in listed] == [running.id]


async def test_parse_query_checks_model_against_benchmarks(market: Market) -> None:
    models = await market.shopper.benchmark_models()
    model = sorted(models)[0]
    parsed = await market.shopper.parse_query(f"gpu=4090 model={model}")
    assert parsed.model == model
    with pytest.raises(QueryError) as refused:
        await market.shopper.parse_query("model=no-such-model")
    assert "^" in refused.value.message


async def test_audit_filters_run_in_the_database(market: Market) -> None:
    alice = await market.running(consumer="alice")
    bob = await market.running(consumer="bob")
    store = market.shopper._store
    now = market.clock.now()
    for severity, session in ((Severity.ERROR, alice), (Severity.WARNING, bob)):
        await store.add_audit(
            AuditEvent(at=now, kind="test", severity=severity, session_id=session.id, message="x")
        )
    warnings = await market.shopper.audit_log(min_severity=Severity.WARNING, limit=1000)
    assert warnings and all(e.severity in (Severity.WARNING, Severity.ERROR) for e in warnings)
    errors = await market.shopper.audit_log(min_severity=Severity.ERROR, limit=1000)
    assert {e.session_id for e in errors if e.kind == "test"} == {alice.id}
    alices = await market.shopper.audit_log(consumer="alice", limit=1000)
    assert alices and {e.session_id for e in alices} == {alice.id}
    newest = alices[-1].id
    assert newest is not None
    assert await market.shopper.audit_log(consumer="alice", after_id=newest) == []
    # the limit applies after the filter: one event, and it is bob's warning, not a newer info
    only = await market.shopper.audit_log(consumer="bob", min_severity=Severity.WARNING, limit=1)
    assert [(e.session_id, e.kind) for e in only] == [(bob.id, "test")]


async def test_budget_preview_and_book_through_the_facade(market: Market) -> None:
    offer = await market.offer()
    budget = await market.shopper.set_budget(
        Budget(
            consumer="alice",
            kind=BudgetKind.MONTHLY_SPEND,
            limit=offer.price_per_hour * 0.5,
            action=BudgetAction.BLOCK,
        )
    )
    assert [b.id for b in await market.shopper.list_budgets()] == [budget.id]
    checks = await market.shopper.preview_budgets("alice", offer, 1.0)
    assert [c.refuses for c in checks] == [True]
    assert await market.shopper.preview_budgets("bob", offer, 1.0) == []
    assert [u.budget.id for u in await market.shopper.budget_usage()] == [budget.id]
    assert budget.id is not None
    await market.shopper.delete_budget(budget.id)
    assert await market.shopper.list_budgets() == []


async def test_benchmark_rankings(market: Market) -> None:
    best = await market.shopper.rank_benchmarks("best")
    speeds = [r.measurement.tokens_per_second for r in best]
    assert speeds == sorted(speeds, reverse=True)
    every = await market.shopper.rank_benchmarks("all")
    assert len(every) == len(await market.shopper.benchmark_measurements())
    assert await market.shopper.recommend_gpus()
    with pytest.raises(UnknownModel):
        await market.shopper.rank_benchmarks("best", model="no-such-model")


async def test_a_request_id_rents_once_and_says_which_call_created_it(market: Market) -> None:
    offer = await market.offer()
    request = ProvisionRequest(consumer="alice", offer_id=offer.id, request_id="job-7")
    answers = await market.run(asyncio.gather(*(market.shopper.rent(request) for _ in range(3))))
    assert len({rental.session.id for rental in answers}) == 1
    assert [rental.created for rental in answers].count(True) == 1
    assert len(market.live_instances("vastai")) == 1
    again = await market.run(market.shopper.rent(request))
    assert not again.created and again.session.id == answers[0].session.id
    stranger = request.model_copy(update={"consumer": "mallory"})
    with pytest.raises(SessionConflict) as refused:
        await market.run(market.shopper.rent(stranger))
    assert refused.value.field == "request_id"


async def test_a_unique_prefix_of_a_session_id_names_it_everywhere(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(["abc111000000", "abc222000000"])
    monkeypatch.setattr(market.shopper._lifecycle, "new_session_id", lambda: next(ids))
    first = await market.running()
    second = await market.running()
    assert (await market.shopper.session("abc1")).id == first.id
    assert (await market.shopper.session_view("abc2")).session.id == second.id
    assert (await market.shopper.session(first.id)).id == first.id
    with pytest.raises(UserError) as ambiguous:
        await market.shopper.session("abc")
    assert ambiguous.value.hint == "unknown_session" and ambiguous.value.field == "session_id"
    assert first.id in ambiguous.value.message and second.id in ambiguous.value.message
    for unknown in ("abd", "", "abc%", "abc_"):
        with pytest.raises(SessionNotFound):
            await market.shopper.session(unknown)
    extended = await market.shopper.extend("abc2", 1)
    assert extended.id == second.id and extended.expires_at > second.expires_at
    ended = await market.run(market.shopper.done("abc1"))
    assert ended.id == first.id
