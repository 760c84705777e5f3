"""The node client against the simulator's SSH nodes (real asyncssh servers on loopback), with
world time on a FakeClock: readiness probes, faults, error kinds, host-key pinning, SFTP.

The world and its nodes run without the provider HTTP servers (as in tests/sim/test_sim_node.py):
these tests need only the nodes, and stopping the HTTP servers costs 0.5 s a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.node.keys import create_key_pair
from gpushop_tui.node.probes import dpkg_lock_free, echo_ok, read_spec, sample
from gpushop_tui.node.ssh import NodeAddress, NodeError, connect
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import SimInstance, World

TIMEOUT_S = 10.0


@dataclass
class Env:
    world: World
    nodes: SshNodes
    clock: FakeClock
    key_path: Path
    public_line: str

    async def instance(
        self, provider: str = "vastai", *, keys: list[str] | None = None, boot: bool = True
    ) -> SimInstance:
        """A 2x RTX 4090 instance with our key attached, booted unless told otherwise."""
        number = str(sum(len(v) for v in self.world.instances.values()) + 1)
        instance = await self.world.create_instance(
            provider,
            instance_id=number,
            offer_id=f"o{number}",
            label=f"gpushop-test-{number}",
            gpu_name="RTX 4090",
            gpu_count=2,
            vram_mb=24564,
            cuda=12.4,
            price_per_hour=0.5,
            authorized_keys=[self.public_line] if keys is None else keys,
        )
        if boot:
            await self.clock.advance(instance.boot_s)
        return instance

    def address(self, instance: SimInstance, **changes: Any) -> NodeAddress:
        assert instance.ssh_port is not None
        base = NodeAddress("127.0.0.1", instance.ssh_port, instance.ssh_user, self.key_path)
        return dataclasses.replace(base, **changes)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
async def env(clock: FakeClock, tmp_path: Path) -> AsyncIterator[Env]:
    key_path = tmp_path / "keys" / "s-1.key"
    line = create_key_pair(key_path, "gpushop-test-s-1")
    world = World(seed=1, clock=clock)
    nodes = SshNodes(world)
    world.nodes = nodes
    try:
        yield Env(world, nodes, clock, key_path, line)
    finally:
        await nodes.aclose()


async def _until(predicate: Callable[[], bool]) -> None:
    """Wait (real time, at most 5 s) for the server side to notice what the client did."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def _connect_error(address: NodeAddress, timeout_s: float = TIMEOUT_S) -> NodeError:
    with pytest.raises(NodeError) as caught:
        conn = await connect(address, timeout_s=timeout_s)
        await conn.aclose()
    return caught.value


async def test_echo_ok_and_a_clean_close(env: Env) -> None:
    instance = await env.instance()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        assert env.nodes.connections(instance) == 1
        assert await echo_ok(conn)
        missing = await conn.run("frobnicate --now")
    assert missing.exit_status == 127
    assert missing.stderr == "bash: line 1: frobnicate: command not found\n"
    await _until(lambda: env.nodes.connections(instance) == 0)


async def test_read_spec_matches_the_instance(env: Env) -> None:
    instance = await env.instance()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        spec = await read_spec(conn)
    assert [g.index for g in spec.gpus] == [0, 1]
    assert {g.name for g in spec.gpus} == {"NVIDIA GeForce RTX 4090"}
    assert {g.memory_total_mib for g in spec.gpus} == {24564}
    assert spec.driver == instance.driver == "550.54.15"
    assert spec.cuda == 12.4


async def test_a_wrong_gpu_fault_is_visible(env: Env) -> None:
    faults = env.world.faults.node("tensordock")
    faults.wrong_gpu, faults.old_cuda, faults.fewer_gpus = "RTX 3090", 11.8, 1
    instance = await env.instance("tensordock")
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        spec = await read_spec(conn)
    assert [g.name for g in spec.gpus] == ["NVIDIA GeForce RTX 3090"]
    assert spec.cuda == 11.8


async def test_read_spec_fails_when_nvidia_smi_finds_no_gpu(env: Env) -> None:
    instance = await env.instance()
    instance.node_gpu_count = 0
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        with pytest.raises(NodeError) as caught:
            await read_spec(conn)
    assert caught.value.kind == "command"
    assert "No devices were found" in caught.value.message


async def test_dpkg_lock_is_held_after_boot_then_free(env: Env) -> None:
    instance = await env.instance("bluelobster")
    assert instance.dpkg_lock_s > 0
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        assert await dpkg_lock_free(conn) is False
        await env.clock.advance(instance.dpkg_lock_s)
        assert await dpkg_lock_free(conn) is True


async def test_sample_reads_utilization_and_other_connections(env: Env) -> None:
    instance = await env.instance()
    instance.gpu_util = 87
    address = env.address(instance)
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        alone = await sample(conn)
        async with await connect(address, timeout_s=TIMEOUT_S):
            crowded = await sample(conn)
    assert alone.gpus is not None
    assert [g.utilization_pct for g in alone.gpus] == [87.0, 87.0]
    assert all(g.power_w and g.power_w > 20 for g in alone.gpus)
    assert (alone.ssh_connections, alone.problems) == (0, ())
    assert crowded.ssh_connections == 1


async def test_sample_without_gpus_is_a_problem_not_an_error(env: Env) -> None:
    instance = await env.instance()
    instance.node_gpu_count = 0
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        got = await sample(conn)
    assert got.gpus is None
    assert got.ssh_connections == 0
    assert len(got.problems) == 1
    assert "No devices were found" in got.problems[0]


async def test_a_key_that_is_not_attached_is_kind_auth(env: Env, tmp_path: Path) -> None:
    instance = await env.instance(keys=[])
    err = await _connect_error(env.address(instance))
    assert err.kind == "auth"
    assert "s-1.key" in err.message
    stranger = tmp_path / "other.key"
    create_key_pair(stranger, "other")
    attached = await env.instance()
    assert (await _connect_error(env.address(attached, key_path=stranger))).kind == "auth"
    assert (await _connect_error(env.address(attached, user="ubuntu"))).kind == "auth"


async def test_host_key_is_trusted_on_first_use_then_pinned(env: Env) -> None:
    instance = await env.instance()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as first:
        pinned = first.host_key
    kind, data = pinned.split()
    assert kind == "ssh-ed25519"
    assert asyncssh.import_public_key(pinned).get_algorithm() == "ssh-ed25519"
    async with await connect(env.address(instance, host_key=pinned), timeout_s=TIMEOUT_S) as again:
        assert again.host_key == pinned
        assert await echo_ok(again)
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    err = await _connect_error(env.address(instance, host_key=other))
    assert err.kind == "host_key"
    assert err.message.startswith(f"host key of 127.0.0.1:{instance.ssh_port} changed since")
    assert data not in err.message
    assert other.split()[1] not in err.message
    assert env.nodes.connections(instance) == 0


async def test_a_pinned_key_of_another_type_is_a_changed_host_key(env: Env) -> None:
    instance = await env.instance()
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    pinned = rsa.export_public_key().decode().strip()
    assert (await _connect_error(env.address(instance, host_key=pinned))).kind == "host_key"


async def test_a_destroyed_node_refuses(env: Env) -> None:
    instance = await env.instance()
    await env.world.destroy(instance.provider, instance.id)
    err = await _connect_error(env.address(instance))
    assert err.kind == "refused"
    assert str(err) == err.message


async def test_a_booting_node_is_unreachable(env: Env) -> None:
    instance = await env.instance(boot=False)
    assert (await _connect_error(env.address(instance))).kind == "unreachable"
    await env.clock.advance(instance.boot_s)
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        assert await echo_ok(conn)


@contextlib.asynccontextmanager
async def _silent_server(
    banner: bytes = b"",
) -> AsyncIterator[tuple[int, asyncio.Queue[asyncio.StreamReader]]]:
    """A TCP server that accepts, sends `banner`, then falls silent (a hung SSH daemon)."""
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(banner)
        await accepted.put(reader)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def _until_closed_by_client(reader: asyncio.StreamReader) -> None:
    """Read what the client sent until it closes its end (bounded by a real-time timeout)."""
    async with asyncio.timeout(5):
        while await reader.read(4096):
            pass


async def test_a_silent_port_times_out_and_the_socket_is_closed(env: Env) -> None:
    async with _silent_server() as (port, accepted):
        address = NodeAddress("127.0.0.1", port, "root", env.key_path)
        err = await _connect_error(address, timeout_s=0.3)
        assert err.kind == "timeout"
        assert "0.3 s" in err.message
        await _until_closed_by_client(await accepted.get())


async def test_a_cancelled_connect_leaves_no_connection(env: Env) -> None:
    async with _silent_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") as (port, accepted):
        address = NodeAddress("127.0.0.1", port, "root", env.key_path)
        task = asyncio.create_task(connect(address, timeout_s=60))
        reader = await accepted.get()
        assert (await reader.readline()).startswith(b"SSH-2.0-")  # the client is in the handshake
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _until_closed_by_client(reader)


async def test_a_command_that_overruns_is_kind_timeout_and_the_connection_lives(env: Env) -> None:
    instance = await env.instance()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        with pytest.raises(NodeError) as caught:
            await conn.run("sleep 600", timeout_s=0.2)
        assert caught.value.kind == "timeout"
        assert caught.value.message.startswith("sleep on 127.0.0.1:")
        assert await echo_ok(conn)


async def test_a_cancelled_command_leaves_the_connection_usable(env: Env) -> None:
    instance = await env.instance()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        task = asyncio.create_task(conn.run("sleep 600"))
        await _until(lambda: env.clock.sleeping == 1)  # the node is running the command
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await echo_ok(conn)


async def test_a_dropped_connection_is_kind_closed(env: Env) -> None:
    instance = await env.instance()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        assert await echo_ok(conn)
        await env.nodes.detach(instance)
        with pytest.raises(NodeError) as caught:
            await conn.run("echo ok")
        assert caught.value.kind == "closed"
        with pytest.raises(NodeError) as sampled:
            await sample(conn)
        assert sampled.value.kind == "closed"
        with pytest.raises(NodeError) as uploading:
            await conn.upload(env.key_path.with_suffix(".pub"), "k.pub")
        assert uploading.value.kind == "closed"


async def test_upload_then_download_round_trip_with_progress(env: Env, tmp_path: Path) -> None:
    instance = await env.instance()
    local = tmp_path / "weights.bin"
    payload = bytes(range(256)) * 1200 + b"tail"
    local.write_bytes(payload)
    sent: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []
    back = tmp_path / "back" / "weights.bin"
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        assert await conn.upload(local, "models/llama/weights.bin", progress=_add(sent)) == len(
            payload
        )
        listing = await conn.run("ls /models/llama")
        got = await conn.download("models/llama/weights.bin", back, progress=_add(received))
    assert got == len(payload)
    assert back.read_bytes() == payload
    assert listing.stdout == "weights.bin\n"
    for reports in (sent, received):
        assert reports[-1] == (len(payload), len(payload))
        assert [done for done, _ in reports] == sorted(done for done, _ in reports)
        assert {total for _, total in reports} == {len(payload)}
    assert await asyncio.to_thread(_names, back.parent) == ["weights.bin"]


def _add(reports: list[tuple[int, int]]) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        reports.append((done, total))

    return progress


async def test_transfers_refuse_directories_and_missing_files(env: Env, tmp_path: Path) -> None:
    instance = await env.instance()
    folder = tmp_path / "folder"
    folder.mkdir()
    async with await connect(env.address(instance), timeout_s=TIMEOUT_S) as conn:
        with pytest.raises(NodeError) as a_dir:
            await conn.upload(folder, "folder")
        with pytest.raises(NodeError) as no_local:
            await conn.upload(tmp_path / "missing.bin", "missing.bin")
        with pytest.raises(NodeError) as no_remote:
            await conn.download("nothing/here.bin", tmp_path / "here.bin")
        assert await echo_ok(conn)
    assert (a_dir.value.kind, no_local.value.kind, no_remote.value.kind) == ("command",) * 3
    assert "is a directory" in a_dir.value.message
    assert "missing.bin" in no_local.value.message
    assert "nothing/here.bin" in no_remote.value.message
    assert await asyncio.to_thread(_names, tmp_path) == ["folder", "keys"]


async def test_an_unreadable_private_key_is_kind_key(env: Env, tmp_path: Path) -> None:
    instance = await env.instance()
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n")
    for key_path in (garbage, tmp_path / "absent.key"):
        err = await _connect_error(env.address(instance, key_path=key_path))
        assert err.kind == "key"
        assert key_path.name in err.message
    assert env.nodes.connections(instance) == 0
