"""SSH to a rented node (asyncssh): connect with the session's key, run commands, move files,
forward ports.

Only the session's own key is offered: no agent, no ~/.ssh/config, no user known_hosts file, no
password or keyboard-interactive auth, so what works here works for the user's own `ssh -i`.
The host key is pinned on first contact (trust on first use) and checked during the handshake
on every later contact, before our key is offered. Every failure becomes a `NodeError` whose
kind the readiness loop can act on and whose message is one sentence without key material.
asyncssh is imported where a connection is made or used, not here: it is heavy, and the core
(hence every one-shot command) imports this module for its error and address types.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import posixpath
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    import asyncssh

NodeErrorKind = Literal[
    "refused", "timeout", "unreachable", "auth", "host_key", "closed", "command", "key", "in_use"
]
Progress = Callable[[int, int], None]

KEEPALIVE_S = 15.0
"""A keepalive every 15 s (3 unanswered = dropped), so a dead node surfaces as kind 'closed'."""


class NodeError(Exception):
    """Why talking to a node failed: a `kind` to act on and one clear sentence."""

    def __init__(self, kind: NodeErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: NodeErrorKind = kind
        self.message = message


@dataclass(frozen=True)
class NodeAddress:
    """Where a node is and how we log in to it."""

    host: str
    port: int
    user: str
    key_path: Path
    host_key: str | None = None
    """The pinned server host key 'ssh-ed25519 AAAA...' (type + base64, no comment); None = first
    contact (trust on first use: accept and report it)."""

    @property
    def where(self) -> str:
        """'host:port', for messages."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and how it exited (255 when it died of a signal)."""

    stdout: str
    stderr: str
    exit_status: int


class _HostKeyCheck:
    """Accepts only the pinned host key, and remembers the key the server presented."""

    def __init__(self, pinned: asyncssh.SSHKey) -> None:
        self.pinned = pinned
        self.presented: asyncssh.SSHKey | None = None

    def client(self) -> asyncssh.SSHClient:
        """The asyncssh client that applies this check (asyncssh is imported on first use)."""
        import asyncssh

        check = self

        class _Client(asyncssh.SSHClient):
            def validate_host_public_key(
                self, host: str, addr: str, port: int, key: asyncssh.SSHKey
            ) -> bool:
                check.presented = key
                return key.public_data == check.pinned.public_data

        return _Client()


def key_text(key: asyncssh.SSHKey) -> str:
    """A public key as 'type base64' (no comment): the form we pin and compare."""
    kind, data = key.export_public_key("openssh").decode().split()[:2]
    return f"{kind} {data}"


class NodeConnection:
    """One open SSH connection to a node; an async context manager that closes it on exit."""

    def __init__(self, address: NodeAddress, conn: asyncssh.SSHClientConnection) -> None:
        self.address = address
        self._conn = conn
        server_key = conn.get_server_host_key()
        assert server_key is not None  # set by every completed handshake
        self.host_key = key_text(server_key)
        """The server's host key 'type base64': what to pin after a first contact."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def run(self, command: str, *, timeout_s: float = 30.0) -> CommandResult:
        """Run `command` (no pty, stdin at EOF) and collect its output, within `timeout_s`.

        On a timeout (or cancellation) the channel is closed without waiting: OpenSSH keeps a
        session channel open until its command exits, and a command that forked may run on.
        """
        import asyncssh

        program = command.split(maxsplit=1)[0] if command.strip() else "(empty command)"
        try:
            process = await self._conn.create_process(
                command, stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace"
            )
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc, f"cannot run {program}") from exc
        try:
            done = await process.wait(timeout=timeout_s)
        except asyncssh.TimeoutError:
            raise NodeError(
                "timeout",
                f"{program} on {self.address.where} did not finish within {timeout_s:g} s.",
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc, f"cannot run {program}") from exc
        finally:
            process.close()
        if done.exit_status is None and done.exit_signal is None:
            raise self._closed("while a command ran")
        return CommandResult(
            stdout=str(done.stdout or ""),
            stderr=str(done.stderr or ""),
            exit_status=255 if done.exit_status is None else done.exit_status,
        )

    async def upload(self, local: Path, remote: str, progress: Progress | None = None) -> int:
        """Copy one local file to `remote` over SFTP, creating missing remote parent directories.

        Returns the bytes sent; `progress(done_bytes, total_bytes)` is called as they go.
        """
        import asyncssh

        size = await asyncio.to_thread(_upload_size, local)
        try:
            async with self._conn.start_sftp_client() as sftp:
                parent = posixpath.dirname(remote)
                if parent:
                    await sftp.makedirs(parent, exist_ok=True)
                await sftp.put(str(local), remote, progress_handler=_reporter(progress))
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc, f"uploading {local.name} to {remote} failed") from exc
        return size

    async def download(self, remote: str, local: Path, progress: Progress | None = None) -> int:
        """Copy the remote file `remote` to `local` over SFTP; returns the bytes received.

        The data lands in a hidden `.part` file beside `local` and is renamed into place only
        when complete, so a failed download never leaves a truncated file under the real name.
        """
        import asyncssh

        partial = await asyncio.to_thread(_download_target, local)
        try:
            async with self._conn.start_sftp_client() as sftp:
                await sftp.get(remote, str(partial), progress_handler=_reporter(progress))
            return await asyncio.to_thread(_move_into_place, partial, local)
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc, f"downloading {remote} to {local} failed") from exc
        finally:
            await asyncio.to_thread(partial.unlink, missing_ok=True)

    async def write_file(self, path: str, text: str, mode: int) -> None:
        """Write `text` (UTF-8) to `path` over SFTP with permission bits `mode`.

        Missing parent directories are made with mode 0700 (the node's `.gpushop` holds a token).
        The text goes to a temporary name created with `mode` (never readable wider) and is then
        renamed over `path`, atomically where the server has the posix-rename extension: a
        reader never sees half a file, and a script that is running keeps its old copy.
        """
        import asyncssh

        parent, name = posixpath.split(path)
        temp = posixpath.join(parent, f".{name}.{secrets.token_hex(4)}.tmp")
        attrs = asyncssh.SFTPAttrs(permissions=mode)
        try:
            async with self._conn.start_sftp_client() as sftp:
                if parent:
                    await sftp.makedirs(
                        parent, attrs=asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True
                    )
                try:
                    async with sftp.open(temp, "w", attrs=attrs) as remote:
                        await remote.write(text)
                    await sftp.chmod(temp, mode)  # the server's umask may have narrowed it
                    await _replace(sftp, temp, path)
                except BaseException:
                    with contextlib.suppress(asyncssh.Error, OSError):
                        await sftp.remove(temp)
                    raise
        except (asyncssh.Error, OSError) as exc:
            raise self._failure(exc, f"writing {path} failed") from exc

    @contextlib.asynccontextmanager
    async def forward(self, port: int, local_port: int = 0) -> AsyncIterator[int]:
        """Forward `local_port` (0: a free one) on 127.0.0.1 to 127.0.0.1:`port` on the node;
        yields the local port.

        Each local connection becomes an SSH direct-tcpip channel, so a server that listens only
        on the node's loopback is reachable without exposing it. A port nothing listens on shows
        as a connection the node closes at once, not as an error here.
        """
        import asyncssh

        try:
            listener = await self._conn.forward_local_port(
                "127.0.0.1", local_port, "127.0.0.1", port
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NodeError(
                    "in_use", f"local port {local_port} is already in use on this machine"
                ) from exc
            raise self._failure(exc, f"forwarding to port {port} failed") from exc
        except asyncssh.Error as exc:
            raise self._failure(exc, f"forwarding to port {port} failed") from exc
        try:
            yield int(listener.get_port())
        finally:
            listener.close()
            await listener.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, by either side (a node that went away)."""
        await self._conn.wait_closed()

    async def aclose(self) -> None:
        """Close the connection and wait until it is closed."""
        self._conn.close()
        await self._conn.wait_closed()

    def _closed(self, when: str) -> NodeError:
        return NodeError("closed", f"the SSH connection to {self.address.where} dropped {when}.")

    def _failure(self, exc: BaseException, doing: str) -> NodeError:
        """A dropped connection is 'closed'; anything else is the command's (or file's) fault."""
        import asyncssh

        if (
            isinstance(exc, asyncssh.DisconnectError | asyncssh.SFTPConnectionLost)
            or self._conn.is_closed()
        ):
            return self._closed(f"({doing})")
        if isinstance(exc, asyncssh.ChannelOpenError):
            return NodeError("command", f"{doing}: the node refused a channel ({exc.reason}).")
        if isinstance(exc, asyncssh.SFTPError):
            return NodeError("command", f"{doing}: {exc.reason}.")
        if isinstance(exc, OSError):
            return NodeError("command", f"{doing}: {exc.strerror or exc}.")
        return NodeError("command", f"{doing}: {exc}.")


async def _replace(sftp: asyncssh.SFTPClient, source: str, target: str) -> None:
    """Rename `source` over `target`: atomic with posix-rename; otherwise remove, then rename."""
    import asyncssh

    try:
        await sftp.posix_rename(source, target)
    except asyncssh.SFTPOpUnsupported:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(target)
        await sftp.rename(source, target)


def _upload_size(local: Path) -> int:
    """The size of the one regular file `local`; NodeError('command') for anything else."""
    if local.is_dir():
        raise NodeError(
            "command", f"{local} is a directory; upload sends one file (archive it first)."
        )
    try:
        return local.stat().st_size
    except OSError as exc:
        raise NodeError("command", f"cannot read {local}: {exc.strerror}.") from exc


def _download_target(local: Path) -> Path:
    """Check `local` can be written to and make its folder; returns the `.part` file beside it."""
    if local.is_dir():
        raise NodeError("command", f"{local} is a directory; name the file to download to.")
    try:
        local.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeError("command", f"cannot create {local.parent}: {exc.strerror}.") from exc
    return local.with_name(f".{local.name}.part")


def _move_into_place(partial: Path, local: Path) -> int:
    partial.replace(local)
    return local.stat().st_size


def _reporter(progress: Progress | None) -> Callable[[bytes, bytes, int, int], None] | None:
    """asyncssh's progress_handler signature, reduced to (done_bytes, total_bytes)."""
    if progress is None:
        return None
    report = progress

    def handler(_src: bytes, _dst: bytes, done: int, total: int) -> None:
        report(done, total)

    return handler


def _load_key(path: Path) -> asyncssh.SSHKey:
    import asyncssh

    try:
        return asyncssh.read_private_key(path)
    except OSError as exc:
        raise NodeError("key", f"cannot read the private key {path}: {exc.strerror}.") from exc
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise NodeError(
            "key", f"{path} is not a usable private key (an unencrypted OpenSSH key is needed)."
        ) from exc


def _host_key_options(check: _HostKeyCheck | None) -> dict[str, Any]:
    """asyncssh options for trust on first use (no check) or for a pinned host key.

    With a pin, the pinned key's algorithms are asked for first and every other one after them,
    so a server that lost its old key still presents one, which is then reported as changed.
    """
    if check is None:
        return {"known_hosts": None}
    algorithms = ",".join(a.decode() for a in check.pinned.sig_algorithms)
    return {
        "known_hosts": ([], [], []),
        "client_factory": check.client,
        "server_host_key_algs": "^" + algorithms,
    }


def _pinned_key(address: NodeAddress) -> asyncssh.SSHKey | None:
    import asyncssh

    if address.host_key is None:
        return None
    try:
        return asyncssh.import_public_key(" ".join(address.host_key.split()[:2]))
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise NodeError(
            "host_key", f"the host key pinned for {address.where} is not a valid public key."
        ) from exc


async def connect(address: NodeAddress, *, timeout_s: float) -> NodeConnection:
    """Open an SSH connection (TCP, handshake, public-key auth) within `timeout_s` in all.

    With `address.host_key` set, the server must present exactly that key; with None, any key
    is accepted and exposed as `host_key` of the result (trust on first use).
    """
    import asyncssh

    where = address.where
    key = await asyncio.to_thread(_load_key, address.key_path)
    pinned = _pinned_key(address)
    check = None if pinned is None else _HostKeyCheck(pinned)
    try:
        async with asyncio.timeout(timeout_s):
            conn = await asyncssh.connect(
                address.host,
                address.port,
                username=address.user,
                client_keys=[key],
                config=None,
                agent_path=None,
                agent_forwarding=False,
                public_key_auth=True,
                password_auth=False,
                kbdint_auth=False,
                gss_auth=False,
                host_based_auth=False,
                keepalive_interval=KEEPALIVE_S,
                keepalive_count_max=3,
                x509_trusted_certs=None,
                **_host_key_options(check),
            )
    except TimeoutError as exc:
        raise NodeError(
            "timeout", f"connecting to {where} timed out after {timeout_s:g} s."
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise NodeError(
            "auth",
            f"{address.user}@{where} did not accept the key {address.key_path.name} "
            "(permission denied).",
        ) from exc
    except asyncssh.HostKeyNotVerifiable as exc:
        assert check is not None  # without a pin every host key is accepted
        now = check.presented.get_fingerprint() if check.presented else "an unreadable key"
        raise NodeError(
            "host_key",
            f"host key of {where} changed since first contact (pinned "
            f"{check.pinned.get_fingerprint()}, now {now}); refusing to connect.",
        ) from exc
    except asyncssh.DisconnectError as exc:
        raise NodeError(
            "unreachable", f"SSH with {where} failed before login ({exc.reason})."
        ) from exc
    except ConnectionRefusedError as exc:
        raise NodeError("refused", f"{where} refused the connection (nothing listens).") from exc
    except socket.gaierror as exc:
        raise NodeError("unreachable", f"cannot resolve {address.host}: {exc.strerror}.") from exc
    except OSError as exc:
        raise NodeError("unreachable", f"cannot reach {where}: {exc.strerror or exc}.") from exc
    return NodeConnection(address, conn)
