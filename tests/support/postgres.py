"""A throwaway PostgreSQL server for tests that need a real one (issue 23's store).

`running_postgres()` makes a fresh cluster with the distribution's `initdb` in a private
temporary directory, starts it with `pg_ctl` on a free loopback port (its socket in the same
directory), creates a database, yields its `postgresql://` URL, then stops the server and
removes the directory. The cluster trusts loopback connections only and holds nothing worth
keeping.

PostgreSQL refuses to run as root, so under root (a CI container) the cluster belongs to the
`postgres` system user that the Debian package creates, and its tools run as that user; the
directory is made outside pytest's own temporary tree, which only root may enter.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

POSTGRES_ROOT = Path("/usr/lib/postgresql")
"""Where Debian installs each PostgreSQL major version's server binaries."""
START_WITHIN_S = 30
DATABASE = "gpushop"


class PostgresMissing(RuntimeError):
    """No PostgreSQL server is installed here (`.ci/run` installs Debian's)."""


@dataclass(frozen=True)
class Postgres:
    """A running throwaway cluster."""

    url: str
    port: int
    data_dir: Path


def server_bin() -> Path:
    """The newest installed PostgreSQL's bin directory; `PostgresMissing` when there is none."""
    found = sorted(
        (p for p in POSTGRES_ROOT.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresMissing(f"no PostgreSQL server under {POSTGRES_ROOT}")
    return found[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    """`argv` run as `owner` (root cannot run PostgreSQL), or as we are."""
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster, listening on 127.0.0.1 only, until the block ends."""
    bin_dir = server_bin()
    owner = "postgres" if os.geteuid() == 0 else None
    user = owner or pwd.getpwuid(os.geteuid()).pw_name
    base = Path(tempfile.mkdtemp(prefix="gpushop-pg-"))
    try:
        if owner:
            shutil.chown(base, owner)
        with _cluster(bin_dir, base, owner, user) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def _cluster(bin_dir: Path, base: Path, owner: str | None, user: str) -> Iterator[Postgres]:
    data = base / "data"
    subprocess.run(
        _as_owner(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"],
            owner,
        ),
        check=True,
        capture_output=True,
        text=True,
    )
    port = _free_port()
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base}"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log")]
    subprocess.run(
        _as_owner([*pg_ctl, "-o", options, "-w", "-t", str(START_WITHIN_S), "start"], owner),
        check=True,
        capture_output=True,
        text=True,
    )
    try:
        subprocess.run(
            _as_owner(
                [
                    str(bin_dir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    user,
                    DATABASE,
                ],
                owner,
            ),
            check=True,
            capture_output=True,
            text=True,
        )
        yield Postgres(f"postgresql://{user}@127.0.0.1:{port}/{DATABASE}", port, data)
    finally:
        subprocess.run(
            _as_owner([*pg_ctl, "-m", "immediate", "-w", "stop"], owner),
            check=False,
            capture_output=True,
            text=True,
        )


async def _admin(server: Postgres, statement: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(server.url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def fresh_database(server: Postgres) -> AsyncIterator[str]:
    """A new, empty database on `server` for one test (dropped after it), and its URL."""
    name = f"t_{secrets.token_hex(6)}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield server.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database_for_processes(server: Postgres) -> Iterator[str]:
    """`fresh_database` for a test with no event loop of its own (one driving processes)."""
    name = f"t_{secrets.token_hex(6)}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}"'))
    try:
        yield server.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
