"""The node watchdog (gpushop_tui/node/watchdog.py): the plan's checks and the files it makes,
and the real script run through a real OpenSSH sshd (tests/support/sshd.py) in a private
folder, with stand-in `curl`, `sudo` and `poweroff` first on its PATH and the check and retry
periods cut to one second (`GPUSHOP_CHECK_S`, `GPUSHOP_RETRY_S`). Every wait is on a condition
with a deadline; each test stops the loop it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpushop_tui.node.keys import create_key_pair
from gpushop_tui.node.ssh import CommandResult, NodeAddress, NodeConnection, NodeError, connect
from gpushop_tui.node.watchdog import (
    DEADLINE_FILE,
    ENV_FILE,
    KEY_FILE,
    SCRIPT_FILE,
    START_COMMAND,
    WatchdogPlan,
    arm,
    move,
    script,
    watchdog_files,
)
from tests.support.sshd import RealSshd

TIMEOUT_S = 10.0
KEY = "k-7f3a_Secret.9"
API = "http://127.0.0.1:9/api/v0"
INSTANCE = "4242"
PAST = datetime(2024, 1, 1, tzinfo=UTC)

# --- the plan and its files ----------------------------------------------------------------


def _destroy(deadline: datetime = PAST, **changes: str) -> WatchdogPlan:
    fields = {"session_id": "s-1", "api_base": API, "instance_id": INSTANCE} | changes
    return WatchdogPlan(
        session_id=fields["session_id"],
        action="destroy",
        deadline=deadline,
        api_base=fields["api_base"],
        instance_id=fields["instance_id"],
    )


def test_watchdog_files_paths_modes_and_text() -> None:
    deadline = datetime(2025, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    files = watchdog_files(_destroy(deadline, api_base=API + "/"), KEY)
    assert {path: mode for path, (_, mode) in files.items()} == {
        ".gpushop/instance_key": 0o600,
        ".gpushop/watchdog.env": 0o600,
        ".gpushop/deadline": 0o600,
        ".gpushop/watchdog.sh": 0o700,
    }
    assert files[KEY_FILE][0] == KEY
    assert files[ENV_FILE][0] == (
        f"GPUSHOP_SESSION=s-1\nGPUSHOP_ACTION=destroy\nGPUSHOP_API={API}\n"
        f"GPUSHOP_INSTANCE={INSTANCE}\n"
    )
    assert files[DEADLINE_FILE][0] == f"{int(deadline.timestamp()) + 1}\n"  # rounded up
    assert files[SCRIPT_FILE][0] == script()
    assert START_COMMAND == "sh .gpushop/watchdog.sh start"
    assert subprocess.run(["sh", "-n"], input=script(), text=True, check=False).returncode == 0

    poweroff = watchdog_files(WatchdogPlan("s-2", "poweroff", PAST), None)
    assert set(poweroff) == {ENV_FILE, DEADLINE_FILE, SCRIPT_FILE}
    assert poweroff[ENV_FILE][0] == "GPUSHOP_SESSION=s-2\nGPUSHOP_ACTION=poweroff\n"


@pytest.mark.parametrize(
    "changes",
    [
        {"session_id": ""},
        {"session_id": "s 1"},
        {"session_id": "-rf"},
        {"session_id": "s;reboot"},
        {"session_id": "s\n1"},
        {"instance_id": "42$(id)"},
        {"instance_id": "42'"},
        {"api_base": "ftp://console.vast.ai/api/v0"},
        {"api_base": "https://console.vast.ai/api v0"},
        {"api_base": "https://console.vast.ai/api/v0?x=1"},
        {"api_base": "https://console.vast.ai/$(id)"},
        {"api_base": "https://console.vast.ai/'a'"},
        {"api_base": "https://console.vast.ai/a\nb"},
    ],
)
def test_a_plan_with_a_word_the_shell_could_misread_is_refused(changes: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        _destroy(**changes)


def test_a_plan_must_be_complete_and_its_deadline_aware() -> None:
    with pytest.raises(ValueError, match="its base URL and the instance id"):
        WatchdogPlan("s-1", "destroy", PAST, api_base=API)
    with pytest.raises(ValueError, match="timezone"):
        WatchdogPlan("s-1", "poweroff", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="unknown watchdog action"):
        WatchdogPlan("s-1", "reboot", PAST)  # type: ignore[arg-type]
    for key in ("", "two words", "line\n", "naïve"):
        with pytest.raises(ValueError, match="the instance key must be"):
            watchdog_files(_destroy(), key)
    plan = WatchdogPlan(
        "s-1", "destroy", PAST, api_base="https://[::1]:8443/api/v0", instance_id="i"
    )
    assert "GPUSHOP_API=https://[::1]:8443/api/v0\n" in plan.env()


@dataclass
class _Recording:
    """A node that records what is written and run; its start exits with `rc`."""

    rc: int = 0
    written: list[tuple[str, int]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        self.commands.append(command)
        said = "sh: 1: cannot create .gpushop/watchdog.pid\n" if self.rc else ""
        return CommandResult("", said, self.rc)

    async def write_file(self, path: str, text: str, mode: int) -> None:
        self.written.append((path, mode))


async def test_arm_writes_then_starts_and_a_failed_start_raises_with_its_stderr() -> None:
    node = _Recording()
    await arm(node, _destroy(), KEY)
    armed = [(KEY_FILE, 0o600), (ENV_FILE, 0o600), (DEADLINE_FILE, 0o600), (SCRIPT_FILE, 0o700)]
    assert node.written == armed
    assert node.commands == [START_COMMAND]
    await move(node, PAST)
    assert node.written == [*armed, (DEADLINE_FILE, 0o600)]  # a move only rewrites the deadline
    assert node.commands == [START_COMMAND, START_COMMAND]  # and restarts a loop a reboot lost

    failing = _Recording(rc=2)
    with pytest.raises(NodeError) as caught:
        await arm(failing, WatchdogPlan("s-1", "poweroff", PAST), None)
    assert caught.value.kind == "command"
    assert caught.value.message == (
        "starting the node watchdog exited with 2: sh: 1: cannot create .gpushop/watchdog.pid"
    )


# --- the real script through a real sshd ---------------------------------------------------

_RECORDER = """\
#!/bin/sh
# A stand-in {tool}: records its arguments, one a line, after a [{tool}] line.
{{ echo '[{tool}]'; for arg in "$@"; do printf '%s\\n' "$arg"; done; }} >>{calls}
"""
_CURL = """\
case "$*" in *"-K -"*) sed 's/^/stdin: /' >>{calls} ;; esac
if [ -s {refuses} ]; then
  rm -f {refuses}
  echo '{{"success": false, "error": "rate_limit_exceeded"}}'
  exit 0
fi
n=$(cat {fails} 2>/dev/null || echo 0)
if [ "$n" -gt 0 ]; then
  echo $((n - 1)) >{fails}
  echo 'curl: (22) The requested URL returned error: 500' >&2
  exit 22
fi
echo "{{\\"success\\": true, \\"heard\\": \\"$*\\"}}"
"""
_SUDO = "exit $(cat {rc} 2>/dev/null || echo 0)\n"


@dataclass
class _Node:
    """A node connection whose home is `root` and whose PATH starts with the stand-ins: the
    exact contract commands run there, the relative SFTP paths land there, so a test never
    touches the real login's ~/.gpushop nor runs the machine's own curl or poweroff."""

    conn: NodeConnection
    root: Path
    stubs: Path
    env: dict[str, str] = field(default_factory=dict)

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.env.items())
        return await self.conn.run(
            f"cd {shlex.quote(str(self.root))} && export {exports} && {command}",
            timeout_s=timeout_s,
        )

    async def write_file(self, path: str, text: str, mode: int) -> None:
        await self.conn.write_file(f"{self.root}/{path}", text, mode)

    def log(self) -> str:
        path = self.root / ".gpushop/watchdog.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def calls(self) -> list[tuple[str, list[str]]]:
        """What the stand-ins were called with, in order: (tool, arguments)."""
        path = self.stubs / "calls"
        found: list[tuple[str, list[str]]] = []
        for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
            if line.startswith("[") and line.endswith("]"):
                found.append((line[1:-1], []))
            else:
                found[-1][1].append(line)
        return found

    def pid(self) -> int:
        return int((self.root / ".gpushop/watchdog.pid").read_text(encoding="utf-8"))

    async def until(self, check: Callable[[], object], what: str) -> None:
        """Poll `check` until it is truthy; fail after TIMEOUT_S with the log."""
        deadline = time.monotonic() + TIMEOUT_S
        while not check():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {TIMEOUT_S} s; log:\n{self.log()}")
            await asyncio.sleep(0.05)


def _write_stub(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


def _loops(root: Path) -> list[int]:
    """The pids of watchdog loops working in `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd") == str(root.resolve()) and b"watchdog.sh" in (
                (entry / "cmdline").read_bytes()
            ):
                found.append(int(entry.name))
    return found


@pytest.fixture
async def node(real_sshd: RealSshd, tmp_path: Path) -> AsyncIterator[_Node]:
    """A connected node in `tmp_path/node-home`; on exit its watchdog loop is stopped."""
    key_path = tmp_path / "keys" / "s-1.key"
    real_sshd.authorize(create_key_pair(key_path, "gpushop-test-s-1"))
    address = NodeAddress(real_sshd.host, real_sshd.port, real_sshd.user, key_path)
    root = tmp_path / "node-home"
    stubs = tmp_path / "stubs"
    root.mkdir()
    stubs.mkdir()
    calls = shlex.quote(str(stubs / "calls"))
    for tool, extra in [
        (
            "curl",
            _CURL.format(
                fails=shlex.quote(str(stubs / "curl.fails")),
                refuses=shlex.quote(str(stubs / "curl.refuses")),
                calls=calls,
            ),
        ),
        ("sudo", _SUDO.format(rc=shlex.quote(str(stubs / "sudo.rc")))),
        ("poweroff", ""),
    ]:
        _write_stub(stubs / tool, _RECORDER.format(tool=tool, calls=calls) + extra)
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        node = _Node(
            conn,
            root,
            stubs,
            {"PATH": f"{stubs}:/usr/bin:/bin", "GPUSHOP_CHECK_S": "1", "GPUSHOP_RETRY_S": "1"},
        )
        found = await node.run("command -v curl sudo poweroff")
        assert found.stdout.split() == [str(stubs / t) for t in ("curl", "sudo", "poweroff")]
        try:
            yield node
        finally:
            for pid in _loops(root):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)  # the loop and its sleep (setsid)
            await node.until(lambda: not _loops(root), "stopping the watchdog loop")


async def test_a_passed_deadline_destroys_with_the_key_file_retrying_a_failure(
    node: _Node,
) -> None:
    (node.stubs / "curl.fails").write_text("1", encoding="utf-8")
    await arm(node, _destroy(), KEY)
    await node.until(lambda: "destroyed instance" in node.log(), "the destroy")
    await node.until(lambda: not _loops(node.root), "the loop exiting after the destroy")

    request = [
        "-fsS",
        "-m",
        "30",
        "-K",
        "-",
        "-X",
        "DELETE",
        "-H",
        "Content-Type: application/json",
        "-d",
        "{}",
        f"{API}/instances/{INSTANCE}/",
        f'stdin: header = "Authorization: Bearer {KEY}"',  # never on a command line (ps)
    ]
    assert node.calls() == [("curl", request), ("curl", request)]
    log = node.log()
    assert KEY not in log
    assert "destroying instance 4242 failed, retrying in 1s: curl: (22)" in log
    assert "watching session s-1" in log
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", line) for line in log.splitlines())
    gpushop = node.root / ".gpushop"
    assert stat.S_IMODE(gpushop.stat().st_mode) == 0o700
    for name, mode in [
        ("instance_key", 0o600),
        ("watchdog.env", 0o600),
        ("deadline", 0o600),
        ("watchdog.sh", 0o700),
    ]:
        assert stat.S_IMODE((gpushop / name).stat().st_mode) == mode, name


async def test_a_stop_plan_asks_the_api_to_stop_the_instance_keeping_its_disk(
    node: _Node,
) -> None:
    plan = WatchdogPlan("s-1", "stop", PAST, api_base=API, instance_id=INSTANCE)
    await arm(node, plan, KEY)
    await node.until(lambda: "stopped instance" in node.log(), "the stop")
    await node.until(lambda: not _loops(node.root), "the loop exiting after the stop")
    ((tool, args),) = node.calls()
    assert tool == "curl" and args[5:7] == ["-X", "PUT"]
    assert args[-4:-1] == ["-d", '{"state":"stopped"}', f"{API}/instances/{INSTANCE}/"]
    assert args[-1] == f'stdin: header = "Authorization: Bearer {KEY}"' and KEY not in node.log()


async def test_a_refusal_with_http_200_is_retried_not_taken_for_done(node: _Node) -> None:
    (node.stubs / "curl.refuses").write_text("1", encoding="utf-8")
    await arm(node, _destroy(), KEY)
    await node.until(lambda: "destroyed instance" in node.log(), "the destroy after a refusal")
    assert [tool for tool, _ in node.calls()] == ["curl", "curl"]
    assert "destroying instance 4242 failed" in node.log()


@pytest.mark.parametrize(
    ("plan", "missing", "said"),
    [
        ("destroy", "curl", "curl is missing"),
        ("destroy", "key", "no instance key"),
        ("poweroff", "sudo", "not root and no passwordless sudo"),
    ],
)
async def test_a_watchdog_that_could_not_act_refuses_to_start(
    node: _Node, plan: str, missing: str, said: str
) -> None:
    if missing == "curl":  # a PATH with the shell's tools but no curl at all
        bare = node.stubs / "bare"
        bare.mkdir()
        tools = ("sh", "cat", "grep", "id", "kill", "flock", "setsid", "nohup", "date", "dirname")
        for tool in tools:
            found = shutil.which(tool)
            if found is not None:
                (bare / tool).symlink_to(found)
        node.env["PATH"] = str(bare)
    if missing == "sudo":
        (node.stubs / "sudo.rc").write_text("1", encoding="utf-8")
        node.env["GPUSHOP_UID"] = "1000"
    chosen = _destroy() if plan == "destroy" else WatchdogPlan("s-1", "poweroff", PAST)
    with pytest.raises(NodeError, match=said):
        await arm(node, chosen, None if missing == "key" else KEY)
    assert not _loops(node.root)


async def test_the_container_key_wins_over_the_key_file(node: _Node) -> None:
    node.env["CONTAINER_API_KEY"] = "k-from-the-container"
    await arm(node, _destroy(), KEY)
    await node.until(lambda: "destroyed instance" in node.log(), "the destroy")
    assert node.calls()[0][1][-1] == 'stdin: header = "Authorization: Bearer k-from-the-container"'
    assert "k-from-the-container" not in node.log()


@pytest.mark.parametrize(
    ("sudo_rc", "expected", "said"),
    [
        (0, [("sudo", ["-n", "poweroff"])], "powering off (sudo -n poweroff)"),
        (1, [("sudo", ["-n", "poweroff"]), ("poweroff", [])], "powering off (poweroff)"),
    ],
)
async def test_a_passed_deadline_powers_off(
    node: _Node, sudo_rc: int, expected: list[tuple[str, list[str]]], said: str
) -> None:
    (node.stubs / "sudo.rc").write_text(str(sudo_rc), encoding="utf-8")
    await arm(node, WatchdogPlan("s-1", "poweroff", PAST), None)
    await node.until(lambda: said in node.log(), "the poweroff")
    assert node.calls()[: len(expected)] == expected
    assert _loops(node.root) == [node.pid()]  # the machine is not down yet: it tries again


async def _quiet_for_two_periods(node: _Node) -> None:
    await asyncio.sleep(2.5)
    assert node.calls() == [], node.log()


async def test_a_future_deadline_waits_until_moved_and_a_second_start_is_a_no_op(
    node: _Node,
) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    await arm(node, _destroy(later), KEY)
    await node.until(lambda: "deadline is" in node.log(), "reading the deadline")
    pid = node.pid()
    await _quiet_for_two_periods(node)

    again = await node.run(START_COMMAND)
    assert (again.exit_status, again.stdout, again.stderr) == (0, "", "")
    await arm(node, _destroy(later), KEY)
    assert node.pid() == pid
    assert _loops(node.root) == [pid]
    assert node.log().count("watching session") == 1

    await move(node, PAST)
    await node.until(lambda: "destroyed instance" in node.log(), "the destroy after the move")
    assert [tool for tool, _ in node.calls()] == ["curl"]


async def test_an_unreadable_deadline_keeps_the_last_one(node: _Node) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    await arm(node, _destroy(later), KEY)
    await node.until(lambda: "deadline is" in node.log(), "reading the deadline")
    await node.write_file(DEADLINE_FILE, "soon\n", 0o600)
    await node.until(lambda: "cannot read a deadline" in node.log(), "noticing the bad file")
    assert f"keeping {int(later.timestamp())}" in node.log()
    await _quiet_for_two_periods(node)
    assert node.log().count("cannot read a deadline") == 1  # once, not every check

    await move(node, PAST)
    await node.until(lambda: "destroyed instance" in node.log(), "the destroy after the move")
