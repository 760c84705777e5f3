"""Kill paths from the command line: `sessions get` lists what ends the instance if nobody does
(the simulated node arms its watchdog for real), and `provision` says in one line when the
node's watchdog could not be armed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gpushop_tui.cli.handlers.rent import _print_outcome
from gpushop_tui.core import SessionView
from gpushop_tui.models import Session, SessionStatus
from tests.support.factories import make_session
from tests.test_cli_sessions import CHEAP_4090, as_json, delete, gpushop, sim, table_value

__all__ = ["sim"]  # the fixture, shared with the session tests


def kill_path_block(stdout: str) -> list[str]:
    """The values of the `kill paths` block of a key/value table: its line and those under it
    with no name of their own."""
    lines = stdout.splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("kill paths  "))
    width = len(lines[first]) - len(lines[first][len("kill paths") :].lstrip())
    block = [lines[first]]
    for line in lines[first + 1 :]:
        if line[:width].strip():
            break
        block.append(line)
    return [line[width:] for line in block]


def test_sessions_get_lists_the_kill_paths_with_the_armed_node_watchdog(
    sim: dict[str, Any],
) -> None:
    rented = as_json(gpushop(sim, "provision", "-c", "tests", "-g", CHEAP_4090, "-o", "json"))
    sid = rented["id"]
    assert rented["status"] == "running" and rented["watchdog_error"] is None
    deadline = datetime.fromisoformat(rented["watchdog_deadline"])
    armed = f"node watchdog: ends the instance at {deadline:%Y-%m-%d %H:%M} UTC"
    assert rented["kill_paths"][1:] == [armed]

    shown = as_json(gpushop(sim, "sessions", "get", sid, "-o", "json"))
    assert shown["kill_paths"] == rented["kill_paths"]
    assert shown["kill_paths"][0].startswith("supervisor: ")
    details = gpushop(sim, "sessions", "get", sid)
    assert details.returncode == 0, details.stderr
    assert kill_path_block(details.stdout) == shown["kill_paths"]
    assert table_value(details.stdout, "kill paths") == shown["kill_paths"][0]

    delete(sim, sid)
    closed = gpushop(sim, "sessions", "get", sid)
    assert table_value(closed.stdout, "kill paths") == "-"


class _Views:
    """Just enough of a `Shopper` for `_print_outcome`: the view of a session read."""

    async def view_of(self, session: Session) -> SessionView:
        return SessionView(session=session, ssh_command=None)


async def test_provision_says_in_one_line_when_the_watchdog_could_not_be_armed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    why = "arming failed: the node refused SFTP"
    session = make_session(datetime.now(UTC), status=SessionStatus.RUNNING, watchdog_error=why)
    await _print_outcome(_Views(), session, "text")  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert table_value(out, "node watchdog") == f"not armed as it should be: {why}"
    assert sum(why in line for line in out.splitlines()) == 1

    await _print_outcome(_Views(), session.model_copy(update={"watchdog_error": None}), "text")  # type: ignore[arg-type]
    assert "node watchdog" not in capsys.readouterr().out
