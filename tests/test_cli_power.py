"""Power off, power on from the command line: the real entry point in child processes against
the standalone simulator (shared by the test session: every rental takes the cheapest match)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

from tests.conftest import ROOT, sim_env
from tests.test_cli_sessions import (
    CHEAP_4090,
    as_json,
    audit,
    delete,
    gpushop,
    one_line_error,
    rent,
    sim,
    table_value,
    vast_instance,
)

__all__ = ["sim"]  # the fixture, shared with the session tests


def test_stop_keeps_the_disk_and_start_brings_the_session_back(sim: dict[str, Any]) -> None:
    rented = as_json(gpushop(sim, "provision", "-c", "tests", "-g", CHEAP_4090, "-o", "json"))
    sid = rented["id"]
    assert rented["status"] == "running" and rented["cycles"][0]["kind"] == "compute"

    stopping = gpushop(sim, "sessions", "stop", sid, "--keep-days", "2", "-o", "json")
    stopped = as_json(stopping)
    assert (stopped["status"], stopped["instance"]) == ("stopped", "live")
    assert stopped["disk_usd_per_day"] > 0 and stopped["keep_days"] == 2
    assert stopped["status_words"] == f"stopped (disk kept, ${stopped['disk_usd_per_day']:.2f}/day)"
    assert stopped["keep_until"] is not None
    assert [(c["kind"], c["ended_at"] is None) for c in stopped["cycles"]] == [
        ("compute", False),
        ("storage", True),
    ]
    assert "(stopping the instance, keeping its disk)" in stopping.stderr
    assert vast_instance(sim, rented["instance_id"]) is not None, "the instance is kept"

    shown = as_json(gpushop(sim, "sessions", "get", sid, "-o", "json"))
    assert shown["status"] == "stopped" and shown["keep_until"] == stopped["keep_until"]
    details = gpushop(sim, "sessions", "get", sid)
    assert table_value(details.stdout, "status") == f"{stopped['status_words']} (instance live)"
    assert table_value(details.stdout, "cycle 1").startswith("running ")
    assert table_value(details.stdout, "cycle 2").startswith("stopped, disk kept ")
    assert " to now: " in table_value(details.stdout, "cycle 2"), "still billing the disk"
    listed = gpushop(sim, "sessions", "list", "-s", "stopped")
    assert sid in listed.stdout and stopped["status_words"] in listed.stdout
    summary = as_json(gpushop(sim, "costs", "summary", "-o", "json"))
    [billing] = [b for b in summary["billing_now"] if b["session"] == sid]
    assert billing["kind"] == "storage" and summary["disk_usd_per_hour"] >= billing["usd_per_hour"]
    words = gpushop(sim, "costs", "summary").stdout
    assert re.search(r"disk \$\d+\.\d{4}/h \([1-9]\d* stopped\)", words), words
    again = gpushop(sim, "sessions", "stop", sid)
    assert "only a running session can be stopped" in one_line_error(again)

    started = gpushop(sim, "sessions", "start", sid, "-t", "1")
    assert started.returncode == 0, started.stderr
    assert table_value(started.stdout, "status") == "running (instance live)"
    assert "(starting the instance on its kept disk" in started.stderr
    back = as_json(gpushop(sim, "sessions", "get", sid, "-o", "json"))
    assert back["instance_id"] == rented["instance_id"] and back["reservation_hours"] == 1
    assert [c["kind"] for c in back["cycles"]] == ["compute", "storage", "compute"]
    running = gpushop(sim, "sessions", "start", sid)
    assert "only a stopped session can be started" in one_line_error(running)

    asked = [
        (e.data["action"], e.data["by"])
        for e in audit(sid)
        if e.kind == "session_power" and e.data["action"] in ("stop", "start")
    ]
    assert asked == [("stop", "operator (cli)"), ("start", "operator (cli)")]
    delete(sim, sid)


def gpushop_that_cannot_stop(sim: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """`gpushop ARGS` in a child process whose Vast.ai adapter says it cannot stop an instance
    (whichever provider truly cannot, the sentence is the same)."""
    code = (
        "import sys\n"
        "from gpushop_tui.providers.vastai import VastAi\n"
        "VastAi.can_stop = False\n"
        "from gpushop_tui.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)} | sim_env(sim, "vastai"),
        timeout=120,
        check=False,
    )


def test_a_provider_that_cannot_stop_says_so_in_one_sentence(sim: dict[str, Any]) -> None:
    session = rent(sim)
    refused = one_line_error(gpushop_that_cannot_stop(sim, "sessions", "stop", session["id"]))
    assert refused == (
        f"gpushop: error: Vast.ai cannot stop an instance and keep its disk; session "
        f"{session['id']} can only be ended (end it with 'gpushop sessions done')"
    )
    idle = gpushop_that_cannot_stop(
        sim, "provision", "-c", "tests", "-g", CHEAP_4090, "--idle-action", "stop", "--no-wait"
    )
    assert one_line_error(idle).endswith("; use --idle-action destroy")
    delete(sim, session["id"])
