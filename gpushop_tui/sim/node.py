"""Simulated GPU nodes: one real SSH server (asyncssh) on loopback per instance.

Each node reads its `SimInstance` live: while the instance is not running, a TCP connection is
dropped before the SSH handshake (like a port that is not open yet); public-key auth accepts
exactly `ssh_user` with a key in `authorized_keys` (read at each attempt, so a key attached
through an API works at once) and only after `ssh_refuse_until`. A stop ends the workload and
drops connections but keeps the node's files and host key. Exec requests are answered by
a tiny interpreter that knows what a GPU box is asked (`echo ok`, `nvidia-smi`, the dpkg lock
check, `df`, `who`, ...); a shell request gets the same interpreter one line at a time, so the
ssh command the demo prints logs in. SFTP is served from a per-instance scratch directory.

`sh .gpushop/launch.sh` starts the workload described in that directory (see `sim/llm.py`);
direct-tcpip channels are allowed only to 127.0.0.1 on the workload's port, once it serves.
`sh .gpushop/watchdog.sh start` registers the node's deadline watchdog in the world, from the
`watchdog.env`, `deadline` and `instance_key` files gpushop wrote there (see
`World.fire_watchdogs`); a Vast node uses its container's instance key first, as the script
uses `$CONTAINER_API_KEY`.

An instance whose `extra["publish"]` lists node ports (a provider API records the ports a create
asked to publish) gets one loopback listener per port, its real port kept in
`extra["published"]` for the API to report. A connection there reaches the workload's server
only while the instance runs and a server listening on every address serves on that port;
otherwise it is reset at once, as Docker's proxy does when nothing listens in the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import shutil
import tempfile
import textwrap
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast

import asyncssh

from gpushop_tui.sim.llm import STATE_DIR, Workload, launch
from gpushop_tui.sim.world import INSTANCE_KEY, SimInstance, SimWatchdog, WatchdogAction, World

DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock")
DPKG_PID = 2417
KERNEL = "5.15.0-105-generic"

Result = tuple[str, str, int]


def smi_name(name: str, vram_mb: int) -> str:
    """The name `nvidia-smi` reports for one of our GPU names."""
    key = name.upper().replace("_", " ").strip()
    if re.fullmatch(r"(GEFORCE )?RTX \d{4}( TI| SUPER)*", key):
        return "NVIDIA GeForce " + name.removeprefix("GeForce ")
    if key.startswith("GTX"):
        return "NVIDIA GeForce " + name
    if key.startswith("H100"):
        if "PCIE" in key:
            return "NVIDIA H100 PCIe"
        if "NVL" in key:
            return "NVIDIA H100 NVL"
        return "NVIDIA H100 80GB HBM3"
    if key.startswith("A100"):
        size = "80GB" if vram_mb > 48000 else "40GB"
        return f"NVIDIA A100 {size} PCIe" if "PCIE" in key else f"NVIDIA A100-SXM4-{size}"
    if key.replace(" ", "") in ("RTX6000ADA", "RTX6000ADAGENERATION"):
        return "NVIDIA RTX 6000 Ada Generation"
    if key == "RTX 8000":
        return "Quadro RTX 8000"
    if key in ("V100", "T4", "P100", "K80"):
        return "Tesla " + name
    if key.startswith("NVIDIA ") or key.startswith("TESLA "):
        return name
    return "NVIDIA " + name


def _tdp(name: str) -> int:
    key = name.upper()
    for part, watts in (("H200", 700), ("B200", 1000), ("H100", 700), ("A100", 400)):
        if part in key:
            return watts
    return 450 if "4090" in key or "5090" in key else 300


@dataclass
class _Session:
    """One authenticated SSH connection."""

    conn: asyncssh.SSHServerConnection
    user: str
    peer: tuple[str, int]
    since: float


@dataclass
class _Node:
    """What runs for one attached instance."""

    instance: SimInstance
    key: asyncssh.SSHKey
    root: Path
    acceptor: asyncssh.SSHAcceptor | None = None
    conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)
    sessions: dict[int, _Session] = field(default_factory=dict)
    workload: Workload | None = None
    launching: asyncio.Lock = field(default_factory=asyncio.Lock)
    published: list[asyncio.AbstractServer] = field(default_factory=list)
    passing: set[asyncio.StreamWriter] = field(default_factory=set)
    """The connections through published ports, open right now."""

    def live_workload(self, now: float) -> Workload | None:
        """The launched workload while its process lives, with its phase file brought up to date."""
        workload = self.workload
        if workload is None or not workload.running(self.instance):
            return None
        workload.sync(self.root, now)
        return workload


class _Gate:
    """A tunnel object for `asyncssh.listen`: refuses TCP connections while not running."""

    def __init__(self, world: World, instance: SimInstance, port: int) -> None:
        self.world = world
        self.instance = instance
        self.port = port

    async def create_server(
        self, session_factory: Callable[[str, int], Any], listen_host: str, listen_port: int
    ) -> asyncio.AbstractServer:
        def factory() -> asyncio.BaseProtocol:
            if self.instance.phase(self.world.now()) != "running":
                return _Drop()
            return session_factory(listen_host, listen_port)

        loop = asyncio.get_running_loop()
        try:
            return await loop.create_server(factory, listen_host, self.port, reuse_address=True)
        except OSError:
            if not self.port:
                raise
            return await loop.create_server(factory, listen_host, 0, reuse_address=True)


def read_watchdog(instance: SimInstance, root: Path) -> SimWatchdog:
    """The watchdog `watchdog.sh start` would run on the node whose home is `root`, from the
    files gpushop wrote under `.gpushop/`; ValueError names what is missing or invalid."""
    folder = root / STATE_DIR
    try:
        lines = (folder / "watchdog.env").read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {STATE_DIR}/watchdog.env") from exc
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    action = env.get("GPUSHOP_ACTION")
    if not env.get("GPUSHOP_SESSION"):
        raise ValueError("GPUSHOP_SESSION is not set")
    if action not in ("destroy", "stop", "poweroff"):
        raise ValueError(f"GPUSHOP_ACTION must be destroy, stop or poweroff, not {action!r}")
    if action != "poweroff" and not (env.get("GPUSHOP_API") and env.get("GPUSHOP_INSTANCE")):
        raise ValueError(f"{action} needs GPUSHOP_API and GPUSHOP_INSTANCE")
    try:
        deadline = int((folder / "deadline").read_text().strip())
    except (OSError, ValueError) as exc:
        raise ValueError(f"no readable deadline in {STATE_DIR}/deadline") from exc
    key: str | None = instance.extra.get(INSTANCE_KEY)
    if key is None:
        with contextlib.suppress(OSError):
            key = (folder / "instance_key").read_text().strip() or None
    return SimWatchdog(
        provider=instance.provider,
        instance_id=instance.id,
        root=root,
        action=cast(WatchdogAction, action),
        deadline=float(deadline),
        api=env.get("GPUSHOP_API"),
        target=env.get("GPUSHOP_INSTANCE"),
        key=key,
    )


class _Exit(Exception):
    """`exit N` inside a command line."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Drop(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()


class _Server(asyncssh.SSHServer):
    """Auth policy of one node, read live from its instance."""

    def __init__(self, nodes: SshNodes, node: _Node) -> None:
        self._nodes = nodes
        self._node = node
        self._conn: asyncssh.SSHServerConnection | None = None
        self._user = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._node.conns.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._node.conns.discard(self._conn)
            self._node.sessions.pop(id(self._conn), None)

    def begin_auth(self, username: str) -> bool:
        self._user = username
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        instance = self._node.instance
        now = self._nodes.world.now()
        if username != instance.ssh_user or now < instance.ssh_refuse_until:
            return False
        if instance.phase(now) != "running":
            return False
        return any(_same_key(line, key) for line in list(instance.authorized_keys))

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]] | bool:
        """direct-tcpip: only to the node's own workload port, and only while it serves.

        Anything else is refused as a closed port would be (OPEN_CONNECT_FAILED).
        """
        workload = self._node.live_workload(self._nodes.world.now())
        if self._conn is None or workload is None or dest_host not in ("127.0.0.1", "localhost"):
            return False
        port = workload.forward_port(dest_port, self._nodes.world.now())
        if port is None:
            return False
        forward = self._conn.forward_connection("127.0.0.1", port)
        return cast(Awaitable[asyncssh.SSHTCPSession[bytes]], forward)

    def auth_completed(self) -> None:
        if self._conn is None:
            return
        peer = self._conn.get_extra_info("peername") or ("127.0.0.1", 0)
        self._node.sessions[id(self._conn)] = _Session(
            self._conn, self._user, (str(peer[0]), int(peer[1])), self._nodes.world.now()
        )


def _same_key(line: str, key: asyncssh.SSHKey) -> bool:
    line = line.strip()
    if not line or line.startswith("#"):
        return False
    parts = line.split()
    # Skip an options prefix (`from="...",no-pty ssh-ed25519 AAAA...`) by trying each start.
    for start in range(len(parts)):
        if parts[start].startswith(("ssh-", "ecdsa-", "sk-")):
            with contextlib.suppress(asyncssh.KeyImportError, ValueError):
                return asyncssh.import_public_key(" ".join(parts[start:])).public_data == (
                    key.public_data
                )
    return False


class SshNodes:
    """The SSH endpoints of every instance of a world (implements `world.NodeHost`)."""

    def __init__(self, world: World, host_key_dir: Path | None = None) -> None:
        self.world = world
        self.host_key_dir = host_key_dir
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._keys: dict[tuple[str, str], asyncssh.SSHKey] = {}
        self._roots: dict[tuple[str, str], Path] = {}

    async def attach(self, instance: SimInstance) -> int:
        """Start the node of `instance` on 127.0.0.1 (its old port if free); return the port."""
        ident = (instance.provider, instance.id)
        node = self._nodes.get(ident)
        if node is not None and node.acceptor is not None:
            node.instance = instance
            return node.acceptor.get_port()
        node = _Node(instance, self._host_key(instance), self._root(instance))
        gate = _Gate(self.world, instance, instance.ssh_port or 0)
        node.acceptor = await asyncssh.listen(
            host="127.0.0.1",
            port=instance.ssh_port or 0,
            tunnel=gate,
            server_host_keys=[node.key],
            server_factory=lambda: _Server(self, node),
            process_factory=lambda process: self._run(node, process),
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(node.root).encode()),
            allow_scp=True,
            encoding="utf-8",
            login_timeout=30,
        )
        self._nodes[ident] = node
        await self._publish(node)
        return node.acceptor.get_port()

    async def detach(self, instance: SimInstance) -> None:
        """Stop listening for `instance`, drop its open connections and end its workload."""
        node = self._nodes.pop((instance.provider, instance.id), None)
        if node is None:
            return
        if node.acceptor is not None:
            node.acceptor.close()
        for server in node.published:
            server.close()
        node.published.clear()
        await self._halt(node)
        if node.acceptor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(node.acceptor.wait_closed(), 5)

    async def power_off(self, instance: SimInstance) -> None:
        """The node of `instance` is powered off: its connections drop and its workload ends;
        it keeps listening (refusing while the instance is not running), its files (`root`)
        and its host key, so a start brings the same machine back."""
        node = self._nodes.get((instance.provider, instance.id))
        if node is not None:
            await self._halt(node)

    @staticmethod
    async def _halt(node: _Node) -> None:
        """Drop every open connection of `node` (SSH and through published ports) and end its
        workload's process."""
        for writer in list(node.passing):
            writer.transport.abort()
        for conn in list(node.conns):
            conn.abort()
        node.conns.clear()
        node.sessions.clear()
        if node.workload is not None:
            await node.workload.stop()
            node.workload = None

    def connections(self, instance: SimInstance) -> int:
        """Authenticated SSH sessions open on the node right now."""
        node = self._nodes.get((instance.provider, instance.id))
        return len(node.sessions) if node else 0

    def workload(self, instance: SimInstance) -> Workload | None:
        """The workload launched on the node (running, failed or gone with a reboot), if any."""
        node = self._nodes.get((instance.provider, instance.id))
        return node.workload if node else None

    def port(self, instance: SimInstance) -> int | None:
        """The port the node listens on, or None if it is not attached."""
        node = self._nodes.get((instance.provider, instance.id))
        return node.acceptor.get_port() if node and node.acceptor else None

    async def aclose(self) -> None:
        """Stop every node and remove the scratch directories."""
        for node in list(self._nodes.values()):
            await self.detach(node.instance)
        for root in self._roots.values():
            shutil.rmtree(root, ignore_errors=True)
        self._roots.clear()

    # -- published ports -----------------------------------------------------------------

    async def _publish(self, node: _Node) -> None:
        """Listen on loopback for each port the instance publishes (on its old port if free),
        recording where in `extra["published"]` (node port -> real port, as JSON keys)."""
        known: dict[str, int] = node.instance.extra.get("published", {})
        published: dict[str, int] = {}
        for port in node.instance.extra.get("publish", []):

            async def passing(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int = port
            ) -> None:
                await self._pass(node, port, reader, writer)

            try:
                server = await asyncio.start_server(passing, "127.0.0.1", known.get(str(port), 0))
            except OSError:
                server = await asyncio.start_server(passing, "127.0.0.1", 0)
            node.published.append(server)
            published[str(port)] = server.sockets[0].getsockname()[1]
        if published:
            node.instance.extra["published"] = published

    async def _pass(
        self, node: _Node, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One connection to a published `port`: spliced to the workload's server when it
        listens there for the outside, else reset."""
        now = self.world.now()
        running = node.instance.phase(now) == "running"
        workload = node.live_workload(now) if running else None
        target = workload.published_port(port, now) if workload is not None else None
        if target is None:
            writer.transport.abort()
            return
        try:
            inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.transport.abort()
            return
        node.passing.update((writer, inner_writer))
        try:
            await _splice(reader, writer, inner_reader, inner_writer)
        finally:
            node.passing.difference_update((writer, inner_writer))

    # -- keys and files -------------------------------------------------------------------

    def _host_key(self, instance: SimInstance) -> asyncssh.SSHKey:
        ident = (instance.provider, instance.id)
        if ident in self._keys:
            return self._keys[ident]
        if self.host_key_dir is None:
            key = asyncssh.generate_private_key("ssh-ed25519")
        else:
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{instance.provider}-{instance.id}")
            path = self.host_key_dir / f"{safe}.key"
            if path.exists():
                key = asyncssh.read_private_key(path)
            else:
                self.host_key_dir.mkdir(parents=True, exist_ok=True)
                key = asyncssh.generate_private_key("ssh-ed25519")
                scratch = path.with_suffix(".tmp")
                scratch.touch(mode=0o600)
                key.write_private_key(scratch)
                scratch.replace(path)
        self._keys[ident] = key
        return key

    def _root(self, instance: SimInstance) -> Path:
        ident = (instance.provider, instance.id)
        if ident not in self._roots:
            prefix = re.sub(r"[^A-Za-z0-9_.-]", "_", f"gpushop-node-{instance.provider}-")
            self._roots[ident] = Path(tempfile.mkdtemp(prefix=prefix))
        return self._roots[ident]

    # -- commands -------------------------------------------------------------------------

    async def _run(self, node: _Node, process: asyncssh.SSHServerProcess[str]) -> None:
        try:
            if node.instance.phase(self.world.now()) != "running":
                process.exit(255)
                process.channel.get_connection().close()
                return
            command = process.command
            if command is None:
                process.exit(await _Shell(self, node).interact(process))
                return
            out, err, rc = await _Shell(self, node).run(command)
            if out:
                process.stdout.write(out)
            if err:
                process.stderr.write(err)
            process.exit(rc)
        except (asyncssh.Error, OSError, BrokenPipeError):
            with contextlib.suppress(Exception):
                process.exit(255)


async def _splice(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until both sides are done (an end passed on as EOF); an error on
    either side ends both."""

    async def copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except OSError:
            a_writer.transport.abort()
            b_writer.transport.abort()

    try:
        await asyncio.gather(copy(a_reader, b_writer), copy(b_reader, a_writer))
    finally:
        a_writer.close()
        b_writer.close()


async def _read_line(process: asyncssh.SSHServerProcess[str]) -> str:
    """The next input line, "" at EOF; a resize or a signal does not end the wait."""
    while True:
        try:
            return await process.stdin.readline()
        except (asyncssh.TerminalSizeChanged, asyncssh.SignalReceived):
            continue


_REDIRECT = re.compile(r"\s*(?:[12]?>>?\s*/dev/null|2>&1|>&2|&>\s*/dev/null)")


class _Shell:
    """A tiny `bash -c`: `;`, `&&`, `||`, pipes into a few filters, and GPU-box commands."""

    def __init__(self, nodes: SshNodes, node: _Node) -> None:
        self.nodes = nodes
        self.node = node
        self.i = node.instance
        self.commands: dict[str, Callable[[list[str], str], Awaitable[Result]]] = {
            "echo": self._echo,
            "true": self._const(0),
            ":": self._const(0),
            "false": self._const(1),
            "exit": self._exit,
            "logout": self._exit,
            "nvidia-smi": self._nvidia_smi,
            "fuser": self._fuser,
            "df": self._df,
            "who": self._who,
            "w": self._who,
            "ss": self._ss,
            "hostname": self._hostname,
            "date": self._date,
            "uname": self._uname,
            "whoami": self._whoami,
            "nproc": self._simple("32\n"),
            "uptime": self._uptime,
            "dmesg": self._simple(""),
            "free": self._free,
            "sleep": self._sleep,
            "cat": self._cat,
            "ls": self._ls,
            "mkdir": self._mkdir,
            "grep": self._grep,
            "head": self._head,
            "tail": self._tail,
            "wc": self._wc,
            "sh": self._sh,
            "bash": self._sh,
        }

    async def run(self, command: str) -> Result:
        """Run a command line; returns (stdout, stderr, exit status)."""
        out: list[str] = []
        err: list[str] = []
        try:
            rc = await self._execute(command, out, err)
        except _Exit as stop:
            rc = stop.code
        return "".join(out), "".join(err), rc

    async def interact(self, process: asyncssh.SSHServerProcess[str]) -> int:
        """Serve a login shell until `exit`, `logout` or EOF; returns its exit status.

        With a PTY it greets and prompts like a rented box (asyncssh's line editor echoes and
        edits the input) and, as on a terminal, errors share the output stream; without one it
        reads commands silently, as `ssh host < script` expects.
        """
        tty = process.get_terminal_type() is not None
        errors = process.stdout if tty else process.stderr
        prompt = f"{self.i.ssh_user}@{self._host()}:~{'#' if self.i.ssh_user == 'root' else '$'} "
        if tty:
            process.stdout.write(self._banner())
        rc = 0
        while True:
            if tty:
                process.stdout.write(prompt)
            try:
                line = await _read_line(process)
            except asyncssh.BreakReceived:
                process.stdout.write("^C\n")
                rc = 130
                continue
            out: list[str] = []
            err: list[str] = []
            try:
                rc = await self._execute(line, out, err) if line else rc
            except _Exit as stop:
                rc, line = stop.code, ""
            process.stdout.write("".join(out))
            errors.write("".join(err))
            if not line:
                break
        if tty:
            process.stdout.write("logout\n")
        return rc

    def _banner(self) -> str:
        """The login greeting: which simulated box this is and what it can answer."""
        i = self.i
        known = ", ".join(name for name in sorted(self.commands) if name[0].isalpha())
        about = (
            f"gpushop simulated node: {i.provider} instance {i.id}, "
            f"{i.node_gpu_count}x {i.node_gpu_name}. It answers {known}."
        )
        return (
            f"Welcome to Ubuntu 22.04.4 LTS (GNU/Linux {KERNEL} x86_64)\n\n"
            + textwrap.fill(about, 78)
            + "\n\n"
        )

    async def _execute(self, command: str, out: list[str], err: list[str]) -> int:
        """Run a command line, appending to `out` and `err`; `exit` raises `_Exit`."""
        self.node.live_workload(self._now())
        command = _REDIRECT.sub(" ", command)
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError as exc:
            err.append(f"bash: line 1: syntax error: {exc}\n")
            return 2
        rc = 0
        op = ";"
        pipeline: list[list[str]] = [[]]
        for token in [*tokens, ";"]:
            if token in (";", "&&", "||", "&"):
                if any(pipeline):
                    skip = (op == "&&" and rc != 0) or (op == "||" and rc == 0)
                    if not skip:
                        o, e, rc = await self._pipeline(pipeline)
                        out.append(o)
                        err.append(e)
                op = token
                pipeline = [[]]
            elif token == "|":
                pipeline.append([])
            else:
                pipeline[-1].append(token)
        return rc

    async def _pipeline(self, stages: list[list[str]]) -> Result:
        data = ""
        err: list[str] = []
        rc = 0
        for argv in stages:
            if not argv:
                return "", "bash: line 1: syntax error near unexpected token `|'\n", 2
            data, e, rc = await self._one(argv, data)
            err.append(e)
        return data, "".join(err), rc

    async def _one(self, argv: list[str], stdin: str) -> Result:
        while argv and argv[0] in ("sudo", "-n", "-E", "env", "nohup", "timeout"):
            argv = argv[1:] if argv[0] != "timeout" else argv[2:]
        if not argv:
            return "", "", 0
        name = argv[0].rsplit("/", 1)[-1] if argv[0].startswith("/") else argv[0]
        handler = self.commands.get(name)
        if handler is None:
            return "", f"bash: line 1: {argv[0]}: command not found\n", 127
        return await handler(argv[1:], stdin)

    def _now(self) -> float:
        return self.nodes.world.now()

    @staticmethod
    def _const(rc: int) -> Callable[[list[str], str], Awaitable[Result]]:
        async def handler(args: list[str], stdin: str) -> Result:
            return "", "", rc

        return handler

    @staticmethod
    def _simple(text: str) -> Callable[[list[str], str], Awaitable[Result]]:
        async def handler(args: list[str], stdin: str) -> Result:
            return text, "", 0

        return handler

    async def _exit(self, args: list[str], stdin: str) -> Result:
        try:
            code = int(args[0]) if args else 0
        except ValueError:
            code = 2
        raise _Exit(code & 0xFF)

    async def _echo(self, args: list[str], stdin: str) -> Result:
        newline = "\n"
        if args and args[0] == "-n":
            newline, args = "", args[1:]
        return " ".join(args) + newline, "", 0

    async def _date(self, args: list[str], stdin: str) -> Result:
        """`date +%s` (the node's clock: the world's, plus any `clock_skew_s` fault)."""
        if args != ["+%s"]:
            return "", "date: the simulated node answers only `date +%s`\n", 1
        skew = self.nodes.world.faults.node(self.i.provider).clock_skew_s
        return f"{int(self._now() + skew)}\n", "", 0

    async def _whoami(self, args: list[str], stdin: str) -> Result:
        return self.i.ssh_user + "\n", "", 0

    def _host(self) -> str:
        return re.sub(r"[^a-z0-9-]", "-", f"{self.i.provider}-{self.i.id}".lower())

    async def _hostname(self, args: list[str], stdin: str) -> Result:
        return self._host() + "\n", "", 0

    async def _uname(self, args: list[str], stdin: str) -> Result:
        if "-a" in args:
            line = (
                f"Linux {self._host()} {KERNEL} #115-Ubuntu SMP Mon Apr 15 09:52:04 UTC 2024 "
                "x86_64 x86_64 x86_64 GNU/Linux"
            )
        elif "-r" in args:
            line = KERNEL
        elif "-m" in args:
            line = "x86_64"
        else:
            line = "Linux"
        return line + "\n", "", 0

    async def _uptime(self, args: list[str], stdin: str) -> Result:
        up = max(0, int(self._now() - self.i.created_at - self.i.boot_s))
        clock = datetime.fromtimestamp(self._now(), UTC).strftime("%H:%M:%S")
        users = len(self.node.sessions)
        return (
            f" {clock} up {up // 60} min,  {users} user{'s' if users != 1 else ''},  "
            "load average: 0.08, 0.03, 0.01\n",
            "",
            0,
        )

    async def _sleep(self, args: list[str], stdin: str) -> Result:
        try:
            seconds = float(args[0].rstrip("s")) if args else 0.0
        except ValueError:
            return "", f"sleep: invalid time interval '{args[0]}'\n", 1
        await self.nodes.world.clock.sleep(seconds)
        return "", "", 0

    # GPU ---------------------------------------------------------------------------------

    def _gpu_fields(self, index: int) -> dict[str, tuple[str, str]]:
        """Per field: (value with units, value without units)."""
        i = self.i
        util = max(0, min(100, int(i.gpu_util)))
        used = 1 if util == 0 else int(i.vram_mb * min(0.95, 0.1 + util / 110))
        temp = 32 + util * 45 // 100 + index
        tdp = _tdp(i.node_gpu_name)
        power = 20.0 + (tdp - 20.0) * util / 100
        name = smi_name(i.node_gpu_name, i.vram_mb)
        bus = f"00000000:{0x18 + index * 0x10:02X}:00.0"
        seed = zlib.crc32(f"{i.provider}:{i.id}:{index}".encode())
        uuid = f"GPU-{seed:08x}-5a1e-4c1d-9e1b-{index:012x}"
        return {
            "name": (name, name),
            "gpu_name": (name, name),
            "index": (str(index), str(index)),
            "count": (str(i.node_gpu_count), str(i.node_gpu_count)),
            "memory.total": (f"{i.vram_mb} MiB", str(i.vram_mb)),
            "memory.used": (f"{used} MiB", str(used)),
            "memory.free": (f"{i.vram_mb - used} MiB", str(i.vram_mb - used)),
            "utilization.gpu": (f"{util} %", str(util)),
            "utilization.memory": (f"{util // 2} %", str(util // 2)),
            "temperature.gpu": (str(temp), str(temp)),
            "power.draw": (f"{power:.2f} W", f"{power:.2f}"),
            "power.limit": (f"{tdp:.2f} W", f"{tdp:.2f}"),
            "driver_version": (i.driver, i.driver),
            "uuid": (uuid, uuid),
            "gpu_uuid": (uuid, uuid),
            "pci.bus_id": (bus, bus),
            "fan.speed": (f"{30 + util // 3} %", str(30 + util // 3)),
            "pstate": ("P0" if util else "P8", "P0" if util else "P8"),
            "compute_cap": ("8.9", "8.9"),
        }

    _HEADERS: ClassVar[dict[str, str]] = {
        "memory.total": "memory.total [MiB]",
        "memory.used": "memory.used [MiB]",
        "memory.free": "memory.free [MiB]",
        "utilization.gpu": "utilization.gpu [%]",
        "utilization.memory": "utilization.memory [%]",
        "power.draw": "power.draw [W]",
        "power.limit": "power.limit [W]",
        "fan.speed": "fan.speed [%]",
    }

    async def _nvidia_smi(self, args: list[str], stdin: str) -> Result:
        if self.i.node_gpu_count <= 0:
            return "", "No devices were found\n", 6
        query = ""
        fmt = ""
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg.startswith("--query-gpu="):
                query = arg.split("=", 1)[1]
            elif arg in ("--query-gpu", "-q-gpu") and rest:
                query = rest.pop(0)
            elif arg.startswith("--format="):
                fmt = arg.split("=", 1)[1]
            elif arg == "--format" and rest:
                fmt = rest.pop(0)
            elif arg in ("-L", "--list-gpus"):
                lines = [
                    f"GPU {n}: {smi_name(self.i.node_gpu_name, self.i.vram_mb)} "
                    f"(UUID: {self._gpu_fields(n)['uuid'][0]})"
                    for n in range(self.i.node_gpu_count)
                ]
                return "\n".join(lines) + "\n", "", 0
            elif arg.startswith("-i") or arg.startswith("--id") or arg.startswith("-l"):
                continue
            else:
                return "", f"Invalid combination of input arguments: {arg}\n", 2
        if not query:
            return self._smi_table(), "", 0
        if "csv" not in fmt:
            return "", 'Format must be specified with "--format=csv"\n', 2
        opts = set(fmt.split(","))
        fields = [f.strip() for f in query.split(",") if f.strip()]
        first = self._gpu_fields(0)
        for f in fields:
            if f not in first:
                return "", f'Field "{f}" is not a valid field to query.\n\n', 2
        units = 1 if "nounits" in opts else 0
        lines = []
        if "noheader" not in opts:
            lines.append(", ".join(self._HEADERS.get(f, f) if not units else f for f in fields))
        for n in range(self.i.node_gpu_count):
            values = self._gpu_fields(n)
            lines.append(", ".join(values[f][units] for f in fields))
        return "\n".join(lines) + "\n", "", 0

    def _smi_table(self) -> str:
        i = self.i
        stamp = datetime.fromtimestamp(self._now(), UTC).strftime("%a %b %d %H:%M:%S %Y")
        cuda = f"{i.node_cuda:.1f}"
        full = "+" + "-" * 89 + "+"
        cols = "+" + "+".join("-" * w for w in (41, 24, 22)) + "+"

        def wide(text: str) -> str:
            return f"| {text:<87} |"

        def row(a: str, b: str, c: str) -> str:
            return f"| {a:<39} | {b:>22} | {c:>20} |"

        rows = [
            stamp,
            full,
            wide(f"NVIDIA-SMI {i.driver:<22} Driver Version: {i.driver:<14} CUDA Version: {cuda}"),
            cols.replace("+", "|", 1)[:-1] + "|",
            row(
                "GPU  Name                 Persistence-M",
                "Bus-Id          Disp.A",
                "Volatile Uncorr. ECC",
            ),
            row("Fan  Temp   Perf          Pwr:Usage/Cap", "Memory-Usage", "GPU-Util  Compute M."),
            row("", "", "MIG M."),
            "|" + "|".join("=" * w for w in (41, 24, 22)) + "|",
        ]
        for n in range(i.node_gpu_count):
            v = self._gpu_fields(n)
            name = v["name"][0][:27]
            power = f"{float(v['power.draw'][1]):.0f}W / {float(v['power.limit'][1]):.0f}W"
            memory = f"{v['memory.used'][1]}MiB / {v['memory.total'][1]}MiB"
            rows += [
                row(f"{n:>3}  {name:<28}{'On':>6}", f"{v['pci.bus_id'][0]} Off", "Off"),
                row(
                    f"{v['fan.speed'][0]:>4} {v['temperature.gpu'][0]:>4}C   {v['pstate'][0]:<4}"
                    f"{power:>19}",
                    memory,
                    f"{v['utilization.gpu'][0]}      Default",
                ),
                row("", "", "N/A"),
                cols,
            ]
        rows += [
            "",
            full,
            wide("Processes:"),
            wide(f"{' GPU   GI   CI        PID   Type   Process name':<77}GPU Memory"),
            wide(f"{'       ID   ID':<77}Usage"),
            "|" + "=" * 89 + "|",
            wide(" No running processes found"),
            full,
        ]
        return "\n".join(rows) + "\n"

    # system --------------------------------------------------------------------------------

    async def _fuser(self, args: list[str], stdin: str) -> Result:
        paths = [a for a in args if not a.startswith("-")]
        if not paths:
            return "", "No process specification given\n", 1
        if self.i.dpkg_locked(self._now()) and any(p in DPKG_LOCKS for p in paths):
            held = [p for p in paths if p in DPKG_LOCKS]
            return f" {DPKG_PID}" * len(held), "".join(f"{p}:" for p in held), 0
        return "", "", 1

    async def _df(self, args: list[str], stdin: str) -> Result:
        total_k, used_k = 104_857_600, 31_457_280
        mounts = [
            ("overlay", total_k, used_k, "/"),
            ("tmpfs", 65536, 0, "/dev"),
            ("shm", 16_777_216, 0, "/dev/shm"),
            ("/dev/nvme0n1p2", 1_874_855_920, 412_468_302, "/etc/hosts"),
        ]
        human = "-h" in args or "-H" in args
        gig = any(a.startswith("-BG") for a in args)

        def size(k: int) -> str:
            if gig:
                return f"{-(-k // 1_048_576)}G"
            if human:
                for unit, div in (("T", 1024**3), ("G", 1024**2), ("M", 1024)):
                    if k >= div:
                        value = k / div
                        return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
                return "0"
            return str(k)

        head = "1G-blocks" if gig else "Size" if human else "1K-blocks"
        lines = [f"{'Filesystem':<16}{head:>10}{'Used':>10}{'Avail':>10} Use% Mounted on"]
        for fs, total, used, mount in mounts:
            pct = f"{-(-used * 100 // total)}%" if used else "0%"
            lines.append(
                f"{fs:<16}{size(total):>10}{size(used):>10}{size(total - used):>10}{pct:>5} {mount}"
            )
        return "\n".join(lines) + "\n", "", 0

    async def _free(self, args: list[str], stdin: str) -> Result:
        return (
            "               total        used        free      shared  buff/cache   available\n"
            "Mem:          128660        6120      101284          12       21256      121404\n"
            "Swap:              0           0           0\n",
            "",
            0,
        )

    def _sessions(self) -> list[_Session]:
        return sorted(self.node.sessions.values(), key=lambda s: (s.since, s.peer))

    async def _who(self, args: list[str], stdin: str) -> Result:
        lines = []
        for n, s in enumerate(self._sessions()):
            when = datetime.fromtimestamp(s.since, UTC).strftime("%Y-%m-%d %H:%M")
            lines.append(f"{s.user:<8} pts/{n:<8} {when} ({s.peer[0]})")
        return "".join(line + "\n" for line in lines), "", 0

    async def _ss(self, args: list[str], stdin: str) -> Result:
        lines = ["Recv-Q Send-Q   Local Address:Port   Peer Address:Port Process"]
        for s in self._sessions():
            lines.append(f"0      0           172.17.0.2:22     {s.peer[0]}:{s.peer[1]}")
        return "\n".join(lines) + "\n", "", 0

    # files (inside the SFTP root) ------------------------------------------------------------

    def _path(self, name: str) -> Path:
        root = self.node.root.resolve()
        target = (root / name.lstrip("/")).resolve()
        return target if target.is_relative_to(root) else root

    async def _cat(self, args: list[str], stdin: str) -> Result:
        files = [a for a in args if a != "-"]
        if not files:
            return stdin, "", 0
        out, err, rc = [], [], 0
        for name in files:
            path = self._path(name)
            if path.is_file():
                out.append(path.read_text(errors="replace"))
            else:
                err.append(f"cat: {name}: No such file or directory\n")
                rc = 1
        return "".join(out), "".join(err), rc

    async def _ls(self, args: list[str], stdin: str) -> Result:
        names = [a for a in args if not a.startswith("-")] or ["."]
        out, err, rc = [], [], 0
        for name in names:
            path = self._path(name)
            if path.is_dir():
                out += sorted(p.name + "\n" for p in path.iterdir())
            elif path.exists():
                out.append(name + "\n")
            else:
                err.append(f"ls: cannot access '{name}': No such file or directory\n")
                rc = 2
        return "".join(out), "".join(err), rc

    async def _mkdir(self, args: list[str], stdin: str) -> Result:
        parents = "-p" in args
        for name in (a for a in args if not a.startswith("-")):
            try:
                self._path(name).mkdir(parents=parents, exist_ok=parents)
            except OSError as exc:
                return "", f"mkdir: cannot create directory '{name}': {exc.strerror}\n", 1
        return "", "", 0

    # workloads -------------------------------------------------------------------------------

    async def _sh(self, args: list[str], stdin: str) -> Result:
        """`sh -c CMD`, and the two script files a sim node runs: `sh .gpushop/launch.sh` and
        `sh .gpushop/watchdog.sh start`.

        The launcher is idempotent: while the workload's process lives (and has not failed) a
        second launch changes nothing. A missing or invalid `workload.json` fails with rc 1.
        """
        if len(args) >= 2 and args[0] == "-c":
            return await self.run(args[1])
        if not args or args[0].startswith("-"):
            return "", "sh: the simulated node runs only `sh -c` and `sh FILE`\n", 2
        script = args[0]
        path = self._path(script.removeprefix("~/"))
        scripts = (self._path(f"{STATE_DIR}/launch.sh"), self._path(f"{STATE_DIR}/watchdog.sh"))
        if path not in scripts:
            return (
                "",
                (
                    f"sh: {script}: the simulated node runs only {STATE_DIR}/launch.sh and "
                    f"{STATE_DIR}/watchdog.sh\n"
                ),
                2,
            )
        if not path.is_file():
            return "", f"sh: 0: cannot open {script}: No such file\n", 2
        if path == scripts[1]:
            return self._watchdog(args[1:])
        world = self.nodes.world
        async with self.node.launching:
            current = self.node.live_workload(self._now())
            if current is not None and not current.phase(self._now()).startswith("failed"):
                return "", "", 0
            if self.node.workload is not None:
                await self.node.workload.stop()
                self.node.workload = None
            try:
                self.node.workload = await launch(
                    self.node.root,
                    self.i,
                    now=world.now,
                    timings=world.workload_timing,
                    faults=world.faults.node(self.i.provider),
                )
            except ValueError as exc:
                return "", f"launch.sh: {exc}\n", 1
        return "", "", 0

    def _watchdog(self, args: list[str]) -> Result:
        """`watchdog.sh start`: registers the node's watchdog once (a second start while it
        runs changes nothing), prints nothing; invalid files fail with rc 1."""
        if args != ["start"]:
            return "", "usage: watchdog.sh start\n", 2
        if (self.i.provider, self.i.id) in self.nodes.world.watchdogs:
            return "", "", 0
        try:
            watchdog = read_watchdog(self.i, self.node.root)
        except ValueError as exc:
            return "", f"watchdog.sh: {exc}\n", 1
        self.nodes.world.watch(watchdog)
        return "", "", 0

    # filters ---------------------------------------------------------------------------------

    async def _grep(self, args: list[str], stdin: str) -> Result:
        flags = {a for a in args if a.startswith("-")}
        rest = [a for a in args if not a.startswith("-")]
        if not rest:
            return "", "Usage: grep [OPTION]... PATTERNS [FILE]...\n", 2
        pattern = rest[0].replace("\\|", "|")
        regex = re.compile(pattern, re.IGNORECASE if any("i" in f for f in flags) else 0)
        invert = any("v" in f for f in flags)
        lines = [ln for ln in stdin.splitlines() if bool(regex.search(ln)) != invert]
        if any("c" in f for f in flags):
            return f"{len(lines)}\n", "", 0 if lines else 1
        return "".join(ln + "\n" for ln in lines), "", 0 if lines else 1

    @staticmethod
    def _count(args: list[str], default: int = 10) -> int:
        for n, a in enumerate(args):
            if a == "-n" and n + 1 < len(args):
                return int(args[n + 1])
            if a.startswith("-n"):
                return int(a[2:])
            if a.startswith("-") and a[1:].isdigit():
                return int(a[1:])
        return default

    async def _head(self, args: list[str], stdin: str) -> Result:
        lines = stdin.splitlines(keepends=True)
        return "".join(lines[: self._count(args)]), "", 0

    async def _tail(self, args: list[str], stdin: str) -> Result:
        lines = stdin.splitlines(keepends=True)
        count = self._count(args)
        return "".join(lines[-count:] if count else []), "", 0

    async def _wc(self, args: list[str], stdin: str) -> Result:
        if "-l" in args:
            return f"{stdin.count(chr(10))}\n", "", 0
        return f"{stdin.count(chr(10))} {len(stdin.split())} {len(stdin.encode())}\n", "", 0
