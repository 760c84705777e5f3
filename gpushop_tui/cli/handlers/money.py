"""What costs, costs summary and budgets do (their arguments: cli/money.py)."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from typing import TYPE_CHECKING, Any

from gpushop_tui.cli.handlers import with_shopper
from gpushop_tui.cli.money import BUDGET_KINDS
from gpushop_tui.cli.output import print_json, print_table, when
from gpushop_tui.core import describe_budget, limit_text
from gpushop_tui.errors import UserError
from gpushop_tui.models import Budget, BudgetAction, BudgetKind, CostKind

if TYPE_CHECKING:
    from gpushop_tui.core import Billing, CostReport, CostRow, Facade

COST_COLUMNS = ("period", "session", "consumer", "provider", "gpu", "usd")
"""The columns of `costs` (table, csv, and the keys of each json row)."""


def run_costs(args: argparse.Namespace) -> int:
    """`costs`: cost rows per day or month; `costs summary`: where the money goes now."""
    show = _costs_summary if args.action == "summary" else _costs
    return int(asyncio.run(with_shopper(lambda shopper: show(shopper, args))))


async def _cost_report(shopper: Facade, args: argparse.Namespace) -> CostReport:
    """The core's cost report for the days and scope the flags ask for."""
    try:
        return await shopper.cost_report(
            args.since, args.until, consumer=args.consumer, session_id=args.session
        )
    except UserError as err:
        if err.field != "until":
            raise
        raise UserError(
            f"--until {args.until} is before --since {args.since}", field="until"
        ) from None


async def _costs(shopper: Facade, args: argparse.Namespace) -> int:
    report = await _cost_report(shopper, args)
    rows = [(_cost_cells(row), round(row.amount, 6)) for row in report.rows(args.period)]
    total = round(report.total, 6)
    if args.output == "json":
        print_json(
            {
                "since": report.since,
                "until": report.until,
                "period": args.period,
                "rows": [
                    dict(zip(COST_COLUMNS, (*cells, usd), strict=True)) for cells, usd in rows
                ],
                "total_usd": total,
            }
        )
    elif args.output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(COST_COLUMNS)
        writer.writerows((*cells, usd) for cells, usd in rows)
    else:
        if rows:
            print_table(
                [(*cells, f"${usd:.4f}") for cells, usd in rows], [h.upper() for h in COST_COLUMNS]
            )
        print(
            f"total ${total:.4f} from {when(report.since)} to {when(min(report.until, report.now))}"
        )
    return 0


def _cost_cells(row: CostRow) -> tuple[str, ...]:
    """A cost row's cells before its amount: period, session, consumer, provider, GPU."""
    return (row.period, row.session_id, row.consumer, row.provider, row.gpu_name)


async def _costs_summary(shopper: Facade, args: argparse.Namespace) -> int:
    report = await _cost_report(shopper, args)
    summary: dict[str, Any] = {
        "first_day": report.first_day,
        "last_day": report.last_day,
        "month_usd": round(report.total, 6),
        "today_usd": round(report.today_total, 6),
        "burn_usd_per_hour": round(report.burn_usd_per_hour, 6),
        "gpu_usd_per_hour": _rate(report.gpu_billing),
        "disk_usd_per_hour": _rate(report.disk_billing),
        "by_consumer": report.by("consumer"),
        "by_provider": report.by("provider"),
        "by_gpu": report.by("gpu"),
        "billing_now": [
            {
                "session": b.session.id,
                "consumer": b.session.consumer,
                "kind": b.kind.value,
                "usd_so_far": round(b.cost_usd, 6),
                "usd_per_hour": b.usd_per_hour,
            }
            for b in report.billing
        ],
    }
    if args.output == "json":
        print_json(summary)
        return 0
    asked = args.since is not None or args.until is not None
    days = f"{report.first_day} to {report.last_day}" if asked else "this month"
    gpu, disk = len(report.gpu_billing), len(report.disk_billing)
    print(f"{days} ${summary['month_usd']:.4f}   today ${summary['today_usd']:.4f}   "
          f"burning ${summary['burn_usd_per_hour']:.4f}/h now: "
          f"GPU ${summary['gpu_usd_per_hour']:.4f}/h ({gpu} sessions), "
          f"disk ${summary['disk_usd_per_hour']:.4f}/h ({disk} stopped)")  # fmt: skip
    for what in ("consumer", "provider", "gpu"):
        group = summary[f"by_{what}"]
        if group:
            print(f"by {what}: " + ", ".join(f"{k} ${v:.4f}" for k, v in group.items()))
    if report.billing:
        print_table(
            [
                (
                    b.session.id,
                    b.session.consumer,
                    (await shopper.view_of(b.session)).status_words,
                    "GPU" if b.kind == CostKind.COMPUTE else "disk",
                    f"${b.cost_usd:.4f}",
                    f"${b.usd_per_hour:.4f}/h",
                )
                for b in report.billing
            ],
            ("SESSION", "CONSUMER", "STATUS", "BILLS", "SO FAR", "RATE"),
        )
    return 0


def _rate(billing: tuple[Billing, ...]) -> float:
    """What these sessions bill an hour now, together."""
    return round(sum(b.usd_per_hour for b in billing), 6)


def run_budgets(args: argparse.Namespace) -> int:
    """`budgets list|set|delete`."""
    return int(asyncio.run(with_shopper(lambda shopper: _budgets(shopper, args))))


async def _budgets(shopper: Facade, args: argparse.Namespace) -> int:
    if args.action == "delete":
        await shopper.delete_budget(args.id)
        print(f"budget {args.id} deleted")
        return 0
    if args.action == "set":
        budget = await shopper.set_budget(
            Budget(
                consumer=None if args.everyone else args.consumer,
                kind=BudgetKind(BUDGET_KINDS[args.kind]),
                limit=args.limit,
                action=BudgetAction(args.then),
            )
        )
        if args.output == "json":
            print_json(budget.model_dump(mode="json"))
        else:
            print(f"budget {budget.id}: {describe_budget(budget)}")
        return 0
    usages = await shopper.budget_usage()
    if args.output == "json":
        print_json(
            [u.budget.model_dump(mode="json") | {"used": u.used, "over": u.over} for u in usages]
        )
        return 0
    if not usages:
        print("no budgets (see 'gpushop budgets set --help')")
        return 0
    print_table(
        [
            (
                str(u.budget.id),
                u.budget.consumer or "(global)",
                u.budget.kind.value,
                limit_text(u.budget),
                u.budget.action.value,
                f"{u.fraction:.0%}" + (" OVER" if u.over else ""),
            )
            for u in usages
        ],
        ("ID", "SCOPE", "KIND", "LIMIT", "ACTION", "USED"),
    )
    return 0
