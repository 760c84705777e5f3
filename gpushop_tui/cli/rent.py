"""The renting commands' arguments: provision, sessions, shutdown, transfer.

Their handlers are in handlers/rent.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gpushop_tui.cli.args import Bounded, Command, add_output, add_wait, port_number

WORKLOADS = ("interactive", "llm", "vllm", "custom")
"""The workload types (models.Workload; a test keeps the two in step)."""


STATUSES = (
    "pending", "provisioning", "running", "stopping", "stopped", "starting", "ended", "failed",
)  # fmt: skip
"""The session statuses (models.SessionStatus; a test keeps the two in step)."""
IDLE_ACTIONS = ("destroy", "stop")
"""--idle-action words (models.IdleAction; a test keeps the two in step)."""
STORAGE = {"destroy": "destroy", "keep": "keep", "preserve": "keep"}
"""--storage words; 'preserve' is the earlier CLI's word for keep."""
TEARDOWN_WAIT_S = 300.0
"""How long `sessions done|delete` and `shutdown` drive the teardown before leaving it."""

PROVISION_EXITS = """\
exit codes:
  0  the session is running (with --no-wait: the rental was accepted)
  1  the rental failed (the session failed, or was ended before it was ready)
  2  usage or user error (bad flag, unknown offer, no offer matches)
  3  not settled when the wait ended: the supervisor carries on with it"""
TEARDOWN_EXITS = """\
exit codes:
  0  ended: the instance is gone (or, with the keep storage policy, stopped with its disk
     kept); with --no-wait: accepted
  2  usage or user error (unknown session id)
  3  the teardown is still under way when the wait ended: the supervisor carries on"""
STOP_EXITS = """\
exit codes:
  0  stopped: the instance is powered off, its disk kept (with --no-wait: the stop was accepted)
  1  the stop did not succeed: the session failed or ended (its instance is gone)
  2  usage or user error (unknown session, a session that is not running, a provider that
     cannot stop an instance and keep its disk)
  3  still stopping when the wait ended: the supervisor carries on"""
START_EXITS = """\
exit codes:
  0  the session is running again (with --no-wait: the start was accepted)
  1  the start did not succeed: the session is stopped again with its disk kept (the reason
     is shown), or it failed or ended
  2  usage or user error (unknown session, a session that is not stopped, a provider that
     cannot stop and start)
  3  not running yet when the wait ended: the supervisor carries on"""

HANDLERS = "gpushop_tui.cli.handlers.rent"


def _reservation_bounds() -> tuple[float, float]:
    from gpushop_tui.models import MAX_RESERVATION_HOURS, MIN_RESERVATION_HOURS

    return MIN_RESERVATION_HOURS, MAX_RESERVATION_HOURS


def _idle_bounds() -> tuple[float, float]:
    from gpushop_tui.models import MAX_IDLE_MINUTES

    return 0.0, MAX_IDLE_MINUTES


def _keep_bounds() -> tuple[float, float]:
    from gpushop_tui.models import MAX_KEEP_DAYS

    return 0.0, MAX_KEEP_DAYS


HOURS = Bounded("hours", _reservation_bounds)
"""`-t/--hours` of both provision and sessions extend: a reservation's length."""
IDLE_MINUTES = Bounded("minutes", _idle_bounds)
"""`--idle-timeout`: idle minutes before the idle stop."""
KEEP_DAYS = Bounded("days", _keep_bounds, above_low=True)
"""`--keep-days` of provision and sessions stop: how long a stopped session's disk is kept."""


def _add_keep_days(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-days",
        type=KEEP_DAYS,
        metavar="D",
        help="keep a stopped disk D days (%(type)s), then destroy it unless the session was "
        "started again (default: the keep_days setting)",
    )


def _configure_provision(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = PROVISION_EXITS
    parser.add_argument("-c", "--consumer", required=True, help="who the rental is for")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("-i", "--offer", metavar="ID", help="an offer id from 'gpushop inventory'")
    target.add_argument(
        "-g",
        "--gpu",
        metavar="QUERY",
        help="take the cheapest offer matching a query ('gpu=4090 price<=0.5') or a GPU name",
    )
    parser.add_argument(
        "-t", "--hours", type=HOURS, help="reservation of %(type)s (default: the setting)"
    )
    parser.add_argument(
        "-w",
        "--workload",
        choices=WORKLOADS,
        default="interactive",
        help="what runs on the node: nothing but SSH, an Ollama server (llm), a vLLM "
        "OpenAI-compatible server (vllm), or your own command (custom)",
    )
    parser.add_argument("--model", metavar="NAME", help="the model llm or vllm serves")
    parser.add_argument(
        "--image", metavar="IMAGE", help="custom or vllm: the image (where providers run images)"
    )
    parser.add_argument("--cmd", metavar="COMMAND", help="custom: the command that starts it")
    parser.add_argument(
        "--env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="an environment variable for the server (repeat for more), e.g. HF_TOKEN=... for a "
        "gated model",
    )
    parser.add_argument(
        "--port",
        type=int,
        dest="ports",
        metavar="PORT",
        action="append",
        default=[],
        help="custom: a port it listens on, on the node's loopback (the first is its health check)",
    )
    parser.add_argument(
        "--no-benchmark",
        action="store_true",
        help="do not measure tokens/s on the node once the model server answers",
    )
    parser.add_argument(
        "--idle-timeout",
        type=IDLE_MINUTES,
        metavar="MIN",
        help="end the session after MIN idle minutes (%(type)s; 0 disables; default: the setting)",
    )
    parser.add_argument(
        "--idle-action",
        choices=IDLE_ACTIONS,
        default="destroy",
        help="what an idle session's end does: destroy the instance, or stop it and keep its "
        "disk to start it again later (default: destroy)",
    )
    parser.add_argument(
        "--storage",
        choices=tuple(STORAGE),
        default="destroy",
        help="what 'sessions done' does: destroy the instance, or stop it and keep its disk",
    )
    _add_keep_days(parser)
    parser.add_argument(
        "--save-key", type=Path, metavar="PATH", help="also copy the private key here (0600)"
    )
    parser.add_argument(
        "--request-id", metavar="ID", help="asking again with the same id rents nothing new"
    )
    add_wait(parser, None, "readiness")
    add_output(parser)


def _configure_sessions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="sessions_action", metavar="ACTION", required=True)
    listp = actions.add_parser("list", help="sessions, newest first")
    listp.add_argument("-c", "--consumer", help="only this consumer's")
    listp.add_argument("-s", "--status", choices=STATUSES, help="only sessions in this status")
    listp.add_argument("--open", action="store_true", help="only sessions still supervised")
    add_output(listp)
    getp = actions.add_parser("get", help="one session in detail, with its ssh command")
    getp.add_argument("id")
    add_output(getp)
    for name, words in (
        (
            "done",
            "end a session: destroy it, or stop it and keep its disk if its storage policy "
            "is keep (set when it was rented); a stopped session's kept disk is destroyed",
        ),
        ("delete", "destroy a session's instance (and disk) whatever its storage policy"),
    ):
        endp = actions.add_parser(
            name,
            help=words,
            description=words,
            epilog=TEARDOWN_EXITS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        endp.add_argument("id")
        add_wait(endp, TEARDOWN_WAIT_S, "the teardown")
        add_output(endp)
    stopp = actions.add_parser(
        "stop",
        help="power a running session off now, keeping its disk (it bills the disk only)",
        description="Power a running session off, keeping its disk: its GPU stops billing, its "
        "disk bills on until 'sessions start', 'sessions done', or the end of its keep days.",
        epilog=STOP_EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stopp.add_argument("id")
    _add_keep_days(stopp)
    add_wait(stopp, TEARDOWN_WAIT_S, "the stop")
    add_output(stopp)
    startp = actions.add_parser(
        "start",
        help="power a stopped session on again, waiting until it is ready as for a rental",
        description="Power a stopped session on again, on its kept disk, for a new reservation "
        "(and a new hard max counted from now); waits until it is ready, as provision does.",
        epilog=START_EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    startp.add_argument("id")
    startp.add_argument(
        "-t",
        "--hours",
        type=HOURS,
        help="the new reservation, %(type)s (default: the session's own length)",
    )
    add_wait(startp, None, "readiness")
    add_output(startp)
    extendp = actions.add_parser("extend", help="push a session's reservation out")
    extendp.add_argument("id")
    extendp.add_argument("-t", "--hours", type=HOURS, required=True, help="add %(type)s")
    extendp.add_argument(
        "--override-hard-max",
        metavar="REASON",
        help="allow going past the hard max, saying why (written to the audit log)",
    )
    add_output(extendp)
    sshp = actions.add_parser(
        "ssh",
        help="open an SSH session on the node (or --print the command)",
        usage="%(prog)s [-h] [--print] id [-- COMMAND...]",
        epilog="Anything after '--' is run on the node instead of a login shell.",
    )
    sshp.add_argument("id")
    sshp.add_argument("--print", action="store_true", help="print the ssh command instead")
    sshp.set_defaults(remote_command=[])
    keyp = actions.add_parser("key", help="print the path of the session's private key")
    keyp.add_argument("id")
    endp = actions.add_parser(
        "endpoint", help="print the base URL of the session's model endpoint on the node"
    )
    endp.add_argument("id")
    shown = endp.add_mutually_exclusive_group()
    shown.add_argument("--token", action="store_true", help="print the endpoint's token instead")
    shown.add_argument(
        "--public",
        action="store_true",
        help="print its URL on the provider's public address (vLLM where images run)",
    )
    tunp = actions.add_parser(
        "tunnel",
        help="forward a local port to the session's endpoint over SSH until interrupted",
    )
    tunp.add_argument("id")
    tunp.add_argument(
        "--port",
        type=port_number,
        default=0,
        dest="local_port",
        metavar="P",
        help="the local port (default: any free one)",
    )


def _configure_shutdown(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = TEARDOWN_EXITS
    parser.add_argument("id")
    parser.add_argument(
        "-f", "--force", action="store_true", help="destroy whatever the storage policy says"
    )
    add_wait(parser, TEARDOWN_WAIT_S, "the teardown")
    add_output(parser)


def _configure_transfer(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    up = actions.add_parser("upload", help="copy a local file to a session's node (SFTP)")
    up.add_argument("local", type=Path)
    up.add_argument("remote", metavar="SESSION:REMOTE")
    down = actions.add_parser("download", help="copy a file from a session's node (SFTP)")
    down.add_argument("remote", metavar="SESSION:REMOTE")
    down.add_argument("local", type=Path)


PROVISION = Command(
    "provision",
    "rent an offer (or the cheapest match of a query) and wait until it is ready",
    _configure_provision,
    f"{HANDLERS}:run_provision",
)
SESSIONS = Command(
    "sessions",
    "list, inspect, stop, start, end, extend and reach rentals",
    _configure_sessions,
    f"{HANDLERS}:run_sessions",
)
SHUTDOWN = Command(
    "shutdown",
    "end a session (= sessions done; with --force, sessions delete)",
    _configure_shutdown,
    f"{HANDLERS}:run_shutdown",
)
TRANSFER = Command(
    "transfer",
    "copy a file to or from a session's node over SFTP",
    _configure_transfer,
    f"{HANDLERS}:run_transfer",
)


def _configure_demo_endpoint(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-w", "--workload", choices=("vllm", "llm"), default="vllm", help="the server to run"
    )
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="the model it serves (default: Qwen/Qwen2.5-0.5B-Instruct, or llama3.1:8b for llm)",
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=8000,
        dest="local_port",
        metavar="P",
        help="the local port the endpoint answers on (default 8000; 0: a free one)",
    )


DEMO_ENDPOINT = Command(
    "demo-endpoint",
    "serve a model on the demo marketplace (nothing costs money) and hold its endpoint on a "
    "local port, printing the curl that reaches it, until ctrl+c",
    _configure_demo_endpoint,
    f"{HANDLERS}:run_demo_endpoint",
)
