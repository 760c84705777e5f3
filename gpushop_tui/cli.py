"""The `gpushop` entry point: the TUI by default, `--serve`, `--demo`, and one-shot subcommands.

Only argparse is imported at module level, so `gpushop --help` and `--version` stay fast; each
command imports what it needs when it runs. Every subcommand is registered once, in `COMMANDS`.
Errors the user can cause print one line to stderr and exit 2; anything else is logged with its
traceback and reported in one line, never dumped on the terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from gpushop_tui import __version__

if TYPE_CHECKING:
    from gpushop_tui.config import Settings

PROG = "gpushop"
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help line, argument set-up and handler."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )


def _print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


# -- paths -------------------------------------------------------------------------------------


def _run_paths(args: argparse.Namespace) -> int:
    paths = _settings().paths
    entries = {
        "data": paths.data_dir,
        "keys": paths.keys_dir,
        "database": paths.db_file,
        "logs": paths.log_file,
        "config": paths.config_file,
    }
    if args.output == "json":
        _print_json({name: str(path) for name, path in entries.items()})
    else:
        _print_table(
            [
                (name, str(path), "" if path.exists() else "(not created yet)")
                for name, path in entries.items()
            ],
            ("WHAT", "WHERE", ""),
        )
    return 0


# -- config ------------------------------------------------------------------------------------


def _shown_value(name: str, value: Any) -> Any:
    """A setting's value as it may be shown: webhook URLs carry tokens in their path."""
    from gpushop_tui.secrets import redact

    if name == "webhook_url" and isinstance(value, str):
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.netloc}/***" if parts.netloc else "***"
    return redact(str(value)) if value is not None else None


def _run_config(args: argparse.Namespace) -> int:
    settings = _settings()
    rows = settings.describe()
    if args.output == "json":
        _print_json(
            [
                {
                    "name": row.name,
                    "env": row.env,
                    "value": _shown_value(row.name, row.value),
                    "source": row.source,
                    "meaning": row.meaning,
                }
                for row in rows
            ]
        )
        return 0
    print(f"# config file: {settings.paths.config_file}")
    _print_table(
        [
            (
                row.name,
                "(unset)" if row.value is None else str(_shown_value(row.name, row.value)),
                row.source,
                row.env,
            )
            for row in rows
        ],
        ("SETTING", "VALUE", "SOURCE", "ENV"),
    )
    return 0


# -- keys --------------------------------------------------------------------------------------


def _configure_keys(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    setp = actions.add_parser("set", help="store a provider credential in the OS keyring")
    setp.add_argument("provider", help="vastai, tensordock or bluelobster")
    listp = actions.add_parser("list", help="show which credentials are set (never the values)")
    _add_output(listp)
    deletep = actions.add_parser("delete", help="remove a provider credential from the keyring")
    deletep.add_argument("provider")


def _run_keys(args: argparse.Namespace) -> int:
    from gpushop_tui.secrets import SecretStore

    secrets = SecretStore()
    if args.keys_action == "list":
        rows, problem = secrets.status()
        if args.output == "json":
            _print_json(
                {
                    "credentials": [
                        {"provider": r.provider, "env_var": r.env_var, "source": r.source}
                        for r in rows
                    ],
                    "keyring_problem": problem,
                }
            )
        else:
            _print_table(
                [(r.provider, r.env_var, r.source or "not set") for r in rows],
                ("PROVIDER", "ENV VAR", "SOURCE"),
            )
            if problem:
                print(f"\nnote: {problem}")
        return 0
    if args.keys_action == "set":
        secrets.require_keyring(args.provider)
        value = _read_secret(f"{args.provider} credential: ")
        secrets.set(args.provider, value)
        print(f"Stored the {args.provider} credential in the OS keyring.")
        return 0
    if secrets.delete(args.provider):
        print(f"Deleted the {args.provider} credential from the OS keyring.")
        return 0
    print(f"No {args.provider} credential was stored in the OS keyring.", file=sys.stderr)
    return 1


# -- inventory and check -----------------------------------------------------------------------

TABLE_ROWS = 30
"""How many offers the inventory table shows unless --limit says otherwise."""


def _configure_inventory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "query",
        nargs="*",
        help="filter and sort, e.g. 'gpu=4090 vram>=24 price<=0.5 n>=2 region=US sort=price'",
    )
    _add_output(parser)
    parser.add_argument("--limit", type=_positive_int, help="show at most N offers")
    parser.add_argument("--refresh", action="store_true", help="ignore cached offers")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _run_inventory(args: argparse.Namespace) -> int:
    import asyncio

    from gpushop_tui.query import parse_query

    query = parse_query(" ".join(args.query))
    if args.limit is not None:
        query = query.model_copy(update={"limit": args.limit})
    view = asyncio.run(_with_shopper(lambda shopper: shopper.offers(query, refresh=args.refresh)))
    if args.output == "json":
        from gpushop_tui.query import format_query

        _print_json(
            {
                "query": format_query(query),
                "offers": [
                    {
                        **o.model_dump(mode="json", exclude={"raw"}),
                        "price_per_gpu_hour": round(o.price_per_gpu_hour, 6),
                    }
                    for o in view.offers
                ],
                "total": view.total,
                "hidden_after_failures": view.hidden,
                "providers": [_report_json(r) for r in view.providers],
            }
        )
    else:
        shown = view.offers if args.limit is not None else view.offers[:TABLE_ROWS]
        _print_table(
            [
                (
                    o.id,
                    o.gpu_name,
                    str(o.gpu_count),
                    f"{o.vram_gb:g}",
                    f"{o.price_per_hour:.3f}",
                    f"{o.price_per_gpu_hour:.3f}",
                    o.country or o.region or "?",
                    f"{o.reliability:.3f}" if o.reliability is not None else "-",
                    f"{o.cuda:g}" if o.cuda is not None else "-",
                )
                for o in shown
            ],
            ("OFFER", "GPU", "N", "VRAM", "$/H", "$/GPU-H", "WHERE", "REL", "CUDA"),
        )
        more = len(view.offers) - len(shown)
        print(
            f"\n{len(view.offers)} matching of {view.total} offers"
            + (f" ({more} more: use --limit)" if more else "")
            + (f"; {view.hidden} hidden after repeated failures" if view.hidden else "")
        )
        for report in view.providers:
            print(f"  {report.describe()}")
    return _menu_exit_code(view)


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "provider": report.provider,
        "status": report.status,
        "offers": report.offers,
        "age_s": round(report.age_s, 1) if report.age_s is not None else None,
        "error": report.error,
    }


def _menu_exit_code(view: Any) -> int:
    """Non-zero when no configured provider could give any offers at all."""
    from gpushop_tui.errors import UserError

    configured = [r for r in view.providers if r.status != "not configured"]
    if not configured:
        raise UserError(
            "no provider is configured; set VASTAI_API_KEY, TENSORDOCK_API_TOKEN or "
            "BLUELOBSTER_API_KEY, or run 'gpushop keys set PROVIDER'"
        )
    if all(r.status == "error" for r in configured):
        print(f"{PROG}: error: no provider answered", file=sys.stderr)
        return 1
    return 0


def _run_check(args: argparse.Namespace) -> int:
    import asyncio

    checks = asyncio.run(_with_shopper(lambda shopper: shopper.check_providers()))
    if args.output == "json":
        _print_json([{**vars(c), "works": c.works} for c in checks])
    else:

        def yes_no(value: bool | None) -> str:
            return "-" if value is None else ("yes" if value else "NO")

        _print_table(
            [
                (
                    c.provider,
                    yes_no(c.configured),
                    yes_no(c.key_valid),
                    yes_no(c.reachable),
                    f"{c.latency_ms:.0f} ms" if c.latency_ms is not None else "-",
                    c.error or ("" if c.configured else "no credential set"),
                )
                for c in checks
            ],
            ("PROVIDER", "CONFIGURED", "KEY OK", "REACHABLE", "LATENCY", "PROBLEM"),
        )
    return 0 if any(c.works for c in checks) else 1


async def _with_shopper(action: Callable[[Any], Any]) -> Any:
    """Open the core for one command, run `action` on it, close it again."""
    from gpushop_tui.core.shopper import Shopper
    from gpushop_tui.logs import configure_logging

    settings = _settings()
    settings.paths.prepare()
    configure_logging(settings)
    async with await Shopper.open(settings) as shopper:
        return await action(shopper)


def _read_secret(prompt: str) -> str:
    """A secret from the terminal without echo, or one line of piped standard input."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass(prompt)
    return sys.stdin.readline()


COMMANDS: tuple[Command, ...] = (
    Command(
        "paths", "print where data, keys, database, logs and config live", _add_output, _run_paths
    ),
    Command("config", "print every setting with its value and source", _add_output, _run_config),
    Command(
        "keys",
        "manage provider credentials (OS keyring; env vars override)",
        _configure_keys,
        _run_keys,
    ),
    Command(
        "inventory",
        "list offers across providers, filtered and sorted by a query",
        _configure_inventory,
        _run_inventory,
    ),
    Command(
        "check",
        "per provider: credential set? accepted? reachable? how fast?",
        _add_output,
        _run_check,
    ),
)


def build_parser() -> argparse.ArgumentParser:
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def _settings() -> Settings:
    from gpushop_tui.config import load_settings

    return load_settings()


def _run_tui(args: argparse.Namespace) -> int:
    if args.serve:
        print(
            f"{PROG}: the JSON API (--serve) is not available in this version yet.", file=sys.stderr
        )
        return 1
    if args.demo:
        return _run_demo()
    from gpushop_tui.logs import configure_logging
    from gpushop_tui.tui.app import GpushopApp

    settings = _settings()
    settings.paths.prepare()
    configure_logging(settings)
    GpushopApp(settings).run()
    return 0


def _run_demo() -> int:
    """The TUI on the simulated marketplace, with a throw-away data dir."""
    import os
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
    args = build_parser().parse_args(argv)
    if args.command and (args.demo or args.serve):
        build_parser().error(f"--demo and --serve cannot be combined with '{args.command}'")
    run: Callable[[argparse.Namespace], int] = getattr(args, "run", _run_tui)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _report(exc)


def _report(exc: Exception) -> int:
    """One line on stderr for any failure; the traceback goes to the log, never the terminal."""
    from gpushop_tui.errors import UserError
    from gpushop_tui.secrets import redact

    if isinstance(exc, UserError):
        print(f"{PROG}: error: {redact(exc.message)}", file=sys.stderr)
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
