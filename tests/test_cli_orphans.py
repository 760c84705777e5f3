"""`cleanup-orphans` across installs and `serve-token --revoke`, from the command line.

A lost data directory means a new install id, and every instance the old install rented bills
on unseen by `list_ours`: `--all-installs` shows them and destroys them only when told. These
tests destroy instances of any install, so they run against a simulator of their own, not the
one the other CLI tests share.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_gpushop, running_sim
from tests.test_cli_sessions import as_json, gpushop, one_line_error, rent, vast_instance

OTHER = "0ld1nst4"
"""The install id of a data directory that was lost."""


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A simulator of the test's own: it lists and destroys every install's instances."""
    with running_sim(tmp_path / "sim-state", seed=11) as info:
        yield info


@pytest.fixture(autouse=True)
def _isolated(isolated_env: Path) -> None:
    """Each test is a fresh install: its own data dir, so its own install id."""


def rent_for(sim: dict[str, Any], install_id: str, session_id: str) -> str:
    """An instance rented through Vast's API with another install's label: the instance id."""
    offers = as_json(gpushop(sim, "inventory", "gpu=4090 provider=vastai", "-o", "json"))
    answer = httpx.put(
        f"{sim['vastai']}/asks/{offers['offers'][0]['id'].split(':', 1)[1]}/",
        headers={"Authorization": f"Bearer {sim['keys']['vastai']}"},
        json={"image": "pytorch/pytorch", "label": f"gpushop-{install_id}-{session_id}"},
    )
    answer.raise_for_status()
    return str(answer.json()["new_contract"])


def listed(result: Any) -> dict[str, dict[str, Any]]:
    """The JSON rows of a cleanup-orphans run, by instance id."""
    return {row["instance_id"]: row for row in as_json(result)["instances"]}


def test_all_installs_lists_every_label_and_destroys_only_when_told(sim: dict[str, Any]) -> None:
    mine = rent(sim)
    ours = mine["label"].split("-")[1]
    theirs = rent_for(sim, OTHER, mine["id"])  # the same session id: not our session

    plain = gpushop(sim, "cleanup-orphans")
    assert plain.returncode == 0, plain.stderr
    assert theirs not in plain.stdout and mine["instance_id"] in plain.stdout
    assert set(listed(gpushop(sim, "cleanup-orphans", "-o", "json"))) == {mine["instance_id"]}

    every = listed(gpushop(sim, "cleanup-orphans", "--all-installs", "-o", "json"))
    assert set(every) == {mine["instance_id"], theirs}
    other, own = every[theirs], every[mine["instance_id"]]
    assert (other["install_id"], other["ours"], other["session_id"]) == (OTHER, False, None)
    assert (own["install_id"], own["ours"], own["session_id"]) == (ours, True, mine["id"])
    assert other["usd_per_hour"] == pytest.approx(vast_instance(sim, theirs)["dph_total"])
    assert 0 <= other["age_s"] < 600 and other["action"] == "none"

    table = gpushop(sim, "cleanup-orphans", "--all-installs")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[-4:] == ["INSTALL", "AGE", "RATE", "ACTION"]
    by_id = {line.split()[1]: line for line in rows if len(line.split()) > 1}
    assert f" {OTHER} " in by_id[theirs] and "$" in by_id[theirs] and "/h" in by_id[theirs]
    assert f" {ours} (ours) " in by_id[mine["instance_id"]]
    assert "dry run: 1 would be destroyed (1 of another install)" in table.stdout
    assert vast_instance(sim, theirs) is not None, "a listing destroys nothing"

    kept = gpushop(sim, "cleanup-orphans", "--execute", "--force", "-o", "json")
    assert kept.returncode == 0, kept.stderr
    assert vast_instance(sim, theirs) is not None, "--execute alone is for our own orphans"

    declined = gpushop(sim, "cleanup-orphans", "--execute", "--all-installs", stdin="no\n")
    assert declined.returncode == 1
    assert "Destroy 1 instance(s), 1 of them another install's?" in declined.stderr
    assert vast_instance(sim, theirs) is not None

    forced = gpushop(sim, "cleanup-orphans", "--execute", "--all-installs", "--force", "-o", "json")
    actions = {key: row["action"] for key, row in listed(forced).items()}
    assert actions == {theirs: "destroy requested", mine["instance_id"]: "none"}
    assert vast_instance(sim, theirs) is None
    assert vast_instance(sim, mine["instance_id"]) is not None, "a live session is kept"
    session = as_json(gpushop(sim, "sessions", "get", mine["id"], "-o", "json"))
    assert (session["status"], session["instance"]) == ("provisioning", "live")


def test_one_named_instance_of_any_install(sim: dict[str, Any]) -> None:
    theirs = rent_for(sim, OTHER, "0ddba11c0ffee")
    bystander = rent_for(sim, OTHER, "0ddba11beef00")

    dry = listed(gpushop(sim, "cleanup-orphans", "--instance", f"vastai:{theirs}", "-o", "json"))
    assert list(dry) == [theirs] and dry[theirs]["install_id"] == OTHER
    gone = gpushop(sim, "cleanup-orphans", "--instance", f"vastai:{theirs}", "--execute", "--force")
    assert gone.returncode == 0, gone.stderr
    assert vast_instance(sim, theirs) is None
    assert vast_instance(sim, bystander) is not None

    missing = gpushop(sim, "cleanup-orphans", "--instance", f"vastai:{theirs}")
    assert f"no instance vastai:{theirs} carries a gpushop label" in one_line_error(missing)
    assert "PROVIDER:ID" in one_line_error(gpushop(sim, "cleanup-orphans", "--instance", "x"))


def test_serve_token_revoke_removes_the_consumers_token(isolated_env: Path) -> None:
    alice = run_gpushop("serve-token", "-c", "alice").stdout.strip()
    tokens = isolated_env / "api_tokens.json"
    assert json.loads(tokens.read_text())["consumers"] == {"alice": alice}

    revoked = run_gpushop("serve-token", "--revoke", "alice")
    assert revoked.returncode == 0, revoked.stderr
    assert "alice" in revoked.stdout
    assert json.loads(tokens.read_text())["consumers"] == {}
    assert alice not in tokens.read_text()
    assert "no token" in one_line_error(run_gpushop("serve-token", "--revoke", "alice"), 1)
