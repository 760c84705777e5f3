"""Simulated GPU nodes: real SSH on loopback, answering like a rented GPU box."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.node import SshNodes, smi_name
from gpushop_tui.sim.world import SimInstance, World
from tests.sim.conftest import Env


def _pub(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


async def _create(
    env: Env, provider: str = "vastai", instance_id: str = "1", keys: list[str] | None = None
) -> SimInstance:
    return await env.world.create_instance(
        provider,
        instance_id=instance_id,
        offer_id=f"o{instance_id}",
        label="l",
        gpu_name="RTX 4090",
        gpu_count=2,
        vram_mb=24564,
        cuda=12.4,
        price_per_hour=0.5,
        authorized_keys=[_pub(env.key)] if keys is None else keys,
    )


def _connect(
    instance: SimInstance, key: asyncssh.SSHKey, user: str | None = None, **kwargs: object
) -> Any:
    """`asyncssh.connect` to the node (awaitable and async context manager)."""
    assert instance.ssh_port is not None
    return asyncssh.connect(
        "127.0.0.1",
        port=instance.ssh_port,
        username=user or instance.ssh_user,
        client_keys=[key],
        known_hosts=None,
        connect_timeout=10,
        **kwargs,
    )


async def _running(env: Env, provider: str = "vastai") -> SimInstance:
    instance = await _create(env, provider)
    await env.clock.advance(instance.boot_s)
    assert instance.phase(env.world.now()) == "running"
    return instance


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait (real time, at most 5 s) for a server-side effect of a client action."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_port_is_closed_while_booting_then_open(env: Env) -> None:
    instance = await _create(env)
    assert instance.ssh_port
    with pytest.raises((OSError, asyncssh.Error)):
        await _connect(instance, env.key)
    await env.clock.advance(instance.boot_s)
    async with _connect(instance, env.key) as conn:
        result = await conn.run("echo ok")
    assert result.stdout == "ok\n"
    assert result.exit_status == 0


async def test_wrong_user_and_unknown_key_are_refused(env: Env) -> None:
    instance = await _running(env)
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(instance, env.key, user="ubuntu")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(instance, stranger)
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            port=instance.ssh_port,
            username="root",
            password="root",
            client_keys=None,
            known_hosts=None,
        )


async def test_key_added_later_is_accepted(env: Env) -> None:
    await _create(env, keys=[])
    instance = env.world.get("vastai", "1")
    assert instance is not None
    await env.clock.advance(instance.boot_s)
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(instance, env.key)
    instance.authorized_keys.append(f"no-pty {_pub(env.key)} me@laptop")
    async with _connect(instance, env.key) as conn:
        assert (await conn.run("echo ok")).stdout == "ok\n"


async def test_ssh_refuse_until_is_honoured(env: Env) -> None:
    instance = await _running(env)
    instance.ssh_refuse_until = env.world.now() + 30
    with pytest.raises(asyncssh.PermissionDenied):
        await _connect(instance, env.key)
    await env.clock.advance(30)
    async with _connect(instance, env.key) as conn:
        assert (await conn.run("true")).exit_status == 0


async def test_nvidia_smi_query_and_full_table(env: Env) -> None:
    instance = await _running(env)
    instance.gpu_util = 87
    async with _connect(instance, env.key) as conn:
        spec = await conn.run(
            "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader"
        )
        bare = await conn.run(
            "nvidia-smi --query-gpu=index,count,memory.total,utilization.gpu,memory.used,"
            "temperature.gpu,power.draw --format=csv,noheader,nounits"
        )
        header = await conn.run("nvidia-smi --query-gpu=name,memory.total --format=csv")
        table = await conn.run("nvidia-smi")
        bad = await conn.run("nvidia-smi --query-gpu=bogus --format=csv")
    assert spec.exit_status == 0
    assert spec.stdout.splitlines() == ["NVIDIA GeForce RTX 4090, 24564 MiB, 550.54.15"] * 2
    rows = [line.split(", ") for line in bare.stdout.splitlines()]
    assert [r[:4] for r in rows] == [["0", "2", "24564", "87"], ["1", "2", "24564", "87"]]
    for r in rows:
        assert 0 < int(r[4]) <= 24564
        assert int(r[5]) > 0
        float(r[6])
    assert header.stdout.splitlines()[0] == "name, memory.total [MiB]"
    assert "Driver Version: 550.54.15" in table.stdout
    assert "CUDA Version: 12.4" in table.stdout
    assert table.stdout.count("NVIDIA GeForce RTX 4090") == 2
    assert bad.exit_status != 0


async def test_node_faults_show_up(env: Env) -> None:
    instance = await _running(env)
    instance.node_gpu_name = "RTX 3090"
    instance.node_gpu_count = 1
    instance.node_cuda = 11.8
    async with _connect(instance, env.key) as conn:
        spec = await conn.run("nvidia-smi --query-gpu=name --format=csv,noheader")
        table = await conn.run("nvidia-smi")
    assert spec.stdout == "NVIDIA GeForce RTX 3090\n"
    assert "CUDA Version: 11.8" in table.stdout


def test_smi_names() -> None:
    assert smi_name("RTX 4090", 24564) == "NVIDIA GeForce RTX 4090"
    assert smi_name("H100 SXM", 81559) == "NVIDIA H100 80GB HBM3"
    assert smi_name("A100 SXM4", 81920) == "NVIDIA A100-SXM4-80GB"
    assert smi_name("RTX A6000", 49140) == "NVIDIA RTX A6000"
    assert smi_name("L40S", 46068) == "NVIDIA L40S"


async def test_dpkg_lock_is_held_after_boot_then_released(env: Env) -> None:
    instance = await _running(env, "tensordock")
    assert instance.dpkg_lock_s > 0
    check = "fuser /var/lib/dpkg/lock-frontend"
    async with _connect(instance, env.key) as conn:
        held = await conn.run(check)
        assert held.exit_status == 0
        assert held.stdout.strip().isdigit()
        await env.clock.advance(instance.dpkg_lock_s)
        free = await conn.run(check)
        assert free.exit_status == 1
        assert free.stdout == ""
        assert (await conn.run(f"{check} 2>/dev/null || echo free")).stdout == "free\n"


async def test_unknown_command_and_command_lists(env: Env) -> None:
    instance = await _running(env)
    async with _connect(instance, env.key) as conn:
        missing = await conn.run("frobnicate --now")
        both = await conn.run("echo a && echo b; false && echo never; hostname")
        stopped = await conn.run("true && frobnicate && echo never")
        kernel = await conn.run("uname -a")
        disk = await conn.run("df -h")
    assert missing.exit_status == 127
    assert missing.stderr == "bash: line 1: frobnicate: command not found\n"
    assert missing.stdout == ""
    assert both.stdout.splitlines()[:2] == ["a", "b"]
    assert len(both.stdout.splitlines()) == 3
    assert stopped.exit_status == 127
    assert "never" not in stopped.stdout
    assert kernel.stdout.startswith("Linux ")
    assert " /\n" in disk.stdout


async def test_who_and_connection_count(env: Env) -> None:
    instance = await _running(env)
    assert env.nodes.connections(instance) == 0
    async with _connect(instance, env.key) as first, _connect(instance, env.key) as second:
        assert env.nodes.connections(instance) == 2
        who = await first.run("who")
        assert len(who.stdout.splitlines()) == 2
        assert all(line.startswith("root ") for line in who.stdout.splitlines())
        second.close()
        await second.wait_closed()
        await _until(lambda: env.nodes.connections(instance) == 1)
        assert len((await first.run("who")).stdout.splitlines()) == 1
    await _until(lambda: env.nodes.connections(instance) == 0)


async def test_sftp_roundtrip(env: Env, tmp_path: Path) -> None:
    instance = await _running(env)
    local = tmp_path / "weights.bin"
    local.write_bytes(bytes(range(256)) * 100)
    async with _connect(instance, env.key) as conn, conn.start_sftp_client() as sftp:
        await sftp.makedirs("models/x", exist_ok=True)
        await sftp.put(str(local), "models/x/weights.bin")
        assert await sftp.exists("/models/x/weights.bin")
        await sftp.get("models/x/weights.bin", str(tmp_path / "back.bin"))
        listing = await conn.run("ls /models/x")
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
    assert listing.stdout == "weights.bin\n"


async def test_detach_closes_port_and_connections(env: Env) -> None:
    instance = await _running(env)
    conn = await _connect(instance, env.key)
    await env.nodes.detach(instance)
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert env.nodes.connections(instance) == 0
    with pytest.raises(OSError):
        await _connect(instance, env.key)


async def test_destroy_and_reattach_reuses_port(env: Env) -> None:
    instance = await _running(env)
    port = instance.ssh_port
    await env.nodes.detach(instance)
    assert await env.nodes.attach(instance) == port
    async with _connect(instance, env.key) as conn:
        assert (await conn.run("echo ok")).stdout == "ok\n"
    await env.world.destroy("vastai", "1")
    with pytest.raises(OSError):
        await _connect(instance, env.key)


async def test_host_key_persists_across_restarts(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    seen: list[bytes] = []
    for _ in range(2):
        clock = FakeClock()
        world = World(seed=1, clock=clock)
        nodes = SshNodes(world, host_key_dir=tmp_path / "host_keys")
        world.nodes = nodes
        env = Env(clock, world, nodes, key)
        try:
            instance = await _running(env)
            async with _connect(instance, key) as conn:
                host_key = conn.get_server_host_key()
                assert host_key is not None
                seen.append(host_key.public_data)
        finally:
            await nodes.aclose()
    assert seen[0] == seen[1]
    assert list((tmp_path / "host_keys").iterdir())


async def test_stopped_instance_refuses_connections(env: Env) -> None:
    instance = await _running(env)
    instance.stopped = True
    with pytest.raises((OSError, asyncssh.Error)):
        await _connect(instance, env.key)
    instance.stopped = False
    async with _connect(instance, env.key) as conn:
        assert (await conn.run("echo ok")).stdout == "ok\n"


async def _read_until(process: Any, text: str) -> str:
    """What the shell printed up to and including `text` (at most 5 s)."""
    seen = ""
    async with asyncio.timeout(5):
        while text not in seen:
            chunk = await process.stdout.read(4096)
            assert chunk, f"EOF before {text!r}; got {seen!r}"
            seen += chunk
    return seen


async def test_interactive_shell_with_a_pty(env: Env) -> None:
    instance = await _running(env)
    prompt = "root@vastai-1:~# "
    async with _connect(instance, env.key) as conn:
        process = await conn.create_process(term_type="xterm", term_size=(120, 40))
        greeting = await _read_until(process, prompt)
        assert "gpushop simulated node" in greeting
        assert "nvidia-smi" in greeting
        process.stdin.write("nvidia-smi\n")
        table = await _read_until(process, prompt)
        assert table.startswith("nvidia-smi\r\n"), "the typed line is echoed"
        assert table.count("NVIDIA GeForce RTX 4090") == 2
        assert "\r\n" in table
        process.stdin.write("frobnicate --now\n")
        missing = await _read_until(process, prompt)
        assert "frobnicate: command not found" in missing
        process.stdin.write("false\n")
        await _read_until(process, prompt)
        process.stdin.write("exit\n")
        async with asyncio.timeout(5):
            rest = await process.stdout.read()
            await process.wait_closed()
    assert "logout" in rest
    assert process.exit_status == 0


async def test_interactive_shell_ends_on_eof_and_exit_code(env: Env) -> None:
    instance = await _running(env)
    prompt = "root@vastai-1:~# "
    async with _connect(instance, env.key) as conn:
        typed = await conn.create_process(term_type="xterm")
        await _read_until(typed, prompt)
        typed.stdin.write("ls /\n")
        await _read_until(typed, prompt)
        typed.stdin.write("\x04")
        async with asyncio.timeout(5):
            await typed.wait_closed()
        assert typed.exit_status == 0
        coded = await conn.create_process(term_type="xterm")
        await _read_until(coded, prompt)
        coded.stdin.write("logout 3\n")
        async with asyncio.timeout(5):
            await coded.wait_closed()
        assert coded.exit_status == 3


async def test_shell_without_a_pty_reads_commands_silently(env: Env) -> None:
    instance = await _running(env)
    async with _connect(instance, env.key) as conn:
        process = await conn.create_process()
        process.stdin.write("whoami\necho a b\nfrobnicate\nuname\n")
        process.stdin.write_eof()
        async with asyncio.timeout(5):
            result = await process.wait()
    assert result.stdout == "root\na b\nLinux\n"
    assert "frobnicate: command not found" in str(result.stderr)
    assert result.exit_status == 0


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client is not installed")
async def test_openssh_interactive_login(env: Env, tmp_path: Path) -> None:
    """The demo's pasted `ssh -i KEY -p PORT root@HOST`, with typed lines from a pipe."""
    instance = await _running(env)
    key_path = tmp_path / "id_ed25519"
    env.key.write_private_key(key_path)
    key_path.chmod(0o600)
    ssh = await asyncio.create_subprocess_exec(
        "ssh",
        "-tt",
        "-F",
        "none",
        "-i",
        str(key_path),
        "-p",
        str(instance.ssh_port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "root@127.0.0.1",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(10):
        out, err = await ssh.communicate(b"nvidia-smi -L\nexit\n")
    text = out.decode()
    assert ssh.returncode == 0, err.decode() + text
    assert "root@vastai-1:~# " in text
    assert "GPU 1: NVIDIA GeForce RTX 4090" in text
    assert "logout" in text
