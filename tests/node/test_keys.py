"""Session key files: a new ed25519 pair that OpenSSH reads, never overwritten, and known_hosts
lines that OpenSSH finds."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest

from gpushop_tui.node.keys import (
    create_key_pair,
    known_hosts_line,
    public_key_line,
    write_known_hosts,
)

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen (openssh) is missing")
HOST_KEY = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_key_pair_writes_a_private_0600_file_and_its_public_line(tmp_path: Path) -> None:
    private = tmp_path / "keys" / "s-1.key"
    line = create_key_pair(private, "gpushop-abc-s-1")
    assert line.startswith("ssh-ed25519 AAAA")
    assert line.endswith(" gpushop-abc-s-1")
    assert "\n" not in line
    assert _mode(private) == 0o600
    assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (tmp_path / "keys" / "s-1.pub").read_text() == line + "\n"
    key = asyncssh.read_private_key(private)
    assert key.export_public_key().decode().strip() == line
    assert public_key_line(private) == line


def test_each_pair_is_new(tmp_path: Path) -> None:
    first = create_key_pair(tmp_path / "a.key", "c")
    second = create_key_pair(tmp_path / "b.key", "c")
    assert first.split()[1] != second.split()[1]


def test_create_key_pair_never_overwrites(tmp_path: Path) -> None:
    private = tmp_path / "s.key"
    line = create_key_pair(private, "first")
    before = private.read_bytes()
    with pytest.raises(FileExistsError):
        create_key_pair(private, "second")
    assert private.read_bytes() == before
    assert public_key_line(private) == line


def test_public_key_line_falls_back_to_the_private_key(tmp_path: Path) -> None:
    private = tmp_path / "s.key"
    line = create_key_pair(private, "gpushop-x")
    private.with_suffix(".pub").unlink()
    assert public_key_line(private) == line
    private.write_text("not a key")
    with pytest.raises(ValueError):
        public_key_line(private)
    with pytest.raises(OSError):
        public_key_line(tmp_path / "missing.key")


@needs_keygen
def test_openssh_reads_the_private_key(tmp_path: Path) -> None:
    private = tmp_path / "s.key"
    line = create_key_pair(private, "gpushop-x")
    derived = subprocess.run(
        [str(SSH_KEYGEN), "-y", "-f", str(private)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == line.split()[:2]


def test_known_hosts_lines() -> None:
    kind, data = HOST_KEY.split()[:2]
    assert known_hosts_line("203.0.113.5", 22, HOST_KEY) == f"203.0.113.5 {kind} {data}"
    assert (
        known_hosts_line("ssh4.vast.ai", 31022, HOST_KEY) == f"[ssh4.vast.ai]:31022 {kind} {data}"
    )
    assert known_hosts_line("h", 2222, f"{kind} {data} root@node") == f"[h]:2222 {kind} {data}"
    with pytest.raises(ValueError):
        known_hosts_line("h", 22, "ssh-ed25519")


def test_write_known_hosts_is_0600_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "kh" / "s-1.known_hosts"
    write_known_hosts(path, "198.51.100.7", 40022, "ssh-ed25519 AAAAold")
    write_known_hosts(path, "198.51.100.7", 40022, HOST_KEY)
    assert _mode(path) == 0o600
    assert path.read_text() == known_hosts_line("198.51.100.7", 40022, HOST_KEY) + "\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


@needs_keygen
def test_openssh_finds_the_host_in_our_known_hosts(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    write_known_hosts(path, "198.51.100.7", 40022, HOST_KEY)
    found = subprocess.run(
        [str(SSH_KEYGEN), "-F", "[198.51.100.7]:40022", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    assert HOST_KEY.split()[1] in found.stdout
