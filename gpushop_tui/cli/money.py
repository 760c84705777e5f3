"""The money commands' arguments: costs, costs summary, budgets (handlers: handlers/money.py)."""

from __future__ import annotations

import argparse
from datetime import date

from gpushop_tui.cli.args import Command, add_output, positive

BUDGET_KINDS = {
    "monthly": "monthly_spend",
    "concurrent": "concurrent_sessions",
    "burn": "burn_rate",
    "disk": "disk_per_day",
}
"""--kind words and the models.BudgetKind each stands for."""

HANDLERS = "gpushop_tui.cli.handlers.money"


def _local_day(text: str) -> date:
    """A local calendar day, YYYY-MM-DD."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2026-11-01") from None


def _configure_costs(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "What rentals cost, per second from the create call until the provider confirms the "
        "instance gone. Days and months are local time. With neither --since nor --until the "
        "range is this month; --since alone runs to the end of its month, --until alone from "
        "the start of its month."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    summary = actions.add_parser(
        "summary",
        help="the range (this month unless given) and today, by consumer, provider and GPU, "
        "and what bills now (GPU time apart from kept disks)",
    )
    add_output(summary)
    parser.add_argument("-c", "--consumer", help="only this consumer")
    parser.add_argument("-s", "--session", help="only this session")
    parser.add_argument(
        "--period", choices=("day", "month"), default="day", help="one row per day or per month"
    )
    parser.add_argument(
        "--since",
        type=_local_day,
        metavar="DAY",
        help="first day, YYYY-MM-DD (alone: to the end of its month)",
    )
    parser.add_argument(
        "--until",
        type=_local_day,
        metavar="DAY",
        help="last day, included (alone: from the start of its month)",
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json", "csv"), default="table", help="output format"
    )


def _configure_budgets(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Limits that act: 'warn' alerts, 'block' refuses new rentals that would cross the limit, "
        "'stop' also ends the scope's sessions, most expensive first, until it holds (a disk "
        "budget's 'stop' destroys the dearest kept disks). "
        "Thresholds at 50/80/100% alert once a month."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every budget and where it stands now")
    add_output(listing)
    setting = actions.add_parser("set", help="create a budget, or change the one of that kind")
    scope = setting.add_mutually_exclusive_group(required=True)
    scope.add_argument("-c", "--consumer", help="the consumer it limits")
    scope.add_argument("--global", dest="everyone", action="store_true", help="limit everyone")
    setting.add_argument(
        "--kind",
        choices=tuple(BUDGET_KINDS),
        required=True,
        help="monthly: USD this month; concurrent: sessions at once; burn: USD/h now; disk: "
        "USD/day billed by stopped sessions' kept disks",
    )
    setting.add_argument(
        "--limit", type=positive, required=True, help="USD, sessions, USD/h, or USD/day"
    )
    setting.add_argument(
        "--action",
        dest="then",
        choices=("warn", "block", "stop"),
        default="warn",
        help="what crossing it does (default: warn)",
    )
    add_output(setting)
    deleting = actions.add_parser("delete", help="remove a budget")
    deleting.add_argument("id", type=int)


COSTS = Command(
    "costs",
    "what rentals cost, per day or month, by consumer or session (csv too)",
    _configure_costs,
    f"{HANDLERS}:run_costs",
)
BUDGETS = Command(
    "budgets",
    "spend, concurrency, burn-rate and kept-disk limits that warn, block or stop",
    _configure_budgets,
    f"{HANDLERS}:run_budgets",
)
