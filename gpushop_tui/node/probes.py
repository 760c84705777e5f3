"""What we ask a GPU node, and how we read its answers.

The parsers are pure functions over the text `nvidia-smi`, `ss` and `fuser` print, so they are
tested on real-looking outputs; the helpers run them over a `NodeConnection`. `sample` never
raises for a signal it cannot read: the signal becomes None plus a problem sentence, because an
unreadable signal counts as busy (DESIGN.md §5) and must not stop the others from being read.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from gpushop_tui.node.ssh import CommandResult, NodeConnection, NodeError

GPU_QUERY = (
    "index,name,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw,driver_version"
)
GPU_COMMAND = f"nvidia-smi --query-gpu={GPU_QUERY} --format=csv,noheader,nounits"
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/apt/lists/lock")
_FUSER = "fuser " + " ".join(DPKG_LOCKS)
DPKG_COMMAND = f"sudo -n {_FUSER} 2>/dev/null || {_FUSER}"
"""Through passwordless sudo where the login has it (cloud images' `ubuntu`/`user` do): without
root, `fuser` sees only its own user's processes and would call a held lock free."""
SSH_PORT = 22

_FIELDS = len(GPU_QUERY.split(","))
_MISSING = {"n/a", "[n/a]", "[not supported]", "[unknown error]", "[insufficient permissions]", ""}
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:MiB|%|W|C)?")
_SS_STATES = {
    "ESTAB", "SYN-SENT", "SYN-RECV", "FIN-WAIT-1", "FIN-WAIT-2", "TIME-WAIT", "CLOSE-WAIT",
    "LAST-ACK", "LISTEN", "CLOSING", "UNCONN", "CLOSED",
}  # fmt: skip
_CUDA = re.compile(r"CUDA Version\s*:\s*(\d+)\.(\d+)")
_DRIVER = re.compile(r"Driver Version\s*:\s*([0-9][0-9.]*)")


@dataclass(frozen=True)
class GpuReading:
    """One GPU as `nvidia-smi --query-gpu` reports it; None where it said N/A."""

    index: int
    name: str
    memory_total_mib: int | None
    memory_used_mib: int | None
    utilization_pct: float | None
    temperature_c: float | None
    power_w: float | None
    driver: str | None


@dataclass(frozen=True)
class NodeSpec:
    """What the node really has, to check against what the offer promised."""

    gpus: tuple[GpuReading, ...]
    cuda: float | None
    driver: str | None


@dataclass(frozen=True)
class NodeSample:
    """One status reading for the sessions pane and idle detection."""

    gpus: tuple[GpuReading, ...] | None
    """None = could not read."""
    ssh_connections: int | None
    """SSH connections other than ours; None = unknown."""
    problems: tuple[str, ...]
    """Why a signal could not be read (one sentence each)."""


def _number(value: str) -> float | None:
    if value.lower() in _MISSING:
        return None
    match = _NUMBER.fullmatch(value)
    if match is None:
        raise ValueError(f"not a number: {value!r}")
    return float(match.group(1))


def _integer(value: str) -> int | None:
    number = _number(value)
    return None if number is None else round(number)


def parse_gpu_csv(text: str) -> list[GpuReading]:
    """Read `nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader,nounits` output.

    '[N/A]', 'N/A' and '[Not Supported]' become None; a line that is not 8 readable fields
    raises ValueError (nvidia-smi prints its failures, e.g. a lost driver, on stdout).
    """
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != _FIELDS:
            raise ValueError(f"expected {_FIELDS} fields, got {len(fields)}: {line.strip()[:120]}")
        index, name, total, used, util, temp, power, driver = fields
        if not index.isdigit() or name.lower() in _MISSING:
            raise ValueError(f"not a GPU line: {line.strip()[:120]}")
        gpus.append(
            GpuReading(
                index=int(index),
                name=name,
                memory_total_mib=_integer(total),
                memory_used_mib=_integer(used),
                utilization_pct=_number(util),
                temperature_c=_number(temp),
                power_w=_number(power),
                driver=None if driver.lower() in _MISSING else driver,
            )
        )
    return gpus


def parse_cuda_version(text: str) -> float | None:
    """The 'CUDA Version: 12.4' of plain `nvidia-smi` output; None if it does not say."""
    match = _CUDA.search(text)
    return float(f"{match.group(1)}.{match.group(2)}") if match else None


def parse_ssh_connections(text: str, port: int = SSH_PORT) -> int:
    """Established TCP connections whose local port is `port`, from `ss -tn state established`.

    Takes the output with or without its header line, with or without a State column (`ss -tn`
    without a state filter); raises ValueError on a line that is not a socket.
    """
    count = 0
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] in ("Recv-Q", "State"):
            continue
        if fields[0] in _SS_STATES:  # a State column: `ss -tn` without a state filter
            if fields[0] != "ESTAB":
                continue
            fields = fields[1:]
        if len(fields) < 4 or not (fields[0].isdigit() and fields[1].isdigit()):
            raise ValueError(f"not an ss socket line: {line.strip()[:120]}")
        local_port = fields[2].rpartition(":")[2]
        if local_port == str(port):
            count += 1
    return count


def _tail(text: str, limit: int = 200) -> str:
    """Command output folded to one short line for a message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _why(result: CommandResult) -> str:
    said = _tail(result.stderr or result.stdout)
    return f"exit {result.exit_status}" + (f": {said}" if said else "")


async def echo_ok(conn: NodeConnection, *, timeout_s: float = 30.0) -> bool:
    """True iff `echo ok` prints ok: the login works and a shell runs commands."""
    result = await conn.run("echo ok", timeout_s=timeout_s)
    return result.stdout.strip() == "ok"


async def dpkg_lock_free(conn: NodeConnection, *, timeout_s: float = 30.0) -> bool | None:
    """Whether apt/dpkg is free (first-boot package installs done); None = cannot tell.

    `fuser` exits 1 with nothing on stdout when no process holds the locks, and prints the
    holders' pids otherwise (see `DPKG_COMMAND` for why it goes through sudo).
    """
    result = await conn.run(DPKG_COMMAND, timeout_s=timeout_s)
    if result.exit_status == 1 and not result.stdout.strip():
        return True
    if result.exit_status == 0 and result.stdout.split() and result.stdout.split()[0].isdigit():
        return False
    return None


async def read_spec(conn: NodeConnection, *, timeout_s: float = 30.0) -> NodeSpec:
    """The node's GPUs, driver and CUDA version; NodeError('command') if nvidia-smi fails."""
    where = conn.address.where
    query = await conn.run(GPU_COMMAND, timeout_s=timeout_s)
    if query.exit_status != 0:
        raise NodeError("command", f"nvidia-smi failed on {where} ({_why(query)}).")
    try:
        gpus = tuple(parse_gpu_csv(query.stdout))
    except ValueError as exc:
        raise NodeError("command", f"nvidia-smi on {where} printed no GPU table ({exc}).") from exc
    banner = await conn.run("nvidia-smi", timeout_s=timeout_s)
    if banner.exit_status != 0:
        raise NodeError("command", f"nvidia-smi failed on {where} ({_why(banner)}).")
    driver = next((g.driver for g in gpus if g.driver), None)
    if driver is None and (match := _DRIVER.search(banner.stdout)):
        driver = match.group(1)
    return NodeSpec(gpus=gpus, cuda=parse_cuda_version(banner.stdout), driver=driver)


T = TypeVar("T")


async def _read_part(
    conn: NodeConnection,
    command: str,
    timeout_s: float,
    parse: Callable[[str], T],
    *,
    unknown: str,
    tool: str,
) -> tuple[T | None, str | None]:
    """Run one probe command and parse it; on any failure but a dropped connection, None and
    a sentence starting with `unknown` (what could not be read) that names `tool`."""
    try:
        result = await conn.run(command, timeout_s=timeout_s)
    except NodeError as exc:
        if exc.kind == "closed":
            raise
        return None, f"{unknown}: {exc.message}"
    if result.exit_status != 0:
        return None, f"{unknown}: {tool} failed ({_why(result)})."
    try:
        return parse(result.stdout), None
    except ValueError as exc:
        return None, f"{unknown}: {tool} printed something else ({exc})."


async def _gpu_part(
    conn: NodeConnection, timeout_s: float
) -> tuple[tuple[GpuReading, ...] | None, str | None]:
    return await _read_part(
        conn,
        GPU_COMMAND,
        timeout_s,
        lambda out: tuple(parse_gpu_csv(out)),
        unknown="GPU readings unavailable",
        tool="nvidia-smi",
    )


async def _ssh_part(
    conn: NodeConnection, timeout_s: float, sshd_port: int
) -> tuple[int | None, str | None]:
    return await _read_part(
        conn,
        f"ss -tn state established '( sport = :{sshd_port} )'",
        timeout_s,
        lambda out: max(0, parse_ssh_connections(out, sshd_port) - 1),
        unknown="SSH connections unknown",
        tool="ss",
    )


async def sample(
    conn: NodeConnection, *, timeout_s: float = 15.0, sshd_port: int = SSH_PORT
) -> NodeSample:
    """GPU readings and the count of other SSH connections, read concurrently.

    A part that cannot be read is None with a problem sentence (a hung nvidia-smi included);
    only a dropped connection (NodeError kind 'closed') propagates. `sshd_port` is the port
    sshd listens on inside the node (22 even when the provider maps another port outside).
    """
    gpu_outcome, ssh_outcome = await asyncio.gather(
        _gpu_part(conn, timeout_s), _ssh_part(conn, timeout_s, sshd_port), return_exceptions=True
    )
    if isinstance(gpu_outcome, BaseException):
        raise gpu_outcome
    if isinstance(ssh_outcome, BaseException):
        raise ssh_outcome
    gpus, gpu_problem = gpu_outcome
    others, ssh_problem = ssh_outcome
    return NodeSample(
        gpus=gpus,
        ssh_connections=others,
        problems=tuple(p for p in (gpu_problem, ssh_problem) if p),
    )
