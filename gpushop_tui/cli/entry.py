"""The `gpushop` entry point: the TUI by default, `--serve`, `--demo`, and one-shot subcommands.

Only argparse and the families' argument modules (admin, market, money, rent) are imported at
module level, so `gpushop --help` and `--version` stay fast; a command's handler module is
imported when the command runs (`Command.run`), and the TUI or the API when launched. Errors the
user can cause print one line to stderr and exit 2; a reader that stops early (`| head`) ends the
command quietly with 141, as SIGPIPE would; anything else is logged with its traceback and
reported in one line, never dumped on the terminal.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from gpushop_tui import __version__
from gpushop_tui.cli import admin, market, money, rent
from gpushop_tui.cli.args import Command, port_number
from gpushop_tui.cli.output import PROG
from gpushop_tui.errors import Hint, UserError

if TYPE_CHECKING:
    from gpushop_tui.config import Settings

LOCAL_COMMANDS = ("paths", "config", "keys", "serve-token", "demo-endpoint")
"""Commands about this machine itself: they refuse --remote and --token, and ignore
GPUSHOP_REMOTE (`config` shows it as the setting it is)."""
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE: what a C tool's shell status is when its reader goes away."""

COMMANDS: tuple[Command, ...] = (
    admin.PATHS,
    admin.CONFIG,
    admin.KEYS,
    market.INVENTORY,
    market.CHECK,
    market.BENCHMARKS,
    rent.PROVISION,
    rent.SESSIONS,
    rent.SHUTDOWN,
    rent.TRANSFER,
    rent.DEMO_ENDPOINT,
    admin.RECONCILE,
    money.COSTS,
    money.BUDGETS,
    admin.SERVE_TOKEN,
    admin.CLEANUP_ORPHANS,
)
"""Every subcommand, in the order `gpushop --help` lists them."""

WAYS_OUT = {
    Hint.NEEDS_OVERRIDE: ": pass --override-hard-max REASON",
    Hint.STORAGE_NOT_KEEPABLE: "; use --storage destroy",
    Hint.CANNOT_STOP: " (end it with 'gpushop sessions done')",
    Hint.NOT_CONFIGURED: " (see 'gpushop keys set')",
    Hint.UNKNOWN_SESSION: " (see 'gpushop sessions list')",
    Hint.UNKNOWN_OFFER: " (see 'gpushop inventory')",
    Hint.UNKNOWN_BUDGET: " (see 'gpushop budgets list')",
}
"""The CLI's words for the way out a core error's `hint` names, appended to its message.

The core ends a needs-override message with what it needs ("...; it needs an override
reason"), so that way out follows a colon and says only which flag gives it.
"""
FIELD_WAYS_OUT = {(Hint.CANNOT_STOP, "idle_action"): "; use --idle-action destroy"}
"""Ways out that depend on the input at fault as well as the hint (a rental's idle action
that cannot stop is fixed by a flag; a session that cannot stop, by ending it)."""


CREDENTIAL_WORDS = {"vastai": "vastai", "vast": "vastai", "tensordock": "tensordock",
                    "bluelobster": "bluelobster", "runpod": "runpod", "lambda": "lambda",
                    "lambdalabs": "lambda", "lambdacloud": "lambda",
                    "webhook": "webhook"}  # fmt: skip
"""The provider part of an earlier tool's `config set NAME-key` and the `keys set` name it means."""


def _instead(words: Sequence[str]) -> str | None:
    """Why a form the earlier tool or the brief used is not taken and what to type, or None.

    `config set PROVIDER-key KEY` is answered without the key: a secret is never echoed, and
    `keys set` asks for it rather than taking it from the command line (shell history).
    """
    first, rest = (words[0], list(words[1:])) if words else ("", [])
    target = rest[0] if rest and not rest[0].startswith("-") else "ID"
    if first == "session":
        return f"'session' is not a command; type '{PROG} sessions get {target}'"
    if first == "extend":
        extend = f"{PROG} sessions extend {target} --hours {_hours(rest)}"
        return f"'extend' is not a command; type '{extend}'"
    if first == "config" and rest[:1] == ["set"]:
        name = rest[1].lower().removesuffix("-key").removesuffix("-token") if rest[1:] else ""
        provider = CREDENTIAL_WORDS.get(name.replace("-", "").replace("_", ""), "PROVIDER")
        return (
            f"a credential is not a setting; type '{PROG} keys set {provider}' "
            "(it asks for the key and keeps it in the OS keyring)"
        )
    return None


def _hours(words: Sequence[str]) -> str:
    """The hours an earlier `extend` gave (`--hours=2`, `--hours 2`, `-t 2`), else 'HOURS'."""
    for i, word in enumerate(words):
        if word.startswith("--hours="):
            return word.split("=", 1)[1]
        if word in ("--hours", "-t") and i + 1 < len(words):
            return words[i + 1]
    return "HOURS"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the modes, and every subcommand of `COMMANDS`."""
    parser = _Parser(
        prog=PROG,
        description="Rent GPUs by the hour across marketplaces. With no command, opens the TUI.",
        epilog="Credentials: VASTAI_API_KEY, TENSORDOCK_API_TOKEN, BLUELOBSTER_API_KEY "
        "override the OS keyring. Data dir: GPUSHOP_HOME.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--demo", action="store_true", help="run on the built-in demo marketplace")
    mode.add_argument("--serve", action="store_true", help="run the headless JSON API")
    parser.add_argument(
        "--host", help="with --serve: address to listen on (default 127.0.0.1, loopback only)"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=None,
        help="with --serve: port to listen on (default 8642)",
    )
    parser.add_argument(
        "--remote",
        dest="remote_url",
        metavar="URL",
        help="work on the 'gpushop --serve' at URL instead of this machine's database "
        "(default: GPUSHOP_REMOTE)",
    )
    parser.add_argument(
        "--token",
        dest="remote_token",
        metavar="TOKEN",
        help="with --remote: the server's bearer token (default: GPUSHOP_REMOTE_TOKEN, then "
        "'gpushop keys set remote', then the file remote_token in the data dir)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def _handler(run: str) -> Callable[[argparse.Namespace], int]:
    """The handler a `Command.run` names ('module:function'), imported now."""
    module, _, name = run.partition(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return handler


def _settings() -> Settings:
    from gpushop_tui.config import load_settings

    return load_settings()


def _run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from gpushop_tui.api.serve import DEFAULT_PORT, serve
    from gpushop_tui.logs import configure_logging

    settings = _settings()
    settings.paths.prepare()
    configure_logging(settings)
    port = DEFAULT_PORT if args.port is None else args.port
    return asyncio.run(serve(settings, args.host, port, say=lambda line: print(line, flush=True)))


def _run_tui(args: argparse.Namespace) -> int:
    if args.serve:
        return _run_serve(args)
    if args.host is not None or args.port is not None:
        raise UserError("--host and --port go with --serve")
    if args.demo:
        return _run_demo()
    from gpushop_tui.cli.handlers import NO_REMOTE, command_settings
    from gpushop_tui.logs import configure_logging
    from gpushop_tui.tui.app import GpushopApp, open_remote_core

    settings = command_settings()
    settings.paths.prepare()
    configure_logging(settings)
    remote = open_remote_core(args.remote_token) if settings.remote is not None else None
    if remote is None and args.remote_token is not None:
        raise UserError(NO_REMOTE)
    GpushopApp(settings, opener=remote).run()
    return 0


def _run_demo() -> int:
    """The TUI on the simulated marketplace, with a throw-away data dir."""
    import tempfile

    from gpushop_tui.config import load_settings
    from gpushop_tui.logs import configure_logging
    from gpushop_tui.tui.app import GpushopApp

    with tempfile.TemporaryDirectory(prefix="gpushop-demo-") as home:
        settings = load_settings({**os.environ, "GPUSHOP_HOME": home, "GPUSHOP_CONFIG": ""})
        settings.paths.prepare()
        configure_logging(settings)
        GpushopApp(settings, demo=True).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run gpushop with `argv` (default: the process arguments); returns the exit code."""
    words = list(sys.argv[1:] if argv is None else argv)
    instead = _instead(words)
    if instead is not None:
        print(f"{PROG}: error: {instead}", file=sys.stderr)
        return EXIT_USAGE
    trailing = words[words.index("--") + 1 :] if "--" in words else None
    parser = build_parser()
    args = parser.parse_args(words if trailing is None else words[: words.index("--")])
    if trailing is not None:
        if "remote_command" not in vars(args):
            parser.error("'--' is only for a command to run on a node: sessions ssh ID -- COMMAND")
        args.remote_command = trailing
    if args.command and (args.demo or args.serve or args.host or args.port):
        parser.error(f"--demo, --serve, --host and --port cannot be combined with '{args.command}'")
    _check_remote(parser, args)
    try:
        run = _handler(args.run) if "run" in vars(args) else _run_tui
        code = run(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _report(exc)


def _check_remote(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse `--remote`/`--token` where they mean nothing; else hand them to the commands."""
    if args.remote_url is None and args.remote_token is None:
        return
    if args.demo or args.serve:
        parser.error("--remote and --token cannot be combined with --demo or --serve")
    if args.command in LOCAL_COMMANDS:
        parser.error(
            f"'{args.command}' works on this machine only; it takes no --remote or --token"
        )
    from gpushop_tui.cli.handlers import REMOTE

    REMOTE.url, REMOTE.token = args.remote_url, args.remote_token


def _reader_gone() -> int:
    """End quietly once stdout's reader has gone (Python's advice on SIGPIPE): point stdout
    at devnull so that the flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _report(exc: Exception) -> int:
    """One line on stderr for any failure; the traceback goes to the log, never the terminal."""
    from gpushop_tui.core import redact

    if isinstance(exc, UserError):
        hint = exc.hint or ""
        way_out = FIELD_WAYS_OUT.get((hint, exc.field or ""), WAYS_OUT.get(hint, ""))
        print(f"{PROG}: error: {redact(exc.message)}{way_out}", file=sys.stderr)
        return exc.exit_code
    log_file = _log_unexpected()
    where = f"; details in {log_file}" if log_file else ""
    print(
        f"{PROG}: internal error: {type(exc).__name__}: {redact(str(exc))}{where}",
        file=sys.stderr,
    )
    return 1


def _log_unexpected() -> str | None:
    """Log the exception being handled to the log file; where it went, or None if nowhere."""
    import logging

    try:
        settings = _settings()
        if not logging.getLogger().handlers:
            from gpushop_tui.logs import configure_logging

            configure_logging(settings)
        logging.getLogger(PROG).exception("unexpected error")
        return str(settings.paths.log_file)
    except Exception:
        return None
