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
from gpushop_tui.config import load_settings, url_without_password
from gpushop_tui.core import SecretStore, redact
from gpushop_tui.errors import UserError

if TYPE_CHECKING:
    from gpushop_tui.core import Facade, OrphanRow


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
        print_json(
            {name: str(path) for name, path in entries.items()} | {"back_up": str(paths.data_dir)}
        )
    else:
        print_table(
            [
                (name, str(path), "" if path.exists() else "(not created yet)")
                for name, path in entries.items()
            ],
            ("WHAT", "WHERE", ""),
        )
        print(
            f"\nBack up {paths.data_dir}: its database holds the sessions and this install's id "
            "(in every instance's label, how gpushop finds its instances again) and keys/ the "
            "SSH keys. Without it, instances it rented are no longer known as this install's."
        )
    return 0


def _shown_value(name: str, value: Any) -> Any:
    """A setting's value as it may be shown: webhook URLs carry tokens in their path, and a
    database URL may carry a password."""
    if name == "webhook_url" and isinstance(value, str):
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.netloc}/***" if parts.netloc else "***"
    if name == "database_url" and isinstance(value, str):
        return url_without_password(value)
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


async def _reconcile(shopper: Facade, output: str) -> int:
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
    """`cleanup-orphans`: instances as the providers list them; destroy on --execute."""
    return int(asyncio.run(with_shopper(lambda shopper: _cleanup(shopper, args))))


def _named_instance(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The provider and instance id to list: from `--instance PROVIDER:ID`, else `-p` alone."""
    if args.instance is None:
        return args.provider, None
    provider, _, instance_id = args.instance.partition(":")
    if not provider or not instance_id:
        raise UserError(f"--instance takes PROVIDER:ID, such as vastai:1234, not {args.instance!r}")
    if args.provider not in (None, provider):
        raise UserError(f"--instance {args.instance} is not at -p {args.provider}")
    return provider, instance_id


async def _cleanup(shopper: Facade, args: argparse.Namespace) -> int:
    provider, instance_id = _named_instance(args)
    listing = {"all_installs": args.all_installs, "instance_id": instance_id}
    rows, problems = await shopper.cleanup_orphans(provider, **listing)
    doomed = [r for r in rows if args.all or not r.live_session]
    others = sum(not r.ours for r in doomed)
    if args.execute and doomed:
        if args.output == "table" and not args.force:
            _print_orphans(rows, args.all_installs)
        if not args.force and not _confirm(len(doomed), others):
            note("nothing was destroyed")
            return 1
        rows, problems = await shopper.cleanup_orphans(
            provider, execute=True, include_live=args.all, **listing
        )
    if args.output == "json":
        print_json({"instances": [vars(r) for r in rows], "problems": problems})
    elif rows or not problems:
        _print_orphans(rows, args.all_installs)
        if args.execute and not doomed:
            print("nothing to destroy" + ("" if args.all else " (live sessions are kept)"))
        elif not args.execute:
            print(
                f"dry run: {len(doomed)} would be destroyed"
                + (f" ({others} of another install)" if others else "")
                + "; add --execute to destroy them"
            )
    for problem in problems:
        note(problem)
    if problems:
        note("what those providers hold is not known: nothing above speaks for them")
    failed = [r for r in rows if r.action.startswith("destroy failed")]
    return 1 if problems or failed else 0


def _print_orphans(rows: Sequence[OrphanRow], all_installs: bool) -> None:
    if not rows:
        print(
            "no instance carries a gpushop label"
            if all_installs
            else "no instance carries our label"
        )
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
                f"{r.install_id} (ours)" if r.ours else r.install_id or "-",
                _age(r.age_s),
                f"${r.usd_per_hour:.3f}/h" if r.usd_per_hour is not None else "-",
                r.action,
            )
            for r in rows
        ],
        (
            "PROVIDER",
            "INSTANCE",
            "STATE",
            "SESSION",
            "SESSION STATUS",
            "LIVE",
            "INSTALL",
            "AGE",
            "RATE",
            "ACTION",
        ),
    )


def _age(seconds: float | None) -> str:
    """An age in a table cell, in its two largest units ('3d04h', '2h05m', '7m', '40s')."""
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def _confirm(count: int, others: int) -> bool:
    """Ask for a typed 'yes' on stdin before destroying `count` instances, `others` of them
    another install's."""
    whose = f", {others} of them another install's" if others else ""
    print(f"Destroy {count} instance(s){whose}? Type 'yes' to go on: ", end="", file=sys.stderr)
    sys.stderr.flush()
    return sys.stdin.readline().strip() == "yes"


def run_serve_token(args: argparse.Namespace) -> int:
    """`serve-token`: the API's admin bearer token, or one limited to a consumer; `--revoke`
    deletes a consumer's token."""
    settings = load_settings()
    settings.paths.prepare()
    book = TokenBook.open(settings.paths.data_dir)
    if args.revoke is not None:
        if not book.revoke(args.revoke):
            note(f"{args.revoke} has no token; nothing was revoked")
            return 1
        print(f"Revoked {args.revoke}'s token.")
        return 0
    print(book.for_consumer(args.consumer) if args.consumer else book.admin)
    return 0
