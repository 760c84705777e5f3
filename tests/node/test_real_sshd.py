"""The node client against a real OpenSSH sshd on loopback (tests/support/sshd.py): login with
only the session key, host-key pinning, the spec read through a fake nvidia-smi, SFTP, and the
files we hand to the user's own `ssh`."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from gpushop_tui.node.keys import create_key_pair, write_known_hosts
from gpushop_tui.node.probes import echo_ok, read_spec, sample
from gpushop_tui.node.ssh import NodeAddress, NodeError, connect
from tests.support.sshd import FAKE_CUDA, FAKE_DRIVER, FAKE_GPU, FAKE_VRAM_MIB, RealSshd

TIMEOUT_S = 10.0


@pytest.fixture
def address(real_sshd: RealSshd, tmp_path: Path) -> NodeAddress:
    """A fresh session key, authorized on the server; no host key pinned yet."""
    key_path = tmp_path / "keys" / "s-1.key"
    real_sshd.authorize(create_key_pair(key_path, "gpushop-test-s-1"))
    return NodeAddress(real_sshd.host, real_sshd.port, real_sshd.user, key_path)


async def _connect_error(address: NodeAddress) -> NodeError:
    with pytest.raises(NodeError) as caught:
        conn = await connect(address, timeout_s=TIMEOUT_S)
        await conn.aclose()
    return caught.value


async def test_login_echo_ok_and_trust_on_first_use(
    real_sshd: RealSshd, address: NodeAddress
) -> None:
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        assert await echo_ok(conn)
        assert conn.host_key == real_sshd.host_key
        whoami = await conn.run("id -un")
        reads_stdin = await conn.run("cat", timeout_s=5)  # stdin is at EOF, so it cannot hang
    assert whoami.stdout.strip() == real_sshd.user
    assert (reads_stdin.stdout, reads_stdin.exit_status) == ("", 0)


async def test_a_timeout_does_not_wait_for_a_command_that_forked(address: NodeAddress) -> None:
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        async with asyncio.timeout(2):  # sshd holds the channel open for the 3 s of the command
            with pytest.raises(NodeError) as caught:
                await conn.run("sleep 3; true", timeout_s=0.3)
        assert caught.value.kind == "timeout"
        assert await echo_ok(conn)


async def test_pinned_host_key(real_sshd: RealSshd, address: NodeAddress) -> None:
    pinned = dataclasses.replace(address, host_key=real_sshd.host_key)
    async with await connect(pinned, timeout_s=TIMEOUT_S) as conn:
        assert await echo_ok(conn)
    impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    err = await _connect_error(dataclasses.replace(address, host_key=impostor))
    assert err.kind == "host_key", real_sshd.log()
    assert f"host key of {address.host}:{address.port} changed since first contact" in str(err)


async def test_read_spec_through_the_fake_nvidia_smi(address: NodeAddress) -> None:
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        spec = await read_spec(conn)
    assert [(g.index, g.name, g.memory_total_mib) for g in spec.gpus] == [
        (0, FAKE_GPU, FAKE_VRAM_MIB)
    ]
    assert spec.driver == FAKE_DRIVER
    assert spec.cuda == FAKE_CUDA == 12.4


async def test_sample_counts_the_other_ssh_connections(
    real_sshd: RealSshd, address: NodeAddress
) -> None:
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        alone = await sample(conn, sshd_port=real_sshd.port)
        async with await connect(address, timeout_s=TIMEOUT_S):
            crowded = await sample(conn, sshd_port=real_sshd.port)
    assert alone.gpus is not None
    assert [g.utilization_pct for g in alone.gpus] == [0.0]
    if shutil.which("ss"):
        assert (alone.ssh_connections, crowded.ssh_connections) == (0, 1)
        assert alone.problems == ()
    else:  # iproute2 is not part of every base image: the count is then unknown, and says why
        assert (alone.ssh_connections, crowded.ssh_connections) == (None, None)
        assert "ss" in alone.problems[0]


async def test_sftp_round_trip_into_nested_directories(
    address: NodeAddress, tmp_path: Path
) -> None:
    local = tmp_path / "model.safetensors"
    payload = bytes(range(251)) * 4000
    local.write_bytes(payload)
    remote = f"{tmp_path}/remote/a/b/model.safetensors"
    back = tmp_path / "back" / "model.safetensors"
    sent: list[tuple[int, int]] = []
    received: list[tuple[int, int]] = []
    async with await connect(address, timeout_s=TIMEOUT_S) as conn:
        assert await conn.upload(local, remote, progress=_add(sent)) == len(payload)
        size = await conn.run(f"stat -c %s {remote}")
        assert await conn.download(remote, back, progress=_add(received)) == len(payload)
        with pytest.raises(NodeError) as missing:
            await conn.download(f"{tmp_path}/remote/nothing.bin", tmp_path / "nothing.bin")
    assert size.stdout.strip() == str(len(payload))
    assert back.read_bytes() == payload
    assert sent[-1] == received[-1] == (len(payload), len(payload))
    assert len(sent) > 1
    assert missing.value.kind == "command"
    assert not (tmp_path / "nothing.bin").exists()


def _add(reports: list[tuple[int, int]]) -> Callable[[int, int], None]:
    def progress(done: int, total: int) -> None:
        reports.append((done, total))

    return progress


async def test_a_key_that_is_not_authorized_is_kind_auth(
    real_sshd: RealSshd, address: NodeAddress, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger.key"
    create_key_pair(stranger, "stranger")
    err = await _connect_error(dataclasses.replace(address, key_path=stranger))
    assert err.kind == "auth", real_sshd.log()
    assert "stranger.key" in err.message


@pytest.mark.skipif(shutil.which("ssh") is None, reason="the OpenSSH client is not installed")
async def test_openssh_logs_in_with_our_key_and_known_hosts(
    real_sshd: RealSshd, address: NodeAddress, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "s-1.known_hosts"
    write_known_hosts(known_hosts, address.host, address.port, real_sshd.host_key)
    ssh = await asyncio.create_subprocess_exec(
        "ssh",
        "-F",
        "none",
        "-i",
        str(address.key_path),
        "-p",
        str(address.port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        f"{address.user}@{address.host}",
        "echo ok",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT_S):
        out, err = await ssh.communicate()
    assert (ssh.returncode, out) == (0, b"ok\n"), err.decode()
