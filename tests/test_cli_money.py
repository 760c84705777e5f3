"""Costs and budgets from the command line: the real entry point against the standalone
simulator (shared by the test session, so every rental takes the cheapest match of a query)."""

from __future__ import annotations

import csv
import io
from typing import Any

from tests.test_cli_sessions import as_json, delete, gpushop, one_line_error, rent, sim

__all__ = ["sim"]  # the fixture, shared with the session tests


def test_a_rental_ended_shows_in_costs_as_json_csv_and_summary(sim: dict[str, Any]) -> None:
    session = rent(sim)
    ended = delete(sim, session["id"])
    report = as_json(gpushop(sim, "costs", "-o", "json"))
    rows = [r for r in report["rows"] if r["session"] == session["id"]]
    assert rows and all(r["consumer"] == "tests" and r["provider"] == "vastai" for r in rows)
    assert sum(r["usd"] for r in rows) > 0
    assert report["total_usd"] >= sum(r["usd"] for r in rows)
    by_month = as_json(
        gpushop(sim, "costs", "--period", "month", "-s", session["id"], "-o", "json")
    )
    assert [r["period"] for r in by_month["rows"]] == [ended["instance_gone_at"][:7]]

    table = list(csv.reader(io.StringIO(gpushop(sim, "costs", "-o", "csv").stdout)))
    assert table[0] == ["period", "session", "consumer", "provider", "gpu", "usd"]
    assert any(row[1] == session["id"] for row in table[1:])

    summary = as_json(gpushop(sim, "costs", "summary", "-o", "json"))
    assert summary["month_usd"] > 0 and summary["by_consumer"]["tests"] > 0
    assert all(b["session"] != session["id"] for b in summary["billing_now"])  # it is gone
    shown = gpushop(sim, "costs")
    assert shown.returncode == 0 and session["id"] in shown.stdout and "total $" in shown.stdout


def test_bad_cost_ranges_are_one_line(sim: dict[str, Any]) -> None:
    assert "is not a day like" in one_line_error(gpushop(sim, "costs", "--since", "yesterday"))
    backwards = gpushop(sim, "costs", "--since", "2026-11-20", "--until", "2026-11-01")
    assert "is before --since" in one_line_error(backwards)


def test_a_block_budget_refuses_a_rental_and_the_list_shows_it(sim: dict[str, Any]) -> None:
    budget = as_json(gpushop(sim, "budgets", "set", "-c", "tests", "--kind", "concurrent",
                             "--limit", "1", "--action", "block", "-o", "json"))  # fmt: skip
    assert budget["consumer"] == "tests" and budget["kind"] == "concurrent_sessions"
    first = rent(sim)
    refused = gpushop(sim, "provision", "-c", "tests", "-g", "gpu=4090 provider=vastai")
    assert "refused by tests's concurrent sessions budget" in one_line_error(refused)
    sessions = as_json(gpushop(sim, "sessions", "list", "-o", "json"))
    assert [s["id"] for s in sessions] == [first["id"]]  # nothing was rented for the refusal

    listed = as_json(gpushop(sim, "budgets", "list", "-o", "json"))
    assert [(b["id"], b["used"], b["over"]) for b in listed] == [(budget["id"], 1.0, False)]
    assert "100%" in gpushop(sim, "budgets", "list").stdout
    assert gpushop(sim, "budgets", "delete", str(budget["id"])).returncode == 0
    assert as_json(gpushop(sim, "budgets", "list", "-o", "json")) == []
    assert "no budget" in one_line_error(gpushop(sim, "budgets", "delete", str(budget["id"])))
    delete(sim, first["id"])


def test_budget_flags_are_checked(sim: dict[str, Any]) -> None:
    no_scope = gpushop(sim, "budgets", "set", "--kind", "burn", "--limit", "2")
    assert "one of the arguments -c/--consumer --global is required" in one_line_error(no_scope)
    negative = gpushop(sim, "budgets", "set", "--global", "--kind", "burn", "--limit", "-2")
    assert "must be more than 0" in one_line_error(negative)
    made = as_json(gpushop(sim, "budgets", "set", "--global", "--kind", "burn", "--limit", "2.5",
                           "--action", "stop", "-o", "json"))  # fmt: skip
    assert made["consumer"] is None and made["action"] == "stop"
    listed = gpushop(sim, "budgets", "list").stdout.splitlines()
    assert listed[1].split() == [str(made["id"]), "(global)", "burn_rate", "$2.50/h", "stop", "0%"]
    changed = gpushop(sim, "budgets", "set", "--global", "--kind", "burn", "--limit", "3")
    assert (
        changed.stdout.strip()
        == f"budget {made['id']}: the global burn rate budget ($3.00/h, warn)"
    )
    assert gpushop(sim, "budgets", "delete", str(made["id"])).returncode == 0


def test_the_briefs_costs_form_is_honoured(sim: dict[str, Any]) -> None:
    session = rent(sim, "-c", "atlas")
    delete(sim, session["id"])
    report = as_json(gpushop(sim, "costs", "--consumer=atlas", "--period=month", "-o", "json"))
    assert report["rows"] and {r["consumer"] for r in report["rows"]} == {"atlas"}
    assert all(len(r["period"]) == len("2026-11") for r in report["rows"])


def test_a_disk_budget_limits_what_kept_disks_bill_a_day(sim: dict[str, Any]) -> None:
    made = as_json(gpushop(sim, "budgets", "set", "--global", "--kind", "disk", "--limit", "4",
                           "--action", "stop", "-o", "json"))  # fmt: skip
    assert (made["kind"], made["limit"], made["action"]) == ("disk_per_day", 4.0, "stop")
    listed = gpushop(sim, "budgets", "list").stdout.splitlines()
    assert listed[1].split()[:3] == [str(made["id"]), "(global)", "disk_per_day"]
    assert gpushop(sim, "budgets", "delete", str(made["id"])).returncode == 0
