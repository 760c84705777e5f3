"""SSH key files of a session: a new ed25519 pair per rental, and the pinned host key.

The private key is a file `0600` under the data dir (DESIGN.md §3, invariant 8), created with
`O_EXCL` so that a retry can never overwrite the key an instance was created with. The known_hosts
file lets a user's own `ssh -o UserKnownHostsFile=...` trust the host key we pinned. asyncssh is
imported only by the functions that need it: it is heavy, and most commands never make a key.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def create_key_pair(private_path: Path, comment: str) -> str:
    """Write a new ed25519 key pair; return its public line ('ssh-ed25519 AAAA... comment').

    The private key goes to `private_path` (OpenSSH format, 0600, never overwritten: an existing
    file raises FileExistsError), the public key to `private_path.with_suffix('.pub')`.
    """
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment or None)
    private_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key("openssh"))
            out.flush()
            os.fsync(out.fileno())
        line = key.export_public_key("openssh").decode().strip()
        _write_atomically(private_path.with_suffix(".pub"), line + "\n", 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return line


def public_key_line(private_path: Path) -> str:
    """The public line of the key at `private_path`: from its `.pub` file, else from the key.

    Raises OSError if neither can be read and ValueError if the key file is not a key.
    """
    import asyncssh

    public = private_path.with_suffix(".pub")
    if public.is_file():
        line = public.read_text(encoding="utf-8").strip()
        if line:
            return line
    return asyncssh.read_private_key(private_path).export_public_key("openssh").decode().strip()


def known_hosts_line(host: str, port: int, host_key: str) -> str:
    """One OpenSSH known_hosts line: 'host key' on port 22, '[host]:port key' on any other."""
    parts = host_key.split()
    if len(parts) < 2:
        raise ValueError("a host key is 'type base64', e.g. 'ssh-ed25519 AAAA...'")
    pattern = host if port == 22 else f"[{host}]:{port}"
    return f"{pattern} {parts[0]} {parts[1]}"


def write_known_hosts(path: Path, host: str, port: int, host_key: str) -> None:
    """Replace `path` (0600) with the one known_hosts line for this node, atomically."""
    _write_atomically(path, known_hosts_line(host, port, host_key) + "\n", 0o600)


def write_secret(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by this user only (0600), atomically."""
    _write_atomically(path, text, 0o600)


def _write_atomically(path: Path, text: str, mode: int) -> None:
    """Write `text` to a temp file beside `path`, then rename it over `path`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), mode)
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
        raise
