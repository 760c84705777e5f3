"""The workload launcher (gpushop_tui/node/workloads.py) and the SSH file/forward it rides on.

Three layers: the launcher files themselves (paths, modes, validation, quoting, run under the
real `sh`); a `custom` workload launched through a real OpenSSH sshd (tests/support/sshd.py),
served through a real SSH port forward; and `measure` / `requests_served` against a tiny local
stand-in HTTP server started here (vLLM-like `/metrics`, Ollama-like `/api/ps`, an SSE chat
completion stream). Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gpushop_tui.node.keys import create_key_pair
from gpushop_tui.node.ssh import CommandResult, NodeAddress, NodeConnection, NodeError, connect
from gpushop_tui.node.workloads import (
    LAUNCH_COMMAND,
    PHASE_COMMAND,
    WorkloadLaunch,
    check_health,
    launch,
    launch_files,
    measure,
    read_phase,
    requests_served,
    run_script,
)
from tests.support.sshd import RealSshd

TIMEOUT_S = 10.0
TOKEN = "tok-3f9a_Zq"
ODD = 'it\'s "$HOME" `id` $(echo no) \\ ; & | * ~ \n second line'
"""A value the shell must pass on untouched: quotes, expansions, separators, a newline."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _until(
    check: Callable[[], Awaitable[Any]], what: str, *, within_s: float = TIMEOUT_S
) -> Any:
    """Poll `check` until it returns something truthy; fail after `within_s` saying `what`."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within_s} s (last: {value!r})")
        await asyncio.sleep(0.05)


# --- the launcher files --------------------------------------------------------------------


def test_launch_files_paths_modes_and_spec() -> None:
    files = launch_files(
        WorkloadLaunch("vllm", model="Qwen/Qwen2.5-7B", env={"HF_TOKEN": "hf_x"}), TOKEN
    )
    assert {path: mode for path, (_, mode) in files.items()} == {
        ".gpushop/workload.json": 0o600,
        ".gpushop/token": 0o600,
        ".gpushop/run.sh": 0o700,
        ".gpushop/launch.sh": 0o700,
    }
    assert files[".gpushop/token"][0] == TOKEN
    assert json.loads(files[".gpushop/workload.json"][0]) == {
        "kind": "vllm",
        "model": "Qwen/Qwen2.5-7B",
        "port": 8000,
        "command": None,
        "env": {"HF_TOKEN": "hf_x"},
        "ports": [],
        "public": False,
    }
    run = files[".gpushop/run.sh"][0]
    assert run.startswith("#!/bin/sh\n")
    assert (
        'python3 -m vllm.entrypoints.openai.api_server --model "$MODEL" --host 127.0.0.1 '
        '--port 8000 \\\n  --api-key "$(cat .gpushop/token)"'
    ) in run
    assert "python3 -c 'import vllm'" in run
    assert TOKEN not in run  # the token is read from its 0600 file, never written into a script
    assert (LAUNCH_COMMAND, PHASE_COMMAND) == ("sh .gpushop/launch.sh", "cat .gpushop/phase")


@pytest.mark.parametrize(
    ("workload", "port"),
    [
        (WorkloadLaunch("llm", model="llama3.1:8b"), 11434),
        (WorkloadLaunch("vllm", model="m"), 8000),
        (WorkloadLaunch("custom", command="serve", ports=(9000, 9001)), 9000),
        (WorkloadLaunch("custom", command="train"), None),
    ],
)
def test_the_port_each_kind_serves_on(workload: WorkloadLaunch, port: int | None) -> None:
    assert workload.port == port
    assert json.loads(launch_files(workload, TOKEN)[".gpushop/workload.json"][0])["port"] == port


@pytest.mark.parametrize("key", ["1A", "A-B", "A B", "", "A=B", "Ä", "A;rm"])
def test_env_names_must_be_shell_identifiers(key: str) -> None:
    with pytest.raises(ValueError, match="not a shell identifier"):
        WorkloadLaunch("custom", command="true", env={key: "v"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "tgi", "model": "m"}, "unknown workload kind"),
        ({"kind": "llm"}, "needs a model name"),
        ({"kind": "vllm", "model": " "}, "needs a model name"),
        ({"kind": "custom"}, "needs a start command"),
        ({"kind": "custom", "command": "a\0b"}, "NUL"),
        ({"kind": "custom", "command": "x", "env": {"A": "\0"}}, "NUL"),
        ({"kind": "custom", "command": "x", "ports": (0,)}, "between 1 and 65535"),
        ({"kind": "custom", "command": "x", "ports": (65536,)}, "between 1 and 65535"),
        ({"kind": "llm", "model": "m", "public": True}, "checks no token"),
        ({"kind": "custom", "command": "x", "public": True}, "checks no token"),
    ],
)
def test_invalid_workloads_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkloadLaunch(**kwargs)


def test_a_public_vllm_server_listens_on_every_address_and_says_so_in_its_spec() -> None:
    files = launch_files(WorkloadLaunch("vllm", model="m", public=True), TOKEN)
    assert json.loads(files[".gpushop/workload.json"][0])["public"] is True
    run = files[".gpushop/run.sh"][0]
    assert '--model "$MODEL" --host 0.0.0.0 --port 8000' in run
    assert 'await_http "$server" "http://127.0.0.1:8000/health"' in run  # checked on loopback


@pytest.mark.parametrize("token", ["", "a b", "a\nb", "tök"])
def test_a_token_must_be_a_plain_header_value(token: str) -> None:
    with pytest.raises(ValueError, match="token"):
        launch_files(WorkloadLaunch("custom", command="true"), token)


def test_the_llm_script_quotes_the_model_and_installs_only_what_is_missing() -> None:
    model = "evil'; touch /tmp/pwned; '"
    run = run_script(WorkloadLaunch("llm", model=model))
    model_line = next(line for line in run.splitlines() if line.startswith("MODEL="))
    assert shlex.split(model_line.removeprefix("MODEL=")) == [model]
    load_line = next(line for line in run.splitlines() if "/api/generate" in line)
    body = shlex.split(load_line)[shlex.split(load_line).index("-d") + 1]
    assert json.loads(body) == {"model": model, "keep_alive": "24h"}
    assert "if ! command -v ollama >/dev/null 2>&1; then" in run
    assert "curl -fsSL https://ollama.com/install.sh | sh" in run
    assert "export OLLAMA_HOST=127.0.0.1:11434" in run
    assert "ollama serve &" in run
    assert "/api/version" in run
    assert 'ollama pull "$MODEL"' in run
    for step in ("installing", "starting", '"pulling model"', "loading"):
        assert f"phase {step}\n" in run
    assert subprocess.run(["sh", "-n"], input=run, text=True, check=False).returncode == 0


def _run_locally(home: Path, workload: WorkloadLaunch) -> subprocess.CompletedProcess[str]:
    """Write the launcher files under `home` and run run.sh in the foreground with the real sh."""
    for path, (text, mode) in launch_files(workload, TOKEN).items():
        target = home / path
        target.parent.mkdir(mode=0o700, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)
    return subprocess.run(
        ["sh", ".gpushop/run.sh"],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_env_and_command_reach_the_workload_exactly(tmp_path: Path) -> None:
    command = 'printf %s "$ODD" > env.txt; printf %s ' + shlex.quote(ODD) + " > arg.txt"
    done = _run_locally(tmp_path, WorkloadLaunch("custom", command=command, env={"ODD": ODD}))
    assert (tmp_path / "env.txt").read_text(encoding="utf-8") == ODD
    assert (tmp_path / "arg.txt").read_text(encoding="utf-8") == ODD
    # A custom workload without a port serves once started; its command ending is a failure.
    assert done.returncode != 0
    assert (tmp_path / ".gpushop/phase").read_text(encoding="utf-8") == (
        "failed: the start command exited with status 0 (see .gpushop/workload.log)\n"
    )


def test_a_server_that_dies_before_it_answers_fails_with_its_status(tmp_path: Path) -> None:
    port = _free_port()
    done = _run_locally(tmp_path, WorkloadLaunch("custom", command="exit 7", ports=(port,)))
    assert done.returncode != 0
    assert (tmp_path / ".gpushop/phase").read_text(encoding="utf-8") == (
        "failed: the start command exited with status 7 before it answered "
        "(see .gpushop/workload.log)\n"
    )


@dataclass
class _Failing:
    """A node whose launcher exits 2 with a complaint; it records the files written."""

    written: dict[str, int] = field(default_factory=dict)

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        assert command == LAUNCH_COMMAND
        return CommandResult("", ".gpushop/launch.sh: 17: cannot create .gpushop/pid\n", 2)

    async def write_file(self, path: str, text: str, mode: int) -> None:
        self.written[path] = mode

    def forward(self, port: int) -> contextlib.AbstractAsyncContextManager[int]:
        raise AssertionError("no forward expected")


async def test_a_launcher_that_fails_raises_with_its_stderr() -> None:
    node = _Failing()
    with pytest.raises(NodeError) as caught:
        await launch(node, WorkloadLaunch("custom", command="true"), TOKEN)
    assert caught.value.kind == "command"
    assert caught.value.message == (
        "the workload launcher exited with 2: .gpushop/launch.sh: 17: cannot create .gpushop/pid"
    )
    assert set(node.written) == set(launch_files(WorkloadLaunch("custom", command="true"), TOKEN))


# --- through a real OpenSSH sshd -----------------------------------------------------------


@pytest.fixture
def address(real_sshd: RealSshd, tmp_path: Path) -> NodeAddress:
    key_path = tmp_path / "keys" / "s-1.key"
    real_sshd.authorize(create_key_pair(key_path, "gpushop-test-s-1"))
    return NodeAddress(real_sshd.host, real_sshd.port, real_sshd.user, key_path)


@dataclass
class _Rooted:
    """A node connection whose home is `root`: the exact contract commands run there, and the
    relative SFTP paths land there, so a test never touches the real login's ~/.gpushop."""

    conn: NodeConnection
    root: Path
    commands: list[str] = field(default_factory=list)

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        self.commands.append(command)
        return await self.conn.run(
            f"cd {shlex.quote(str(self.root))} && {command}", timeout_s=timeout_s
        )

    async def write_file(self, path: str, text: str, mode: int) -> None:
        await self.conn.write_file(f"{self.root}/{path}", text, mode)

    def forward(self, port: int) -> contextlib.AbstractAsyncContextManager[int]:
        return self.conn.forward(port)


@contextlib.contextmanager
def _stopping_workload(root: Path) -> Any:
    """On exit, stop the workload's process group (launch.sh starts run.sh with setsid)."""
    try:
        yield
    finally:
        pid_file = root / ".gpushop/pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text(encoding="utf-8")), signal.SIGTERM)


async def test_a_custom_workload_launches_serves_and_is_healthy_through_the_forward(
    address: NodeAddress, tmp_path: Path
) -> None:
    root = tmp_path / "node-home"
    root.mkdir()
    port = _free_port()
    workload = WorkloadLaunch(
        "custom",
        command=f'printf %s "$GREETING" > greeting.txt; exec python3 -m http.server {port} '
        "--bind 127.0.0.1",
        env={"GREETING": ODD},
        ports=(port,),
    )
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        node = _Rooted(conn, root)
        with _stopping_workload(root):
            assert await read_phase(node) is None  # nothing launched yet
            await launch(node, workload, TOKEN)
            pid = (root / ".gpushop/pid").read_text(encoding="utf-8")

            async def serving() -> str | None:
                phase = await read_phase(node)
                assert not (phase or "").startswith("failed"), phase
                return phase if phase == "serving" else None

            await _until(serving, "phase 'serving'")
            health = await check_health(node, workload, TOKEN)
            assert health.healthy, health.detail
            assert health.detail == "GET / answered 200"

            await launch(node, workload, TOKEN)  # already running: a no-op
            assert (root / ".gpushop/pid").read_text(encoding="utf-8") == pid
            assert await read_phase(node) == "serving"
            assert node.commands == [
                PHASE_COMMAND,
                LAUNCH_COMMAND,
                *[PHASE_COMMAND] * (len(node.commands) - 4),
                LAUNCH_COMMAND,
                PHASE_COMMAND,
            ]
            assert (root / "greeting.txt").read_text(encoding="utf-8") == ODD

    gpushop = root / ".gpushop"
    assert stat.S_IMODE(gpushop.stat().st_mode) == 0o700
    assert stat.S_IMODE((gpushop / "token").stat().st_mode) == 0o600
    assert stat.S_IMODE((gpushop / "workload.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((gpushop / "run.sh").stat().st_mode) == 0o700
    assert (gpushop / "token").read_text(encoding="utf-8") == TOKEN
    assert json.loads((gpushop / "workload.json").read_text(encoding="utf-8"))["port"] == port


async def test_health_of_a_port_nothing_listens_on_is_unhealthy_not_an_error(
    address: NodeAddress, tmp_path: Path
) -> None:
    port = _free_port()
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        node = _Rooted(conn, tmp_path)
        health = await check_health(node, WorkloadLaunch("vllm", model="m"), TOKEN)
        quiet = await check_health(
            node, WorkloadLaunch("custom", command="x", ports=(port,)), TOKEN
        )
        no_port = await check_health(node, WorkloadLaunch("custom", command="x"), TOKEN)
        served = await requests_served(node, WorkloadLaunch("vllm", model="m"), TOKEN)
    assert not health.healthy
    assert health.detail == "waiting for the server on node port 8000 (not listening yet)"
    assert not quiet.healthy
    assert quiet.detail == f"waiting for the server on node port {port} (not listening yet)"
    assert (no_port.healthy, no_port.detail) == (False, "phase not started")
    assert served is None


async def test_write_file_is_atomic_sets_the_mode_and_makes_a_private_folder(
    address: NodeAddress, tmp_path: Path
) -> None:
    target = tmp_path / "remote" / ".gpushop" / "run.sh"
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        await conn.write_file(str(target), "first\n", 0o755)
        before = target.stat().st_ino
        await conn.write_file(str(target), "second ✓\n", 0o600)
        blocker = tmp_path / "plain-file"
        blocker.write_text("x", encoding="utf-8")
        with pytest.raises(NodeError) as caught:
            await conn.write_file(f"{blocker}/inside.txt", "x", 0o600)
    assert target.read_text(encoding="utf-8") == "second ✓\n"
    assert target.stat().st_ino != before  # replaced by a rename, not rewritten in place
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.sh"]  # no temp left over
    assert caught.value.kind == "command"
    assert "writing" in caught.value.message


# --- measure and requests_served against a local stand-in server ----------------------------

Handler = Callable[[asyncio.StreamWriter, dict[str, str], bytes], Awaitable[None]]


@dataclass
class StandIn:
    """A tiny HTTP/1.1 server on 127.0.0.1: one handler per (method, path); one request a
    connection, closed after the answer (so a stream's end is the connection's end)."""

    routes: dict[tuple[str, str], Handler]
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, _ = (await reader.readline()).decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append((method, path, headers, body))
            handler = self.routes.get((method, path))
            if handler is None:
                await respond(writer, 404, b"not found")
            else:
                await handler(writer, headers, body)
        finally:
            writer.close()


async def respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, kind: str = "text/plain"
) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


@contextlib.asynccontextmanager
async def stand_in(routes: dict[tuple[str, str], Handler]) -> AsyncIterator[StandIn]:
    server = StandIn(routes)
    listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listening.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listening.close()
        await listening.wait_closed()


@dataclass
class _Direct:
    """A WorkloadNode whose 'forward' is the stand-in's own port (no SSH in between)."""

    port: int

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        raise AssertionError(f"no command expected, got {command!r}")

    async def write_file(self, path: str, text: str, mode: int) -> None:
        raise AssertionError(f"no file expected, got {path!r}")

    @contextlib.asynccontextmanager
    async def forward(self, port: int) -> AsyncIterator[int]:
        yield self.port


def _text(status: int, text: str, kind: str = "text/plain") -> Handler:
    async def handler(writer: asyncio.StreamWriter, _h: dict[str, str], _b: bytes) -> None:
        await respond(writer, status, text.encode(), kind)

    return handler


METRICS = """\
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop",model_name="m"} 3.0
vllm:request_success_total{finished_reason="length",model_name="m"} 4.0
vllm:request_success_created{finished_reason="stop",model_name="m"} 1.7e+09
vllm:num_requests_running{model_name="m"} 1.0
"""


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (200, METRICS, 7.0),
        (200, 'vllm:num_requests_running{model_name="m"} 0.0\n', 0.0),  # none served yet
        (200, "# HELP process_cpu_seconds_total\nprocess_cpu_seconds_total 3.2\n", None),
        (200, 'vllm:request_success_total{model_name="m"} NaN\n', None),
        (500, METRICS, None),
    ],
)
async def test_vllm_requests_served_sums_the_success_counters(
    status: int, text: str, expected: float | None
) -> None:
    async with stand_in({("GET", "/metrics"): _text(status, text)}) as server:
        served = await requests_served(
            _Direct(server.port), WorkloadLaunch("vllm", model="m"), TOKEN
        )
    assert served == expected


def _ps(*expiries: str) -> str:
    return json.dumps(
        {"models": [{"name": f"m{i}", "expires_at": e} for i, e in enumerate(expiries)]}
    )


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (
            200,
            _ps("2025-01-02T03:04:05.123456789-07:00", "2025-01-02T10:00:00Z"),
            datetime(2025, 1, 2, 10, 4, 5, 123456, tzinfo=UTC).timestamp(),
        ),
        (200, _ps(), 0.0),
        (200, _ps("soon"), None),
        (200, "not json", None),
        (503, _ps(), None),
    ],
)
async def test_ollama_requests_served_is_the_latest_expiry(
    status: int, text: str, expected: float | None
) -> None:
    async with stand_in({("GET", "/api/ps"): _text(status, text, "application/json")}) as server:
        served = await requests_served(
            _Direct(server.port), WorkloadLaunch("llm", model="m0"), TOKEN
        )
    assert served == expected


async def test_requests_served_of_a_custom_workload_or_a_closed_port_is_unreadable() -> None:
    custom = WorkloadLaunch("custom", command="x", ports=(1,))
    assert await requests_served(_Direct(_free_port()), custom, TOKEN) is None
    vllm = WorkloadLaunch("vllm", model="m")
    assert await requests_served(_Direct(_free_port()), vllm, TOKEN) is None


async def test_health_per_kind_against_the_stand_in() -> None:
    tags = json.dumps({"models": [{"name": "llama3:latest"}, {"name": "qwen2.5:7b"}]})
    routes = {
        ("GET", "/health"): _text(200, ""),
        ("GET", "/v1/models"): _text(200, '{"object": "list", "data": []}', "application/json"),
        ("GET", "/api/tags"): _text(200, tags, "application/json"),
        ("GET", "/"): _text(503, "warming up"),
    }
    async with stand_in(routes) as server:
        node = _Direct(server.port)
        vllm = await check_health(node, WorkloadLaunch("vllm", model="m"), TOKEN)
        llama = await check_health(node, WorkloadLaunch("llm", model="llama3"), TOKEN)
        qwen = await check_health(node, WorkloadLaunch("llm", model="qwen2.5:7b"), TOKEN)
        missing = await check_health(node, WorkloadLaunch("llm", model="mistral"), TOKEN)
        custom = await check_health(node, WorkloadLaunch("custom", command="x", ports=(1,)), TOKEN)
    assert (vllm.healthy, llama.healthy, qwen.healthy) == (True, True, True)
    assert llama.detail == "llama3 is listed by /api/tags"
    assert (missing.healthy, missing.detail) == (False, "mistral is not listed by /api/tags yet")
    assert (custom.healthy, custom.detail) == (False, "GET / answered 503")
    assert server.seen[0][2]["authorization"] == f"Bearer {TOKEN}"


def _chat_stream(
    chunks: int, *, first_after_s: float, gap_s: float, usage: int | None, stall: bool = False
) -> Handler:
    """An SSE chat completion: `chunks` content deltas, a usage chunk, [DONE] (or a stall)."""

    async def handler(writer: asyncio.StreamWriter, headers: dict[str, str], _b: bytes) -> None:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            await respond(writer, 401, b'{"error": "invalid api key"}', "application/json")
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        await asyncio.sleep(first_after_s)  # the server's prefill, not a wait of the test
        for i in range(chunks):
            delta = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
            writer.write(f"data: {json.dumps(delta)}\n\n".encode())
            await writer.drain()
            await asyncio.sleep(gap_s)
        if stall:
            await asyncio.Event().wait()
        if usage is not None:
            tail = {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": usage}}
            writer.write(f"data: {json.dumps(tail)}\n\n".encode())
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()

    return handler


async def test_measure_times_a_streamed_completion() -> None:
    route = ("POST", "/v1/chat/completions")
    stream = _chat_stream(20, first_after_s=0.2, gap_s=0.01, usage=None)
    async with stand_in({route: stream}) as server:
        result = await measure(f"http://127.0.0.1:{server.port}/v1", "m", TOKEN, max_tokens=64)
    assert result.completion_tokens == 20
    assert result.time_to_first_token_s >= 0.2
    assert 20 <= result.tokens_per_second <= 110  # 19 gaps of >= 10 ms
    body = json.loads(server.seen[0][3])
    assert (body["model"], body["stream"], body["max_tokens"]) == ("m", True, 64)
    assert body["messages"][0]["role"] == "user"


async def test_measure_prefers_the_usage_count_and_refuses_a_wrong_token() -> None:
    route = ("POST", "/v1/chat/completions")
    stream = _chat_stream(10, first_after_s=0, gap_s=0.01, usage=40)
    async with stand_in({route: stream}) as server:
        base = f"http://127.0.0.1:{server.port}/v1/"
        result = await measure(base, "m", TOKEN)
        with pytest.raises(NodeError) as refused:
            await measure(base, "m", "wrong-token")
    assert result.completion_tokens == 40
    assert result.tokens_per_second > 39 / 0.09 * 0.2  # 39 tokens over >= 9 gaps of 10 ms
    assert refused.value.kind == "command"
    assert "answered 401" in refused.value.message


async def test_measure_is_bounded_by_its_timeout() -> None:
    route = ("POST", "/v1/chat/completions")
    async with stand_in(
        {route: _chat_stream(3, first_after_s=0, gap_s=0, usage=None, stall=True)}
    ) as a:
        started = time.monotonic()
        partial = await measure(f"http://127.0.0.1:{a.port}/v1", "m", TOKEN, timeout_s=0.5)
        assert time.monotonic() - started < 3
    assert partial.completion_tokens == 3
    async with stand_in(
        {route: _chat_stream(0, first_after_s=0, gap_s=0, usage=None, stall=True)}
    ) as b:
        with pytest.raises(NodeError) as silent:
            await measure(f"http://127.0.0.1:{b.port}/v1", "m", TOKEN, timeout_s=0.3)
    assert silent.value.kind == "timeout"


def test_two_launches_at_once_start_the_workload_once(tmp_path: Path) -> None:
    """The launcher's check of `.gpushop/pid` and its start are one step under a lock."""
    marker = tmp_path / "started"
    workload = WorkloadLaunch("custom", command=f"echo x >> {shlex.quote(str(marker))}; sleep 30")
    for path, (text, mode) in launch_files(workload, TOKEN).items():
        target = tmp_path / path
        target.parent.mkdir(mode=0o700, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)
    launchers = [subprocess.Popen(["sh", ".gpushop/launch.sh"], cwd=tmp_path) for _ in range(4)]
    try:
        assert [p.wait(timeout=TIMEOUT_S) for p in launchers] == [0, 0, 0, 0]
        pid = int((tmp_path / ".gpushop" / "pid").read_text())
        deadline = time.monotonic() + TIMEOUT_S
        while not marker.exists():  # the one run.sh writes it: a condition with a deadline
            assert time.monotonic() < deadline, "the workload never started"
            time.sleep(0.01)
        again = subprocess.run(["sh", ".gpushop/launch.sh"], cwd=tmp_path, timeout=TIMEOUT_S)
        assert again.returncode == 0  # at once: the running workload holds no lock
        assert int((tmp_path / ".gpushop" / "pid").read_text()) == pid
        assert marker.read_text() == "x\n"
    finally:
        subprocess.run(["pkill", "-f", str(marker)], check=False)
