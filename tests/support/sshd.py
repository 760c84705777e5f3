"""A real OpenSSH `sshd` on a loopback port, for tests of the node layer and the lifecycle.

It runs in the foreground (`-D -e`) from a private config: a fresh ed25519 host key, public-key
auth only, an `AuthorizedKeysFile` the test fills through `authorize()`, internal SFTP, and a
fake `nvidia-smi` put first on the PATH of sessions with `SetEnv` (an RTX 4090 box, driver
550.54.15, CUDA 12.4). Logins are as the user running the tests. The user's shell rc files may
still prepend their own folders to that PATH (root's ~/.bashrc here adds pyenv and cargo); a
real nvidia-smi in /usr/bin stays behind the fake one.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
"""sshd started as root insists on this (empty) directory; a distro's service unit makes it."""
READY_WITHIN_S = 10.0
# What the fake nvidia-smi below reports (its text spells these values out).
FAKE_GPU = "NVIDIA GeForce RTX 4090"
FAKE_VRAM_MIB = 24564
FAKE_DRIVER = "550.54.15"
FAKE_CUDA = 12.4

FAKE_NVIDIA_SMI = r"""#!/bin/sh
# A stand-in for nvidia-smi on a one-GPU NVIDIA GeForce RTX 4090 box, field by field.
query=""
for arg in "$@"; do
  case "$arg" in
    --query-gpu=*) query="${arg#--query-gpu=}" ;;
    --format=*) ;;
    *) echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help." >&2
       exit 2 ;;
  esac
done
if [ -z "$query" ]; then
  cat <<'EOF'
Tue Mar 12 10:21:33 2024
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 4090        On  |   00000000:01:00.0 Off |                  Off |
|  0%   34C    P8             21W /  450W |       1MiB /  24564MiB |      0%      Default |
|                                         |                        |                  N/A |
+-----------------------------------------+------------------------+----------------------+
EOF
  exit 0
fi
line=""
IFS=","
for field in $query; do
  case "$field" in
    index) value=0 ;;
    name) value="NVIDIA GeForce RTX 4090" ;;
    memory.total) value=24564 ;;
    memory.used) value=1 ;;
    utilization.gpu) value=0 ;;
    temperature.gpu) value=34 ;;
    power.draw) value=21.37 ;;
    driver_version) value=550.54.15 ;;
    *) echo "Field \"$field\" is not a valid field to query." >&2; exit 2 ;;
  esac
  line="${line:+$line, }$value"
done
echo "$line"
"""


@dataclass
class RealSshd:
    """A running sshd: where it listens, who may log in, and the host key it presents."""

    host: str
    port: int
    user: str
    host_key: str
    """The server's public host key, 'ssh-ed25519 AAAA...' (type + base64)."""
    authorized_keys: Path
    log_file: Path

    def authorize(self, public_key_line: str) -> None:
        """Let the key of this public line ('ssh-ed25519 AAAA... comment') log in."""
        with self.authorized_keys.open("a", encoding="utf-8") as out:
            out.write(public_key_line.strip() + "\n")

    def log(self) -> str:
        """What sshd printed so far (for assertion messages)."""
        return self.log_file.read_text(encoding="utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(directory: Path, port: int, host_key: Path, bin_dir: Path) -> str:
    return "\n".join(
        [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}",
            f"AllowUsers {getpass.getuser()}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            f"SetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "",
        ]
    )


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    """Poll the port until sshd accepts (bounded); raise with sshd's log if it never does."""
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log_file.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"sshd did not listen on {port} within {READY_WITHIN_S} s")


@contextlib.contextmanager
def running_sshd(directory: Path) -> Iterator[RealSshd]:
    """Start sshd with its files under `directory`; stop it on exit."""
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    host_key = directory / "ssh_host_ed25519_key"
    host_key.touch(mode=0o600)
    key.write_private_key(host_key)
    authorized = directory / "authorized_keys"
    authorized.touch(mode=0o600)
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI, encoding="utf-8")
    smi.chmod(0o755)
    log_file = directory / "sshd.log"
    config = directory / "sshd_config"
    for attempt in range(3):  # another process may take the free port before sshd binds it
        port = _free_port()
        config.write_text(_config(directory, port, host_key, bin_dir), encoding="utf-8")
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_listening(process, port, log_file)
            break
        except RuntimeError:
            _stop(process)
            if attempt == 2:
                raise
    try:
        kind, data = key.export_public_key("openssh").decode().split()[:2]
        yield RealSshd(
            host="127.0.0.1",
            port=port,
            user=getpass.getuser(),
            host_key=f"{kind} {data}",
            authorized_keys=authorized,
            log_file=log_file,
        )
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
