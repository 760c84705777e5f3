"""What paths, config, keys, reconcile, cleanup-orphans and serve-token do.

Their arguments are in cli/admin.py.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from gpushop_tui.api.tokens import TokenBook
from gpushop_tui.cli.handlers import with_shopper
from gpushop_tui.cli.output import note, print_json, print_table
from gpushop_tui.config import load_settings
from gpushop_tui.core import SecretStore, redact

if TYPE_CHECKING:
    from gpushop_tui.core import OrphanRow, Shopper


def run_paths(args: argparse.Namespace) -> int:
    """`paths`: where data, keys, database, logs and config live."""
    paths = load_settings().paths
    entries = {
        "data": paths.data_dir,
        "keys": paths.keys_dir,
        "database": paths.db_file,
        "logs": paths.log_file,
        "config": paths.config_file,
    }
    if args.output == "json":
        print_json({name: str(path) for name, path in entries.items()})
    else:
        print_table(
            [
                (name, str(path), "" if path.exists() else "(not created yet)")
                for name, path in entries.items()
            ],
            ("WHAT", "WHERE", ""),
        )
    return 0


def _shown_value(name: str, value: Any) -> Any:
    """A setting's value as it may be shown: webhook URLs carry tokens in their path."""
    if name == "webhook_url" and isinstance(value, str):
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.netloc}/***" if parts.netloc else "***"
    return redact(str(value)) if value is not None else None


def run_config(args: argparse.Namespace) -> int:
    """`config`: every setting, its value (secrets masked) and where the value comes from."""
    settings = load_settings()
    rows = settings.describe()
    if args.output == "json":
        print_json(
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
    print_table(
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


def run_keys(args: argparse.Namespace) -> int:
    """`keys list|set|delete`: provider credentials in the OS keyring."""
    secrets = SecretStore()
    if args.keys_action == "list":
        rows, problem = secrets.status()
        if args.output == "json":
            print_json(
                {
                    "credentials": [
                        {"provider": r.provider, "env_var": r.env_var, "source": r.source}
                        for r in rows
                    ],
                    "keyring_problem": problem,
                }
            )
        else:
            print_table(
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


def _read_secret(prompt: str) -> str:
    """A secret from the terminal without echo, or one line of piped standard input."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline()


def run_reconcile(args: argparse.Namespace) -> int:
    """`reconcile`: one supervisor pass, unless a supervisor already runs."""
    return int(asyncio.run(with_shopper(lambda shopper: _reconcile(shopper, args.output))))


async def _reconcile(shopper: Shopper, output: str) -> int:
    report = await shopper.reconcile_once()
    if report is None:
        lease = await shopper.supervisor_lease()
        who = f"pid {lease.pid} ({lease.holder})" if lease else "another process"
        if output == "json":
            print_json({"skipped": True, "supervisor": who})
        else:
            print(f"A supervisor is already running ({who}); it reconciles on its own.")
        return 0
    if output == "json":
        print_json(
            {
                "skipped": False,
                "open_sessions": report.sessions,
                "providers": [vars(r) for r in report.reconciled],
            }
        )
    else:
        for r in report.reconciled:
            if not r.ok:
                print(f"{r.provider}: cannot list instances: {r.error}")
                continue
            found = [
                f"{len(ids)} {what} ({', '.join(ids)})"
                for what, ids in (("adopted", r.adopted), ("orphans", r.orphans), ("gone", r.gone))
                if ids
            ]
            print(f"{r.provider}: {r.listed} listed" + "".join(f"; {f}" for f in found))
        if not report.reconciled:
            print("no provider is configured")
        print(f"{report.sessions} open session(s)")
    return 1 if any(not r.ok for r in report.reconciled) else 0


def run_cleanup(args: argparse.Namespace) -> int:
    """`cleanup-orphans`: our instances as the providers list them; destroy on --execute."""
    return int(asyncio.run(with_shopper(lambda shopper: _cleanup(shopper, args))))


async def _cleanup(shopper: Shopper, args: argparse.Namespace) -> int:
    rows, problems = await shopper.cleanup_orphans(args.provider)
    doomed = [r for r in rows if args.all or not r.live_session]
    if args.execute and doomed:
        if args.output == "table" and not args.force:
            _print_orphans(rows)
        if not args.force and not _confirm(len(doomed)):
            note("nothing was destroyed")
            return 1
        rows, problems = await shopper.cleanup_orphans(
            args.provider, execute=True, include_live=args.all
        )
    if args.output == "json":
        print_json({"instances": [vars(r) for r in rows], "problems": problems})
    else:
        _print_orphans(rows)
        if args.execute and not doomed:
            print("nothing to destroy" + ("" if args.all else " (live sessions are kept)"))
        elif not args.execute:
            print(f"dry run: {len(doomed)} would be destroyed; add --execute to destroy them")
    for problem in problems:
        note(problem)
    failed = [r for r in rows if r.action.startswith("destroy failed")]
    return 1 if problems or failed else 0


def _print_orphans(rows: Sequence[OrphanRow]) -> None:
    if not rows:
        print("no instance carries our label")
        return
    print_table(
        [
            (
                r.provider,
                r.instance_id,
                r.state,
                r.session_id or "-",
                r.session_status or "unknown",
                "yes" if r.live_session else "no",
                r.action,
            )
            for r in rows
        ],
        ("PROVIDER", "INSTANCE", "STATE", "SESSION", "SESSION STATUS", "LIVE", "ACTION"),
    )


def _confirm(count: int) -> bool:
    """Ask for a typed 'yes' on stdin before destroying `count` instances."""
    print(f"Destroy {count} instance(s)? Type 'yes' to go on: ", end="", file=sys.stderr)
    sys.stderr.flush()
    return sys.stdin.readline().strip() == "yes"


def run_serve_token(args: argparse.Namespace) -> int:
    """`serve-token`: the API's admin bearer token, or one limited to a consumer."""
    settings = load_settings()
    settings.paths.prepare()
    book = TokenBook.open(settings.paths.data_dir)
    print(book.for_consumer(args.consumer) if args.consumer else book.admin)
    return 0
