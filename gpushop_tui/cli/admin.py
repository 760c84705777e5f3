"""The admin commands' arguments: paths, config, keys, reconcile, cleanup-orphans, serve-token.

Their handlers are in handlers/admin.py.
"""

from __future__ import annotations

import argparse

from gpushop_tui.cli.args import Command, add_output

HANDLERS = "gpushop_tui.cli.handlers.admin"


def _configure_keys(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    setp = actions.add_parser("set", help="store a provider credential in the OS keyring")
    setp.add_argument(
        "provider",
        help="vastai, tensordock, bluelobster, runpod, lambda, webhook, or remote "
        "(the token for --remote)",
    )
    listp = actions.add_parser("list", help="show which credentials are set (never the values)")
    add_output(listp)
    deletep = actions.add_parser("delete", help="remove a provider credential from the keyring")
    deletep.add_argument("provider")


def _configure_cleanup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--provider", help="only this provider")
    parser.add_argument("--execute", action="store_true", help="destroy (default: a dry run)")
    parser.add_argument("--force", action="store_true", help="do not ask for a typed 'yes'")
    parser.add_argument("--all", action="store_true", help="destroy instances of live sessions too")
    parser.add_argument(
        "--all-installs",
        action="store_true",
        help="list every instance with a gpushop label, of any install (a lost data dir's "
        "too); --execute then destroys other installs' instances as well",
    )
    parser.add_argument(
        "--instance",
        metavar="PROVIDER:ID",
        help="only this instance, of any install (--execute destroys it)",
    )
    add_output(parser)


def _configure_serve_token(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "-c", "--consumer", help="the token limited to this consumer (made on first ask)"
    )
    which.add_argument(
        "--revoke", metavar="CONSUMER", help="delete this consumer's token; it stops working"
    )


PATHS = Command(
    "paths",
    "print where data, keys, database, logs and config live",
    add_output,
    f"{HANDLERS}:run_paths",
)
CONFIG = Command(
    "config", "print every setting with its value and source", add_output, f"{HANDLERS}:run_config"
)
KEYS = Command(
    "keys",
    "manage provider credentials (OS keyring; env vars override)",
    _configure_keys,
    f"{HANDLERS}:run_keys",
)
RECONCILE = Command(
    "reconcile",
    "one supervisor pass, for cron: deadlines, reconciliation, teardowns",
    add_output,
    f"{HANDLERS}:run_reconcile",
)
CLEANUP_ORPHANS = Command(
    "cleanup-orphans",
    "find our instances (or any install's) straight from the provider lists; destroy on --execute",
    _configure_cleanup,
    f"{HANDLERS}:run_cleanup",
)
SERVE_TOKEN = Command(
    "serve-token",
    "print the bearer token for 'gpushop --serve' (or one limited to a consumer); revoke one",
    _configure_serve_token,
    f"{HANDLERS}:run_serve_token",
)
