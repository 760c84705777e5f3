"""Renting from the command line, as a user does it: the real entry point in child processes
against the standalone simulator (shared by the whole test session, so offers get taken: every
rental picks the cheapest match of a query, never a fixed offer id)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpushop_tui.cli.rent import IDLE_ACTIONS, STATUSES, WORKLOADS
from gpushop_tui.config import load_settings
from gpushop_tui.models import AuditEvent, IdleAction, SessionStatus, Workload
from gpushop_tui.store import Store
from tests.conftest import run_gpushop, sim_env

SSH = "/usr/bin/ssh"
CHEAP_4090 = "gpu=4090 provider=vastai"


@pytest.fixture
def sim(standalone_sim: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The shared simulator, without faults before and after the test."""
    httpx.delete(f"{standalone_sim['control']}/faults").raise_for_status()
    yield standalone_sim
    httpx.delete(f"{standalone_sim['control']}/faults").raise_for_status()


def gpushop(
    sim: dict[str, Any], *args: str, stdin: str = "", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`gpushop ARGS` with Vast.ai configured against the simulator."""
    return run_gpushop(*args, stdin=stdin, env=sim_env(sim, "vastai"), timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a refused command (asserting there is no traceback)."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def as_json(result: subprocess.CompletedProcess[str], code: int = 0) -> Any:
    assert result.returncode == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def rent(sim: dict[str, Any], *args: str, query: str = CHEAP_4090) -> dict[str, Any]:
    """A rental accepted without waiting for readiness; the session as JSON."""
    session = as_json(gpushop(sim, "provision", "-c", "tests", "-g", query, "--no-wait",
                              "-o", "json", *args))  # fmt: skip
    assert session["status"] == "provisioning" and session["instance"] == "live"
    return typing.cast(dict[str, Any], session)


def delete(sim: dict[str, Any], session_id: str) -> dict[str, Any]:
    """`sessions delete`, waiting until the simulator says the instance is gone."""
    ended = as_json(gpushop(sim, "sessions", "delete", session_id, "-o", "json"))
    assert (ended["status"], ended["instance"]) == ("ended", "gone")
    assert ended["status_words"] == "ended (destroyed)"
    return typing.cast(dict[str, Any], ended)


def vast_instance(sim: dict[str, Any], instance_id: str) -> Any:
    """The simulator's Vast API answer for one instance (`None` once it is gone)."""
    answer = httpx.get(
        f"{sim['vastai']}/instances/{instance_id}/",
        headers={"Authorization": f"Bearer {sim['keys']['vastai']}"},
    )
    answer.raise_for_status()
    return answer.json()["instances"]


def table_value(stdout: str, name: str) -> str:
    """The value of one `name  value` line of a key/value table."""
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name!r} line in:\n{stdout}")


# -- the newcomer's path ------------------------------------------------------------------------


@pytest.mark.skipif(not Path(SSH).exists(), reason=f"{SSH} (OpenSSH client) is not installed")
def test_newcomer_rents_runs_nvidia_smi_over_the_printed_ssh_and_ends_it(
    sim: dict[str, Any],
) -> None:
    rented = gpushop(sim, "provision", "-c", "newcomer", "-g", CHEAP_4090)
    assert rented.returncode == 0, rented.stderr
    session_id = table_value(rented.stdout, "session")
    assert table_value(rented.stdout, "status") == "running (instance live)"
    assert table_value(rented.stdout, "ssh").startswith("ssh -i ")
    assert re.search(r"ready: 1x NVIDIA GeForce RTX 4090.*\(the session is running\)$",
                     rented.stderr, re.MULTILINE), rented.stderr  # fmt: skip
    details = as_json(gpushop(sim, "sessions", "get", session_id, "-o", "json"))
    assert details["offer"]["gpu_name"] == "RTX 4090" and "raw" not in details["offer"]

    printed = gpushop(sim, "sessions", "ssh", session_id, "--print")
    assert printed.returncode == 0, printed.stderr
    login = printed.stdout.strip()
    assert login == table_value(rented.stdout, "ssh")
    smi = subprocess.run(
        [*shlex.split(login), "nvidia-smi"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert smi.returncode == 0, smi.stderr
    assert details["offer"]["gpu_name"] in smi.stdout
    assert "NVIDIA-SMI" in smi.stdout

    quoted = gpushop(sim, "sessions", "ssh", session_id, "--print", "--", "echo", "a b", "$HOME")
    assert shlex.split(quoted.stdout) == [*shlex.split(login), "echo", "a b", "$HOME"]
    direct = gpushop(sim, "sessions", "ssh", session_id, "--", "nvidia-smi", "-L")
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout.startswith("GPU 0: NVIDIA GeForce RTX 4090")

    listed = gpushop(sim, "sessions", "list")
    assert any(line.split()[:1] == [session_id] and "running" in line.split()
               for line in listed.stdout.splitlines())  # fmt: skip

    done = gpushop(sim, "sessions", "done", session_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"session {session_id}: ended (destroyed)"
    assert "is gone (destroyed)" in done.stderr
    assert vast_instance(sim, details["instance_id"]) is None
    assert not Path(details["key_path"]).exists(), "a closed session keeps no key"


# -- provision -----------------------------------------------------------------------------------


def test_provision_json_bare_gpu_word_save_key_and_the_no_supervisor_warning(
    sim: dict[str, Any], tmp_path: Path
) -> None:
    saved = tmp_path / "mykey"
    result = gpushop(sim, "provision", "-c", "alice", "-g", "4090", "-t", "3", "-w", "interactive",
                     "--idle-timeout", "0", "--storage", "preserve", "--save-key", str(saved),
                     "--no-wait", "-o", "json")  # fmt: skip
    session = as_json(result)
    assert session["offer"]["gpu_name"] == "RTX 4090" and "raw" not in session["offer"]
    assert (session["consumer"], session["workload"], session["reservation_hours"]) == (
        "alice", "interactive", 3.0,
    )  # fmt: skip
    assert session["idle_timeout_min"] == 0 and session["storage_policy"] == "keep"
    assert "no supervisor is running" in result.stderr and "gpushop reconcile" in result.stderr
    assert saved.stat().st_mode & 0o777 == 0o600
    key = gpushop(sim, "sessions", "key", session["id"])
    assert key.returncode == 0
    assert saved.read_bytes() == Path(key.stdout.strip()).read_bytes()

    again = gpushop(sim, "provision", "-c", "alice", "-g", "4090", "--save-key", str(saved))
    assert "already exists" in one_line_error(again)
    alice = as_json(gpushop(sim, "sessions", "list", "-c", "alice", "-o", "json"))
    assert [s["id"] for s in alice] == [session["id"]], "a refused --save-key rents nothing"
    delete(sim, session["id"])


def test_the_same_request_id_rents_once(sim: dict[str, Any]) -> None:
    first = rent(sim, "--request-id", "job-42")
    second = rent(sim, "--request-id", "job-42")
    assert second["id"] == first["id"]
    delete(sim, first["id"])


def test_a_fraction_of_an_hour_is_a_reservation(sim: dict[str, Any]) -> None:
    session = rent(sim, "-t", "0.5")
    assert session["reservation_hours"] == 0.5
    delete(sim, session["id"])


def test_no_warning_while_a_supervisor_holds_the_lease(sim: dict[str, Any]) -> None:
    hold_lease(pid=4242)
    result = gpushop(sim, "provision", "-c", "tests", "-g", CHEAP_4090, "--no-wait")
    assert result.returncode == 0, result.stderr
    assert "no supervisor" not in result.stderr
    delete(sim, table_value(result.stdout, "session"))


def test_a_rental_on_the_wrong_hardware_fails_with_exit_1(sim: dict[str, Any]) -> None:
    httpx.put(f"{sim['control']}/faults/nodes/vastai", json={"wrong_gpu": "RTX 3060"})
    result = gpushop(sim, "provision", "-c", "tests", "-g", CHEAP_4090, "-o", "json")
    session = as_json(result, code=1)
    assert session["status"] == "failed" and session["instance"] == "gone"
    assert "wrong hardware" in session["error"]
    assert "the rental did not succeed: wrong hardware" in result.stderr
    assert vast_instance(sim, session["instance_id"]) is None


def test_a_rental_not_ready_when_the_wait_ends_exits_3(sim: dict[str, Any]) -> None:
    result = gpushop(sim, "provision", "-c", "tests", "-g", CHEAP_4090, "--wait-timeout", "0.5")
    assert result.returncode == 3, result.stderr
    assert table_value(result.stdout, "status") == "provisioning (instance live)"
    assert "is not ready yet" in result.stderr and "Traceback" not in result.stderr
    delete(sim, table_value(result.stdout, "session"))


def test_provision_with_no_credentials_says_no_provider_is_configured(
    sim: dict[str, Any],
) -> None:
    result = run_gpushop("provision", "-c", "tests", "-g", "gpu=4090", env=sim_env(sim))
    line = one_line_error(result)
    assert "no provider is configured" in line and "no offer matches" not in line


def test_help_documents_the_exit_codes() -> None:
    commands = (["provision"], ["sessions", "done"], ["sessions", "delete"], ["shutdown"],
                ["sessions", "stop"], ["sessions", "start"])  # fmt: skip
    for command in commands:
        result = run_gpushop(*command, "--help")
        assert result.returncode == 0
        assert "exit codes:" in result.stdout
        assert "  3  " in result.stdout and "  2  usage" in result.stdout
    assert "  1  the rental failed" in run_gpushop("provision", "--help").stdout
    assert "  1  the start did not succeed" in run_gpushop("sessions", "start", "--help").stdout
    assert "  0  stopped: " in run_gpushop("sessions", "stop", "--help").stdout


def test_the_cli_choices_match_the_models() -> None:
    assert typing.get_args(Workload) == WORKLOADS
    assert tuple(s.value for s in SessionStatus) == STATUSES
    assert tuple(a.value for a in IdleAction) == IDLE_ACTIONS


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["provision", "-c", "x"], "one of the arguments -i/--offer -g/--gpu is required"),
        (["provision", "-c", "x", "-i", "vastai:1", "-g", "4090"], "not allowed with argument"),
        (["provision", "-c", "x", "-g", "4090", "-t", "0"], "out of range; give 0.25 to 12 hours"),
        (["provision", "-c", "x", "-g", "4090", "-t", "13"], "out of range; give 0.25 to 12 hours"),
        (["provision", "-c", "x", "-g", "4090", "-t", "two"], "'two' is not a number"),
        (["provision", "-c", "x", "-g", "4090", "--idle-timeout", "-1"], "give 0 to 10000 minutes"),
        (["provision", "-c", "x", "-g", "4090", "--storage", "maybe"], "invalid choice"),
        (["provision", "-c", "x", "-g", "4090", "--idle-action", "sleep"], "invalid choice"),
        (
            ["provision", "-c", "x", "-g", "4090", "--keep-days", "0"],
            "out of range; give more than 0 up to 90 days",
        ),
        (["sessions", "stop", "nosuch"], "no session 'nosuch'"),
        (["sessions", "start", "nosuch"], "no session 'nosuch'"),
        (["sessions", "stop", "nosuch", "--keep-days", "91"], "give more than 0 up to 90 days"),
        (["sessions", "start", "nosuch", "-t", "13"], "out of range; give 0.25 to 12 hours"),
        (["provision", "-c", "no spaces!", "-g", "4090"], "--consumer: must be 1-64 letters"),
        (["provision", "-c", "x", "-g", "4090", "--request-id", "a b"], "--request-id:"),
        (["provision", "-c", "x", "-i", "nonsense"], "should look like 'vastai:12345'"),
        (["provision", "-c", "x", "-i", "vastai:999999999"], "is not in the current menu"),
        (["provision", "-c", "x", "-g", "gpu=4090 price<=0.0001"], "no offer matches"),
        (["sessions", "get", "nosuch"], "no session 'nosuch'"),
        (["sessions", "done", "nosuch"], "no session 'nosuch'"),
        (["sessions", "delete", "nosuch"], "no session 'nosuch'"),
        (["shutdown", "nosuch", "--force"], "no session 'nosuch'"),
        (["sessions", "extend", "nosuch", "-t", "1"], "no session 'nosuch'"),
        (["sessions", "extend", "nosuch", "-t", "0"], "out of range; give 0.25 to 12 hours"),
        (["sessions", "extend", "nosuch", "-t", "13"], "out of range; give 0.25 to 12 hours"),
        (["sessions", "extend", "nosuch"], "the following arguments are required: -t/--hours"),
        (["sessions", "extend", "nosuch", "-t", "1", "--override-hard-max"], "expected one"),
        (
            ["sessions", "extend", "x", "-t", "1", "--override-hard-max", " "],
            "--override-hard-max: String should have at least 1 character",
        ),
        (["sessions", "ssh", "nosuch", "--print"], "no session 'nosuch'"),
        (["sessions", "key", "nosuch"], "no session 'nosuch'"),
        (["sessions", "list", "-s", "sleeping"], "invalid choice"),
        (["transfer", "upload", "/etc/hostname", "no-colon"], "should look like SESSION:REMOTE"),
        (["transfer", "upload", "/no/such/file", "abc123:/x"], "/no/such/file is not a file"),
        (["transfer", "download", "nosuch:/x", "here"], "no session 'nosuch'"),
        (["sessions", "list", "--", "ls"], "'--' is only for a command to run on a node"),
        (["cleanup-orphans", "-p", "paperspace"], "unknown provider 'paperspace'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(sim: dict[str, Any], args: list[str], says: str) -> None:
    assert says in one_line_error(gpushop(sim, *args))


# -- sessions ------------------------------------------------------------------------------------


def test_list_get_extend_and_override_the_hard_max(sim: dict[str, Any]) -> None:
    mine = rent(sim, "-c", "carol", "-t", "2")
    listed = as_json(gpushop(sim, "sessions", "list", "-c", "carol", "-o", "json"))
    assert [s["id"] for s in listed] == [mine["id"]]
    assert "raw" not in listed[0]["offer"]
    assert as_json(gpushop(sim, "sessions", "list", "-c", "carol", "-s", "running",
                           "-o", "json")) == []  # fmt: skip
    assert len(as_json(gpushop(sim, "sessions", "list", "--open", "-c", "carol",
                               "-o", "json"))) == 1  # fmt: skip

    details = gpushop(sim, "sessions", "get", mine["id"])
    assert details.returncode == 0, details.stderr
    assert table_value(details.stdout, "consumer") == "carol"
    assert table_value(details.stdout, "idle reason") == "-"
    assert table_value(details.stdout, "ssh") == "-", "no address before readiness"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \S+", table_value(details.stdout, "hard max"))
    no_address = gpushop(sim, "sessions", "ssh", mine["id"], "--print")
    assert "has no SSH address yet" in one_line_error(no_address)

    before = datetime.fromisoformat(mine["expires_at"])
    extended = as_json(gpushop(sim, "sessions", "extend", mine["id"], "-t", "1.5", "-o", "json"))
    assert (datetime.fromisoformat(extended["expires_at"]) - before).total_seconds() == 5400
    refused = gpushop(sim, "sessions", "extend", mine["id"], "-t", "12")
    assert "it needs an override reason: pass --override-hard-max REASON" in one_line_error(refused)
    overridden = gpushop(sim, "sessions", "extend", mine["id"], "-t", "12",
                         "--override-hard-max", "a long training run")  # fmt: skip
    assert overridden.returncode == 0, overridden.stderr
    assert "now expires" in overridden.stdout
    shown = as_json(gpushop(sim, "sessions", "get", mine["id"], "-o", "json"))
    assert shown["hard_max_override"] == "a long training run"
    assert shown["hard_max_at"] == shown["expires_at"]
    delete(sim, mine["id"])
    closed = gpushop(sim, "sessions", "extend", mine["id"], "-t", "1")
    assert "only an active one can be extended" in one_line_error(closed)
    ssh = gpushop(sim, "sessions", "ssh", mine["id"], "--print")
    assert "is closed" in one_line_error(ssh)


def test_done_and_delete_answer_at_once_with_no_wait_then_drive_the_teardown(
    sim: dict[str, Any],
) -> None:
    first, second = rent(sim), rent(sim)
    accepted = as_json(gpushop(sim, "sessions", "done", first["id"], "--no-wait", "-o", "json"))
    assert accepted["status"] == "stopping"
    finished = gpushop(sim, "shutdown", first["id"], "--force")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == f"session {first['id']}: ended (destroyed)"
    assert vast_instance(sim, first["instance_id"]) is None

    accepted = as_json(gpushop(sim, "shutdown", second["id"], "--no-wait", "-o", "json"))
    assert accepted["status"] == "stopping"
    assert as_json(gpushop(sim, "sessions", "done", second["id"], "-o", "json"))["instance"] == (
        "gone"
    )
    assert vast_instance(sim, second["instance_id"]) is None
    again = gpushop(sim, "sessions", "delete", second["id"])
    assert again.returncode == 0 and "ended" in again.stdout, "a closed session: nothing to do"


def test_a_one_shot_done_finishes_the_records_it_started(sim: dict[str, Any]) -> None:
    env = sim_env(sim, "bluelobster")  # where the close was lost 2 times of 3
    mine = as_json(run_gpushop("provision", "-c", "tests", "-g", "provider=bluelobster",
                               "--no-wait", "-o", "json", env=env))  # fmt: skip
    keys = load_settings().paths.keys_dir
    assert list(keys.glob(f"{mine['id']}*")), "the rental made its key files"
    ended = as_json(run_gpushop("sessions", "done", mine["id"], "-o", "json", env=env))
    assert (ended["status"], ended["instance"]) == ("ended", "gone")
    assert list(keys.glob(f"{mine['id']}*")) == [], "the key files went with the instance"
    assert any(
        e.message.startswith(f"instance {mine['instance_id']} is gone") for e in audit(mine["id"])
    )


def audit(session_id: str) -> list[AuditEvent]:
    """The audit events of one session, from this test's database."""
    import asyncio

    async def read() -> list[AuditEvent]:
        store = await Store.open(load_settings().paths.db_file)
        try:
            return await store.list_audit(session_id=session_id, limit=1000)
        finally:
            await store.aclose()

    return asyncio.run(read())


def test_a_teardown_still_under_way_when_the_wait_ends_exits_3(sim: dict[str, Any]) -> None:
    mine = rent(sim)
    # every destroy is answered but does nothing, so the teardown cannot end inside the wait
    httpx.put(f"{sim['control']}/faults/nodes/vastai", json={"destroy_noop": 1000})
    slow = gpushop(sim, "sessions", "delete", mine["id"], "--wait-timeout", "6")
    httpx.put(f"{sim['control']}/faults/nodes/vastai", json={"destroy_noop": 0})
    assert slow.returncode == 3, slow.stderr
    assert "still under way" in slow.stderr and "Traceback" not in slow.stderr
    waiting = re.search(r"still waiting: ending the session; .+; last news: .+; "
                        r"this command waits until (\d\d:\d\d:\d\d)", slow.stderr)  # fmt: skip
    assert waiting, slow.stderr
    assert vast_instance(sim, mine["instance_id"]) is not None
    delete(sim, mine["id"])
    assert vast_instance(sim, mine["instance_id"]) is None


# -- cron: reconcile and cleanup-orphans ---------------------------------------------------------


def hold_lease(pid: int) -> None:
    """Hold the supervisor lease in this test's database, as a live supervisor would."""
    import asyncio

    async def hold() -> None:
        settings = load_settings()
        settings.paths.prepare()
        store = await Store.open(settings.paths.db_file)
        try:
            assert await store.acquire_lease(
                "supervisor", f"elsewhere:{pid}:abc", pid, datetime.now(UTC), 600
            )
        finally:
            await store.aclose()

    asyncio.run(hold())


def test_reconcile_drives_a_rental_to_readiness_then_files_go_up_and_down(
    sim: dict[str, Any], tmp_path: Path
) -> None:
    mine = rent(sim)  # exits before Vast's rate limit lets its key attach go: the key is missing
    report = as_json(gpushop(sim, "reconcile", "-o", "json"))
    assert report["skipped"] is False and report["open_sessions"] == 1
    vast = {r["provider"]: r for r in report["providers"]}["vastai"]
    assert vast["ok"] and vast["listed"] == 1 and vast["error"] is None
    assert as_json(gpushop(sim, "sessions", "get", mine["id"], "-o", "json"))["status"] == (
        "running"
    ), "the pass drove the rental to readiness, attaching its key again"
    table = gpushop(sim, "reconcile")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0] == "vastai: 1 listed"
    assert "1 open session(s)" in table.stdout

    local = tmp_path / "weights.bin"
    local.write_bytes(bytes(range(256)) * 400)
    up = gpushop(sim, "transfer", "upload", str(local), f"{mine['id']}:/root/in/weights.bin")
    assert up.returncode == 0, up.stderr
    assert "weights.bin: 102400 bytes copied" in up.stderr
    back = tmp_path / "back.bin"
    down = gpushop(sim, "transfer", "download", f"{mine['id']}:/root/in/weights.bin", str(back))
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == local.read_bytes()
    missing = gpushop(sim, "transfer", "download", f"{mine['id']}:/root/nope", str(back))
    assert "transfer failed" in one_line_error(missing)
    delete(sim, mine["id"])


def test_reconcile_exits_1_when_a_provider_cannot_be_listed(sim: dict[str, Any]) -> None:
    fault = {"provider": "vastai", "endpoint": "list_v1", "kind": "malformed"}
    httpx.post(f"{sim['control']}/faults", json=fault).raise_for_status()
    result = gpushop(sim, "reconcile")
    assert result.returncode == 1
    assert result.stdout.startswith("vastai: cannot list instances:")


def test_reconcile_ends_within_its_bound_when_every_provider_hangs(sim: dict[str, Any]) -> None:
    for provider in ("vastai", "tensordock", "bluelobster"):
        hang = {"provider": provider, "endpoint": "*", "kind": "timeout", "delay_s": 9}
        httpx.post(f"{sim['control']}/faults", json=hang).raise_for_status()
    env = sim_env(sim, "vastai", "tensordock", "bluelobster") | {"GPUSHOP_RECONCILE_BOUND_S": "3"}
    started = time.monotonic()
    result = run_gpushop("reconcile", env=env, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert took < 3 + 12, f"reconcile took {took:.1f} s with a 3 s bound"
    unchecked = [line for line in result.stdout.splitlines() if "not checked within 3 s" in line]
    assert sorted(line.split(":")[0] for line in unchecked) == [
        "bluelobster",
        "tensordock",
        "vastai",
    ]


def test_reconcile_leaves_the_work_to_a_live_supervisor_politely(sim: dict[str, Any]) -> None:
    hold_lease(pid=4242)
    result = gpushop(sim, "reconcile")
    assert result.returncode == 0, result.stderr
    assert "already running (pid 4242" in result.stdout and result.stderr == ""
    assert as_json(gpushop(sim, "reconcile", "-o", "json"))["skipped"] is True


def test_cleanup_orphans_dry_run_then_execute_then_all(sim: dict[str, Any]) -> None:
    live = rent(sim)
    install_id = live["label"].split("-")[1]
    orphan_id = rent_behind_our_back(sim, f"gpushop-{install_id}-0feedbeef0ff")

    dry = gpushop(sim, "cleanup-orphans")
    assert dry.returncode == 0, dry.stderr
    rows = {line.split()[1]: line.split() for line in dry.stdout.splitlines()[1:3]}
    assert rows[orphan_id][3:6] == ["-", "unknown", "no"]
    assert rows[live["instance_id"]][3:6] == [live["id"], "provisioning", "yes"]
    assert "dry run: 1 would be destroyed" in dry.stdout
    assert vast_instance(sim, orphan_id) is not None

    declined = gpushop(sim, "cleanup-orphans", "--execute", stdin="no\n")
    assert declined.returncode == 1 and "Type 'yes'" in declined.stderr
    assert vast_instance(sim, orphan_id) is not None

    done = as_json(gpushop(sim, "cleanup-orphans", "--execute", "-o", "json", stdin="yes\n"))
    actions = {r["instance_id"]: r["action"] for r in done["instances"]}
    assert actions == {orphan_id: "destroy requested", live["instance_id"]: "none"}
    assert vast_instance(sim, orphan_id) is None
    assert vast_instance(sim, live["instance_id"]) is not None

    forced = as_json(gpushop(sim, "cleanup-orphans", "--execute", "--all", "--force", "-o", "json"))
    assert [(r["instance_id"], r["action"]) for r in forced["instances"]] == [
        (live["instance_id"], "destroyed")
    ]
    assert vast_instance(sim, live["instance_id"]) is None
    after = as_json(gpushop(sim, "sessions", "get", live["id"], "-o", "json"))
    assert (after["status"], after["instance"]) == ("ended", "gone")
    assert gpushop(sim, "cleanup-orphans").stdout.splitlines() == [
        "no instance carries our label",
        "dry run: 0 would be destroyed; add --execute to destroy them",
    ]


def test_cleanup_orphans_claims_nothing_when_a_provider_cannot_be_listed(
    sim: dict[str, Any],
) -> None:
    fault = {"provider": "vastai", "endpoint": "list_v1", "kind": "malformed"}
    httpx.post(f"{sim['control']}/faults", json=fault).raise_for_status()
    result = gpushop(sim, "cleanup-orphans")
    assert result.returncode == 1
    assert "no instance carries our label" not in result.stdout
    assert "0 would be destroyed" not in result.stdout
    assert "vastai: cannot list instances" in result.stderr
    assert "not known" in result.stderr


def rent_behind_our_back(sim: dict[str, Any], label: str) -> str:
    """An instance with our label that no session of ours knows (rented through the API)."""
    offers = as_json(gpushop(sim, "inventory", CHEAP_4090, "-o", "json"))["offers"]
    ask = offers[0]["id"].split(":", 1)[1]
    answer = httpx.put(
        f"{sim['vastai']}/asks/{ask}/",
        headers={"Authorization": f"Bearer {sim['keys']['vastai']}"},
        json={"image": "pytorch/pytorch", "label": label},
    )
    answer.raise_for_status()
    return str(answer.json()["new_contract"])
