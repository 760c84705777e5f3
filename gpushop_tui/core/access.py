"""Reaching a session's node from this machine: the ssh command line, SFTP copies and tunnels.

Shared by the local `Shopper` (over the key and known_hosts files the core keeps) and the remote
one (over the key it fetched from the server), so both reach a node the same way: with the
session's own key, and its pinned host key where readiness recorded one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

from gpushop_tui.core.views import Tunnel
from gpushop_tui.core.workloads import endpoint_url, server_port
from gpushop_tui.errors import UserError
from gpushop_tui.models import Session, SessionStatus
from gpushop_tui.node import keys as node_keys
from gpushop_tui.node.ssh import NodeAddress, NodeError, connect


def node_address(session: Session) -> NodeAddress:
    """Where the session's node is and how to log in; `UserError` before it has an address."""
    if not (session.ssh_host and session.ssh_port and session.ssh_user and session.key_path):
        raise UserError(f"session {session.id} has no SSH address yet")
    return NodeAddress(
        host=session.ssh_host,
        port=session.ssh_port,
        user=session.ssh_user,
        key_path=Path(session.key_path),
        host_key=session.host_key,
    )


def ssh_words(session: Session, known_hosts: Path) -> list[str]:
    """The OpenSSH command line for a session as read; `UserError` without an address."""
    address = node_address(session)
    strict = "yes" if session.host_key is not None else "accept-new"
    return [
        "ssh",
        "-i",
        str(address.key_path),
        "-p",
        str(address.port),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        f"StrictHostKeyChecking={strict}",
        f"{address.user}@{address.host}",
    ]


async def ssh_argv(session: Session, known_hosts: Path, command: tuple[str, ...]) -> list[str]:
    """`ssh_words` plus `command`, with the pinned host key written to `known_hosts` first."""
    words = ssh_words(session, known_hosts)
    if session.host_key is not None:
        address = node_address(session)
        await asyncio.to_thread(
            node_keys.write_known_hosts,
            known_hosts,
            address.host,
            address.port,
            session.host_key,
        )
    return [*words, *command]


def _running(session: Session) -> None:
    if session.status != SessionStatus.RUNNING:
        raise UserError(f"session {session.id} is {session.status}, not running")


async def transfer(
    session: Session,
    timeout_s: float,
    direction: Literal["upload", "download"],
    local: Path,
    remote: str,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy one file to or from the session's node over SFTP; returns the bytes copied."""
    _running(session)
    try:
        conn = await connect(node_address(session), timeout_s=timeout_s)
        async with conn:
            if direction == "upload":
                return await conn.upload(local, remote, progress)
            return await conn.download(remote, local, progress)
    except NodeError as err:
        raise UserError(f"transfer failed: {err.message}") from None


@contextlib.asynccontextmanager
async def tunnel(session: Session, timeout_s: float, local_port: int) -> AsyncIterator[Tunnel]:
    """Forward `local_port` (0: a free one) to the endpoint of a session that has one, open
    until the block ends; `Tunnel.closed` ends when the SSH connection under it does."""
    spec = session.workload_spec
    assert spec is not None
    node_port = server_port(spec)
    assert node_port is not None
    _running(session)
    try:
        conn = await connect(node_address(session), timeout_s=timeout_s)
        async with conn, conn.forward(node_port, local_port) as bound:
            url = endpoint_url(spec, port=bound)
            assert url is not None
            yield Tunnel(url=url, closed=conn.wait_closed)
    except NodeError as err:
        if err.kind == "in_use":
            raise UserError(
                f"{err.message}: choose another local port, or 0 for any free one",
                field="local_port",
            ) from None
        raise UserError(f"the tunnel failed: {err.message}") from None
