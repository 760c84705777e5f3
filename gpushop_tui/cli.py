"""The `gpushop` entry point: the TUI by default, `--serve`, `--demo`, and one-shot subcommands.

Only argparse is imported at module level, so `gpushop --help` and `--version` stay fast; each
command imports what it needs when it runs. Every subcommand is registered once, in `COMMANDS`.
Errors the user can cause print one line to stderr and exit 2; anything else is logged with its
traceback and reported in one line, never dumped on the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from gpushop_tui import __version__

if TYPE_CHECKING:
    from datetime import date, datetime

    from gpushop_tui.config import Settings
    from gpushop_tui.core.benchmarks import GpuSummary, Ranked
    from gpushop_tui.core.events import Subscription
    from gpushop_tui.core.inventory import InventoryView
    from gpushop_tui.core.shopper import OrphanRow, Shopper
    from gpushop_tui.models import Benchmark, OfferQuery, ProvisionRequest, Session

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
    setp.add_argument("provider", help="vastai, tensordock, bluelobster or webhook")
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
        help="filter and sort, e.g. 'gpu=4090 vram>=24 price<=0.5 n>=2 region=US sort=price'; "
        "'model=llama3.1:8b sort=usd_per_mtok' ranks by estimated $ per million tokens",
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

    from gpushop_tui.query import format_query, parse_query

    async def answer(shopper: Shopper) -> tuple[OfferQuery, InventoryView]:
        query = parse_query(" ".join(args.query), await shopper.benchmarks.models())
        if args.limit is not None:
            query = query.model_copy(update={"limit": args.limit})
        return query, await shopper.offers(query, refresh=args.refresh)

    query, view = asyncio.run(_with_shopper(answer))
    estimates = view.usd_per_mtok
    if args.output == "json":
        _print_json(
            {
                "query": format_query(query),
                "offers": [
                    {
                        **o.model_dump(mode="json", exclude={"raw"}),
                        "price_per_gpu_hour": round(o.price_per_gpu_hour, 6),
                        **({"usd_per_mtok": _rounded(estimates.get(o.id))} if query.model else {}),
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
                    *([_money(estimates.get(o.id))] if query.model else []),
                )
                for o in shown
            ],
            ("OFFER", "GPU", "N", "VRAM", "$/H", "$/GPU-H", "WHERE", "REL", "CUDA")
            + (("$/Mtok",) if query.model else ()),
        )
        more = len(view.offers) - len(shown)
        print(
            f"\n{len(view.offers)} matching of {view.total} offers"
            + (f" ({more} more: use --limit)" if more else "")
            + (f"; {view.hidden} hidden after repeated failures" if view.hidden else "")
        )
        if query.model:
            print(
                f"$/Mtok: estimated $ per million tokens of {query.model}, from measured tokens/s "
                f"of the same GPU ('{PROG} benchmarks -m {query.model}'); - where none"
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


# -- benchmarks --------------------------------------------------------------------------------

RANKINGS = ("best", "cheapest", "compare", "recommend")
BENCHMARK_FORMATS = """\
FILE is one of:
  result JSON  the earlier implementation's benchmark result, or a list of them:
               hardware.gpu_name, .gpu_count, .gpu_memory_mib; model.name, .runtime;
               results.avg_tokens_per_second; provider; price_per_hour; timestamp
  CSV          a header row, then one measurement a row; columns:
                 gpu_name           the GPU, any provider's spelling (required)
                 model              e.g. llama3.1:8b (required)
                 tokens_per_second  measured generation speed (required)
                 gpu_count          GPUs used (default 1)
                 provider           where it ran, e.g. vastai
                 price_per_hour     USD/h paid
                 runtime            e.g. ollama, vllm
                 measured_at        ISO 8601 with a time zone, e.g. 2026-01-31T12:00:00Z
                 note               free text, not stored
Importing a file of the same name again replaces what it imported before.
$/Mtok = price_per_hour / (tokens/s x 3600) x 1e6.
"""
"""`benchmarks --help`; a test keeps its CSV columns in step with core.benchmarks.CSV_COLUMNS."""


def _configure_benchmarks(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = BENCHMARK_FORMATS
    parser.add_argument(
        "action",
        nargs="?",
        choices=(*RANKINGS, "import"),
        help="best: fastest first; cheapest: lowest $ per million tokens first; compare: each "
        "relative to the fastest; recommend: per-GPU averages; import FILE: add measurements. "
        "None: list the measurements",
    )
    parser.add_argument("file", nargs="?", type=Path, help="with import: a result JSON or CSV")
    parser.add_argument("-m", "--model", help="the LLM, e.g. llama3.1:8b (rankings need one)")
    parser.add_argument("-g", "--gpu", help="only these GPUs, as in the query's gpu=, e.g. 4090")
    parser.add_argument("-l", "--limit", type=_positive_int, help="show at most N rows")
    parser.add_argument(
        "--min-tps", type=_non_negative, help="cheapest: only measurements this fast or faster"
    )
    _add_output(parser)


def _run_benchmarks(args: argparse.Namespace) -> int:
    import asyncio

    from gpushop_tui.errors import UserError

    if args.action == "import":
        if args.file is None:
            raise UserError("benchmarks import needs a FILE (a result JSON or CSV)")
        if args.model or args.gpu or args.limit or args.min_tps is not None:
            raise UserError("benchmarks import takes only FILE and -o")
    elif args.file is not None:
        raise UserError(f"a FILE ({args.file}) is only for 'benchmarks import'")
    if args.action in RANKINGS and not args.model:
        raise UserError(f"benchmarks {args.action} needs a model: -m NAME, e.g. -m llama3.1:8b")
    if args.min_tps is not None and args.action != "cheapest":
        raise UserError("--min-tps is only for 'benchmarks cheapest'")
    return int(asyncio.run(_with_shopper(lambda shopper: _benchmarks(shopper, args))))


async def _benchmarks(shopper: Shopper, args: argparse.Namespace) -> int:
    from gpushop_tui.core import benchmarks

    if args.action == "import":
        imported, replaced = await shopper.benchmarks.import_file(args.file)
        if args.output == "json":
            _print_json({"source": args.file.name, "imported": imported, "replaced": replaced})
        else:
            print(
                f"Imported {imported} measurements from {args.file.name}"
                + (f" (in place of the {replaced} it gave before)." if replaced else ".")
            )
        return 0
    measured = await shopper.benchmarks.measurements(args.model, args.gpu)
    if args.action == "recommend":
        _print_summaries(benchmarks.recommend(measured)[: args.limit], args.output)
        return 0
    if args.action == "best":
        ranked = benchmarks.best(measured)
    elif args.action == "cheapest":
        ranked = benchmarks.cheapest(measured, args.min_tps)
    elif args.action == "compare":
        ranked = benchmarks.compare(measured)
    else:
        ranked = [
            benchmarks.Ranked(m, benchmarks.cost_of(m))
            for m in sorted(measured, key=lambda m: (m.model, -m.tokens_per_second))
        ]
    _print_ranked(ranked[: args.limit], args.output, compared=args.action == "compare")
    return 0


def _print_ranked(ranked: Sequence[Ranked], output: str, *, compared: bool) -> None:
    if output == "json":
        _print_json(
            [
                {
                    **r.measurement.model_dump(mode="json", exclude={"id"}),
                    "usd_per_mtok": _rounded(r.usd_per_mtok),
                    **(
                        {
                            "speedup": _rounded(r.speedup),
                            "cost_efficiency": _rounded(r.cost_efficiency),
                        }
                        if compared
                        else {}
                    ),
                }
                for r in ranked
            ]
        )
        return
    if not ranked:
        print("No measurements match.")
        return
    extra: tuple[str, ...] = ("SPEEDUP", "TOK/$ VS BEST") if compared else ()
    _print_table(
        [
            (
                *_measurement_cells(r.measurement),
                _money(r.usd_per_mtok),
                *((_ratio(r.speedup), _ratio(r.cost_efficiency)) if compared else ()),
                r.measurement.source,
            )
            for r in ranked
        ],
        ("MODEL", "GPU", "N", "PROVIDER", "TOK/S", "$/H", "$/Mtok", *extra, "SOURCE"),
    )


def _measurement_cells(m: Benchmark) -> tuple[str, ...]:
    """MODEL, GPU, N, PROVIDER, TOK/S and $/H of one measurement."""
    return (
        m.model,
        m.gpu_name,
        str(m.gpu_count),
        m.provider or "-",
        f"{m.tokens_per_second:g}",
        _money(m.price_per_hour),
    )


def _print_summaries(summaries: Sequence[GpuSummary], output: str) -> None:
    if output == "json":
        from dataclasses import asdict

        _print_json(
            [
                {
                    name: _rounded(value) if isinstance(value, float) else value
                    for name, value in asdict(s).items()
                }
                for s in summaries
            ]
        )
        return
    _print_table(
        [
            (
                s.gpu_name,
                str(s.gpu_count),
                str(s.samples),
                f"{s.avg_tokens_per_second:.1f}",
                f"{s.avg_price_per_hour:.3f}" if s.avg_price_per_hour is not None else "-",
                _money(s.usd_per_mtok),
            )
            for s in summaries
        ],
        ("GPU", "N", "SAMPLES", "AVG TOK/S", "AVG $/H", "$/Mtok"),
    )


def _money(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def _ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _rounded(value: float | None) -> float | None:
    return round(value, 6) if value is not None else None


# -- renting: provision, sessions, shutdown, transfer ------------------------------------------

EXIT_FAILED = 1
EXIT_NOT_SETTLED = 3
WORKLOADS = (
    "interactive", "llm", "llm_vllm", "llm_tgi", "training", "batch", "inference", "benchmark"
)  # fmt: skip
"""The workload types (models.Workload; a test keeps the two in step)."""
STATUSES = ("pending", "provisioning", "running", "stopping", "stopped", "failed")
"""The session statuses (models.SessionStatus; a test keeps the two in step)."""
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
  0  stopped: the instance is gone (or stopped with its disk kept); with --no-wait: accepted
  2  usage or user error (unknown session id)
  3  the teardown is still under way when the wait ended: the supervisor carries on"""


def _hours(text: str) -> float:
    """A reservation length: 1 to 12 hours."""
    value = _number(text)
    if not 1 <= value <= 12:
        raise argparse.ArgumentTypeError(f"{text} hours is out of range; give 1 to 12")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("give a reason (it is written to the audit log)")
    return text.strip()


def _add_wait(parser: argparse.ArgumentParser, default: float | None, what: str) -> None:
    parser.add_argument(
        "--no-wait", action="store_true", help=f"answer at once instead of waiting for {what}"
    )
    parser.add_argument(
        "--wait-timeout",
        type=_positive,
        default=default,
        metavar="S",
        help=f"wait at most S seconds for {what}"
        + (f" (default {default:g})" if default else " (default: the provider's budget)"),
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
        "-t", "--hours", type=_hours, help="reservation, 1-12 hours (default: the setting)"
    )
    parser.add_argument("-w", "--workload", choices=WORKLOADS, default="interactive")
    parser.add_argument(
        "--idle-timeout",
        type=_non_negative,
        metavar="MIN",
        help="stop after MIN idle minutes; 0 disables (default: the setting)",
    )
    parser.add_argument(
        "--storage",
        choices=tuple(STORAGE),
        default="destroy",
        help="what 'done' does: destroy the instance, or stop it and keep its disk",
    )
    parser.add_argument(
        "--save-key", type=Path, metavar="PATH", help="also copy the private key here (0600)"
    )
    parser.add_argument(
        "--request-id", metavar="ID", help="asking again with the same id rents nothing new"
    )
    _add_wait(parser, None, "readiness")
    _add_output(parser)


def _gpu_query(text: str) -> str:
    """A query as given, or `gpu=<name>` for a bare GPU name such as '4090'."""
    if any(mark in text for mark in "=<>"):
        return text
    return "gpu=" + "".join(text.split())


def _provision_request(args: argparse.Namespace, settings: Settings) -> ProvisionRequest:
    from pydantic import ValidationError

    from gpushop_tui.errors import UserError
    from gpushop_tui.models import ProvisionRequest

    try:
        return ProvisionRequest(
            consumer=args.consumer,
            offer_id=args.offer,
            query=_gpu_query(args.gpu) if args.gpu is not None else None,
            hours=args.hours if args.hours is not None else settings.default_reservation_hours,
            workload=args.workload,
            idle_timeout_min=args.idle_timeout,
            storage=STORAGE[args.storage],
            request_id=args.request_id,
        )
    except ValidationError as err:
        first = err.errors()[0]
        flag = {"consumer": "--consumer", "request_id": "--request-id"}.get(
            str(first["loc"][0]) if first["loc"] else "", "provision"
        )
        raise UserError(f"{flag}: {first['msg'].removeprefix('Value error, ')}") from None


def _check_new_file(path: Path) -> Path:
    """A path we may create: it does not exist yet and its folder does."""
    from gpushop_tui.errors import UserError

    path = path.expanduser()
    if path.exists() or path.is_symlink():
        raise UserError(f"{path} already exists; --save-key never overwrites a file")
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a directory")
    return path


def _save_key(source: Path, target: Path) -> None:
    """Copy the private key to a new file of mode 0600 (never over an existing one)."""
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(target, 0o600)


def _run_provision(args: argparse.Namespace) -> int:
    import asyncio

    save_key = _check_new_file(args.save_key) if args.save_key is not None else None
    return int(asyncio.run(_with_shopper(lambda shopper: _provision(shopper, args, save_key))))


async def _provision(shopper: Shopper, args: argparse.Namespace, save_key: Path | None) -> int:
    request = _provision_request(args, shopper.settings)
    with shopper.subscribe() as events:
        session = await shopper.provision(request)
        if save_key is not None:
            try:
                _save_key(await shopper.key_path(session.id), save_key)
                _note(f"private key saved to {save_key}")
            except OSError as err:
                _note(f"warning: the key was not saved to {save_key}: {err.strerror or err}")
        await _warn_unsupervised(shopper, session)
        if not args.no_wait and not session.closed:
            budget = shopper.lifecycle.provision_budget(session.provider).total_seconds()
            timeout = args.wait_timeout or budget + 60
            session = await _wait_showing(shopper, events, session.id, timeout)
    await _print_outcome(shopper, session, args.output)
    if session.status == "running" or (args.no_wait and not session.status.terminal):
        return 0
    if session.status.terminal:
        _note(f"the rental did not succeed: {session.error or session.status.value}")
        return EXIT_FAILED
    _note(
        f"session {session.id} is not ready yet ({session.status}); it goes on without this "
        f"command: see 'gpushop sessions get {session.id}'"
    )
    return EXIT_NOT_SETTLED


async def _warn_unsupervised(shopper: Shopper, session: Session) -> None:
    if session.closed or await shopper.supervisor_lease() is not None:
        return
    _note(
        f"warning: no supervisor is running; once this command exits nothing watches session "
        f"{session.id} (expiry, idle stop, hard max). Keep 'gpushop --serve' running, or run "
        "'gpushop reconcile' from cron every few minutes."
    )


async def _wait_showing(
    shopper: Shopper, events: Subscription, session_id: str, timeout_s: float
) -> Session:
    """Wait until the session settles, printing its progress on stderr meanwhile."""
    import asyncio

    printer = asyncio.create_task(_show_progress(events, session_id))
    try:
        return await shopper.wait_settled(session_id, timeout_s)
    finally:
        await asyncio.sleep(0)  # let the printer show what is already queued
        printer.cancel()


async def _show_progress(events: Subscription, session_id: str) -> None:
    from gpushop_tui.core.events import Alert, SessionChanged
    from gpushop_tui.core.sessions import SessionProgress

    async for event in events:
        if event.session_id != session_id:
            continue
        if isinstance(event, SessionChanged):
            _note(f"{event.status}/{event.instance}: {event.message}")
        elif isinstance(event, SessionProgress | Alert):
            _note(event.message)


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _session_json(session: Session) -> dict[str, Any]:
    data: dict[str, Any] = session.model_dump(mode="json", exclude={"offer": {"raw"}})
    return data


async def _ssh_line(shopper: Shopper, session: Session) -> str | None:
    """The ssh command line of a session that has an address and is not closed."""
    import shlex

    if session.closed or not session.ssh_host or not session.ssh_port:
        return None
    return shlex.join(await shopper.ssh_argv(session.id))


async def _print_outcome(shopper: Shopper, session: Session, output: str) -> None:
    if output == "json":
        _print_json(_session_json(session))
        return
    ssh = await _ssh_line(shopper, session)
    _print_pairs(
        [
            ("session", session.id),
            ("status", f"{session.status} (instance {session.instance})"),
            ("ssh", ssh or "-"),
            *([("error", session.error)] if session.error else []),
        ]
    )


def _print_pairs(pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{name.ljust(width)}  {value}")


def _when(value: datetime | None) -> str:
    """A stored (UTC) time as this machine's local time, with its zone."""
    return f"{value.astimezone():%Y-%m-%d %H:%M %Z}" if value is not None else "-"


def _configure_sessions(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="sessions_action", metavar="ACTION", required=True)
    listp = actions.add_parser("list", help="sessions, newest first")
    listp.add_argument("-c", "--consumer", help="only this consumer's")
    listp.add_argument("-s", "--status", choices=STATUSES, help="only sessions in this status")
    listp.add_argument("--open", action="store_true", help="only sessions still supervised")
    _add_output(listp)
    getp = actions.add_parser("get", help="one session in detail, with its ssh command")
    getp.add_argument("id")
    _add_output(getp)
    for name, words in (
        ("done", "end a session: destroy it, or stop it and keep its disk (--storage keep)"),
        ("delete", "destroy a session's instance whatever its storage policy"),
    ):
        endp = actions.add_parser(
            name,
            help=words,
            description=words,
            epilog=TEARDOWN_EXITS,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        endp.add_argument("id")
        _add_wait(endp, TEARDOWN_WAIT_S, "the teardown")
        _add_output(endp)
    extendp = actions.add_parser("extend", help="push a session's reservation out")
    extendp.add_argument("id")
    extendp.add_argument("-t", "--hours", type=_positive, required=True, help="hours to add")
    extendp.add_argument(
        "--override-hard-max",
        type=_reason,
        metavar="REASON",
        help="allow going past the hard max (audited)",
    )
    _add_output(extendp)
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


def _run_sessions(args: argparse.Namespace) -> int:
    import asyncio

    action: str = args.sessions_action
    if action in ("done", "delete"):
        return _run_end(args, force=action == "delete")
    if action == "ssh":
        return _run_ssh(args)
    handlers: dict[str, Callable[[Shopper, argparse.Namespace], Awaitable[int]]] = {
        "list": _sessions_list,
        "get": _sessions_get,
        "extend": _sessions_extend,
        "key": _sessions_key,
    }
    handler = handlers[action]
    return int(asyncio.run(_with_shopper(lambda shopper: handler(shopper, args))))


async def _sessions_list(shopper: Shopper, args: argparse.Namespace) -> int:
    from gpushop_tui.models import SessionStatus

    sessions = await shopper.sessions(
        consumer=args.consumer,
        status=SessionStatus(args.status) if args.status else None,
        open_only=args.open,
    )
    if args.output == "json":
        _print_json([_session_json(s) for s in sessions])
        return 0
    if not sessions:
        print("no sessions")
        return 0
    _print_table(
        [
            (
                s.id,
                s.consumer,
                s.provider,
                f"{s.offer.gpu_count}x {s.offer.gpu_name}",
                s.status.value,
                s.instance.value,
                f"{s.price_per_hour:.3f}" if s.price_per_hour is not None else "-",
                _when(s.created_at),
                "-" if s.closed else _when(s.expires_at),
            )
            for s in sessions
        ],
        ("SESSION", "CONSUMER", "PROVIDER", "GPU", "STATUS", "INSTANCE", "$/H", "CREATED",
         "EXPIRES"),
    )  # fmt: skip
    return 0


async def _sessions_get(shopper: Shopper, args: argparse.Namespace) -> int:
    from gpushop_tui.core.costs import cost_of

    session = await shopper.session(args.id)
    if args.output == "json":
        _print_json(_session_json(session))
        return 0
    s = session
    hard_max = _when(s.hard_max_at) + (
        f" (overridden: {s.hard_max_override})" if s.hard_max_override else ""
    )
    _print_pairs(
        [
            ("session", s.id),
            ("consumer", s.consumer),
            ("offer", f"{s.offer_id}: {s.offer.gpu_count}x {s.offer.gpu_name}"),
            ("status", f"{s.status} (instance {s.instance})"),
            ("instance", f"{s.provider} {s.instance_id or '-'} ({s.label})"),
            ("price", f"${s.price_per_hour:.3f}/h" if s.price_per_hour is not None else "-"),
            ("cost", f"${cost_of(s, shopper.clock.now()):.4f}" + ("" if s.closed else " so far")),
            ("created", _when(s.created_at)),
            ("expires", _when(s.expires_at)),
            ("hard max", hard_max),
            ("idle", f"after {s.idle_timeout_min:g} min" if s.idle_timeout_min else "never"),
            ("idle reason", s.idle_reason or "-"),
            ("storage", s.storage_policy.value),
            ("ssh", await _ssh_line(shopper, s) or "-"),
            ("key", s.key_path if s.key_path and not s.closed else "-"),
            ("error", s.error or "-"),
        ]
    )
    return 0


async def _sessions_extend(shopper: Shopper, args: argparse.Namespace) -> int:
    session = await shopper.extend(args.id, args.hours, args.override_hard_max)
    if args.output == "json":
        _print_json(_session_json(session))
    else:
        print(
            f"session {session.id} now expires {_when(session.expires_at)} "
            f"(hard max {_when(session.hard_max_at)})"
        )
    return 0


async def _sessions_key(shopper: Shopper, args: argparse.Namespace) -> int:
    print(await shopper.key_path(args.id))
    return 0


def _run_end(args: argparse.Namespace, *, force: bool) -> int:
    import asyncio

    return int(asyncio.run(_with_shopper(lambda shopper: _end(shopper, args, force=force))))


async def _end(shopper: Shopper, args: argparse.Namespace, *, force: bool) -> int:
    """`sessions done|delete`, `shutdown`: ask for the end, then drive the teardown here."""
    with shopper.subscribe() as events:
        session = await (shopper.delete(args.id) if force else shopper.done(args.id))
        if not args.no_wait:
            session = await _wait_showing(shopper, events, session.id, args.wait_timeout)
    if args.output == "json":
        _print_json(_session_json(session))
    else:
        kept = "" if session.instance.absent else f" (instance {session.instance})"
        print(f"session {session.id}: {session.status}{kept}")
    if args.no_wait or session.status == "stopped" or session.closed:
        return 0
    _note(
        f"the teardown of session {session.id} is still under way; the supervisor carries on "
        "('gpushop --serve', or 'gpushop reconcile' from cron)"
    )
    return EXIT_NOT_SETTLED


def _run_ssh(args: argparse.Namespace) -> int:
    import asyncio
    import shlex

    from gpushop_tui.errors import UserError

    async def argv(shopper: Shopper) -> list[str]:
        session = await shopper.session(args.id)
        if session.closed:
            raise UserError(f"session {session.id} is closed ({session.status})")
        return await shopper.ssh_argv(session.id, *args.remote_command)

    command: list[str] = asyncio.run(_with_shopper(argv))
    if args.print:
        print(shlex.join(command))
        return 0
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise UserError(f"cannot run {command[0]}: {err.strerror or err}") from None


def _configure_shutdown(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = TEARDOWN_EXITS
    parser.add_argument("id")
    parser.add_argument(
        "-f", "--force", action="store_true", help="destroy whatever the storage policy says"
    )
    _add_wait(parser, TEARDOWN_WAIT_S, "the teardown")
    _add_output(parser)


def _run_shutdown(args: argparse.Namespace) -> int:
    return _run_end(args, force=args.force)


def _configure_transfer(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    up = actions.add_parser("upload", help="copy a local file to a session's node (SFTP)")
    up.add_argument("local", type=Path)
    up.add_argument("remote", metavar="SESSION:REMOTE")
    down = actions.add_parser("download", help="copy a file from a session's node (SFTP)")
    down.add_argument("remote", metavar="SESSION:REMOTE")
    down.add_argument("local", type=Path)


def _run_transfer(args: argparse.Namespace) -> int:
    import asyncio

    from gpushop_tui.errors import UserError

    session_id, sep, remote = args.remote.partition(":")
    if not sep or not session_id or not remote:
        raise UserError(f"{args.remote!r} should look like SESSION:REMOTE_PATH")
    if args.direction == "upload" and not args.local.is_file():
        raise UserError(f"{args.local} is not a file")
    progress = _Progress(args.local.name if args.direction == "upload" else remote)
    copied = asyncio.run(
        _with_shopper(
            lambda shopper: shopper.transfer(
                session_id, args.direction, args.local, remote, progress
            )
        )
    )
    progress.finish(int(copied))
    return 0


class _Progress:
    """Transfer progress on stderr: a line redrawn in place on a terminal, else one at the end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.live = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if self.live:
            share = f" ({done * 100 // total}%)" if total else ""
            print(f"\r{self.name}: {done}/{total} bytes{share}", end="", file=sys.stderr)

    def finish(self, copied: int) -> None:
        end = "\n" if self.live else ""
        print(f"{end}{self.name}: {copied} bytes copied", file=sys.stderr)


# -- supervision from cron: reconcile, cleanup-orphans -----------------------------------------


def _run_reconcile(args: argparse.Namespace) -> int:
    import asyncio

    return int(asyncio.run(_with_shopper(lambda shopper: _reconcile(shopper, args.output))))


async def _reconcile(shopper: Shopper, output: str) -> int:
    report = await shopper.reconcile_once()
    if report is None:
        lease = await shopper.supervisor_lease()
        who = f"pid {lease.pid} ({lease.holder})" if lease else "another process"
        if output == "json":
            _print_json({"skipped": True, "supervisor": who})
        else:
            print(f"A supervisor is already running ({who}); it reconciles on its own.")
        return 0
    if output == "json":
        _print_json(
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


def _configure_cleanup(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--provider", help="only this provider")
    parser.add_argument("--execute", action="store_true", help="destroy (default: a dry run)")
    parser.add_argument("--force", action="store_true", help="do not ask for a typed 'yes'")
    parser.add_argument("--all", action="store_true", help="destroy instances of live sessions too")
    _add_output(parser)


def _run_cleanup(args: argparse.Namespace) -> int:
    import asyncio

    return int(asyncio.run(_with_shopper(lambda shopper: _cleanup(shopper, args))))


async def _cleanup(shopper: Shopper, args: argparse.Namespace) -> int:
    from gpushop_tui.errors import UserError

    if not any(shopper.providers.values()):
        raise UserError("no provider is configured (see 'gpushop keys set')")
    if args.provider is not None and shopper.providers.get(args.provider, True) is None:
        raise UserError(f"{args.provider} is not configured (see 'gpushop keys set')")
    rows, problems = await shopper.cleanup_orphans(args.provider)
    doomed = [r for r in rows if args.all or not r.live_session]
    if args.execute and doomed:
        if args.output == "table" and not args.force:
            _print_orphans(rows)
        if not args.force and not _confirm(len(doomed)):
            _note("nothing was destroyed")
            return 1
        rows, problems = await shopper.cleanup_orphans(
            args.provider, execute=True, include_live=args.all
        )
    if args.output == "json":
        _print_json({"instances": [vars(r) for r in rows], "problems": problems})
    else:
        _print_orphans(rows)
        if args.execute and not doomed:
            print("nothing to destroy" + ("" if args.all else " (live sessions are kept)"))
        elif not args.execute:
            print(f"dry run: {len(doomed)} would be destroyed; add --execute to destroy them")
    for problem in problems:
        _note(problem)
    failed = [r for r in rows if r.action.startswith("destroy failed")]
    return 1 if problems or failed else 0


def _print_orphans(rows: Sequence[OrphanRow]) -> None:
    if not rows:
        print("no instance carries our label")
        return
    _print_table(
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


# -- money: costs, budgets ---------------------------------------------------------------------


def _local_day(text: str) -> date:
    """A local calendar day, YYYY-MM-DD."""
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day like 2026-11-01") from None


def _configure_costs(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "What rentals cost, per second from the create call until the provider confirms the "
        "instance gone. Days and months are local time; the range defaults to this month."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    summary = actions.add_parser(
        "summary", help="this month and today, by consumer, provider and GPU, and what bills now"
    )
    _add_output(summary)
    parser.add_argument("-c", "--consumer", help="only this consumer")
    parser.add_argument("-s", "--session", help="only this session")
    parser.add_argument(
        "--period", choices=("day", "month"), default="day", help="one row per day or per month"
    )
    parser.add_argument("--since", type=_local_day, metavar="DAY", help="first day (YYYY-MM-DD)")
    parser.add_argument("--until", type=_local_day, metavar="DAY", help="last day, included")
    parser.add_argument(
        "-o", "--output", choices=("table", "json", "csv"), default="table", help="output format"
    )


def _run_costs(args: argparse.Namespace) -> int:
    import asyncio

    if args.action == "summary":
        return int(asyncio.run(_with_shopper(lambda shopper: _costs_summary(shopper, args))))
    return int(asyncio.run(_with_shopper(lambda shopper: _costs(shopper, args))))


def _range(shopper: Shopper, since: date | None, until: date | None) -> tuple[datetime, datetime]:
    """[start, end) in UTC for local days `since`..`until` (default: this month so far)."""
    from datetime import timedelta

    from gpushop_tui.core import costs
    from gpushop_tui.errors import UserError

    today = costs.local_date(shopper.clock.now(), None)
    first = since or costs.month_start(today)
    last = until or today
    if last < first:
        raise UserError(f"--until {last} is before --since {first}")
    return costs.local_midnight(first, None), costs.local_midnight(last + timedelta(days=1), None)


async def _costs(shopper: Shopper, args: argparse.Namespace) -> int:
    import csv
    from collections import defaultdict

    start, end = _range(shopper, args.since, args.until)
    lines = await shopper.cost_lines(start, end, consumer=args.consumer, session_id=args.session)
    rows: dict[tuple[str, str], list[Any]] = {}
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for line in lines:
        period = line.day.isoformat() if args.period == "day" else f"{line.day:%Y-%m}"
        key = (period, line.session_id)
        rows[key] = [period, line.session_id, line.consumer, line.provider, line.gpu_name]
        totals[key] += line.amount
    table = [[*rows[key], round(totals[key], 6)] for key in sorted(rows)]
    header = ("period", "session", "consumer", "provider", "gpu", "usd")
    total = round(sum(totals.values()), 6)
    if args.output == "json":
        _print_json(
            {
                "since": start,
                "until": end,
                "period": args.period,
                "rows": [dict(zip(header, row, strict=True)) for row in table],
                "total_usd": total,
            }
        )
    elif args.output == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(table)
    else:
        shown = [[*row[:-1], f"${row[-1]:.4f}"] for row in table]
        if shown:
            _print_table(shown, [h.upper() for h in header])
        print(f"total ${total:.4f} from {_when(start)} to {_when(min(end, shopper.clock.now()))}")
    return 0


async def _costs_summary(shopper: Shopper, args: argparse.Namespace) -> int:
    from gpushop_tui.core import costs

    start, end = _range(shopper, None, None)
    lines = await shopper.cost_lines(start, end)
    today = costs.local_date(shopper.clock.now(), None).isoformat()
    billing = await shopper.billing_now()
    summary = {
        "month_usd": round(sum(line.amount for line in lines), 6),
        "today_usd": round(sum(line.amount for line in lines if line.day.isoformat() == today), 6),
        "burn_usd_per_hour": round(sum(rate for _, _, rate in billing), 6),
        "by_consumer": costs.group(lines, "consumer"),
        "by_provider": costs.group(lines, "provider"),
        "by_gpu": costs.group(lines, "gpu"),
        "billing_now": [
            {"session": s.id, "consumer": s.consumer, "usd_so_far": round(c, 6), "usd_per_hour": r}
            for s, c, r in billing
        ],
    }
    if args.output == "json":
        _print_json(summary)
        return 0
    print(f"this month ${summary['month_usd']:.4f}   today ${summary['today_usd']:.4f}   "
          f"burning ${summary['burn_usd_per_hour']:.4f}/h now")  # fmt: skip
    for what in ("consumer", "provider", "gpu"):
        group = summary[f"by_{what}"]
        if group:
            print(f"by {what}: " + ", ".join(f"{k} ${v:.4f}" for k, v in group.items()))
    if billing:
        _print_table(
            [(s.id, s.consumer, s.status.value, f"${c:.4f}", f"${r:.4f}/h") for s, c, r in billing],
            ("SESSION", "CONSUMER", "STATUS", "SO FAR", "RATE"),
        )
    return 0


_BUDGET_KINDS = {
    "monthly": "monthly_spend",
    "concurrent": "concurrent_sessions",
    "burn": "burn_rate",
}


def _configure_budgets(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Limits that act: 'warn' alerts, 'block' refuses new rentals that would cross the limit, "
        "'stop' also ends the scope's sessions, most expensive first, until it holds. "
        "Thresholds at 50/80/100% alert once a month."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every budget and where it stands now")
    _add_output(listing)
    setting = actions.add_parser("set", help="create a budget, or change the one of that kind")
    scope = setting.add_mutually_exclusive_group(required=True)
    scope.add_argument("-c", "--consumer", help="the consumer it limits")
    scope.add_argument("--global", dest="everyone", action="store_true", help="limit everyone")
    setting.add_argument(
        "--kind",
        choices=tuple(_BUDGET_KINDS),
        required=True,
        help="monthly: USD this month; concurrent: sessions at once; burn: USD/h now",
    )
    setting.add_argument("--limit", type=_positive, required=True, help="USD, sessions, or USD/h")
    setting.add_argument(
        "--action",
        dest="then",
        choices=("warn", "block", "stop"),
        default="warn",
        help="what crossing it does (default: warn)",
    )
    _add_output(setting)
    deleting = actions.add_parser("delete", help="remove a budget")
    deleting.add_argument("id", type=int)


def _run_budgets(args: argparse.Namespace) -> int:
    import asyncio

    return int(asyncio.run(_with_shopper(lambda shopper: _budgets(shopper, args))))


async def _budgets(shopper: Shopper, args: argparse.Namespace) -> int:
    from gpushop_tui.core.budgets import describe, limit_text
    from gpushop_tui.models import Budget, BudgetAction, BudgetKind

    if args.action == "delete":
        await shopper.budgets.delete(args.id)
        print(f"budget {args.id} deleted")
        return 0
    if args.action == "set":
        budget = await shopper.budgets.set(
            Budget(
                consumer=None if args.everyone else args.consumer,
                kind=BudgetKind(_BUDGET_KINDS[args.kind]),
                limit=args.limit,
                action=BudgetAction(args.then),
            )
        )
        if args.output == "json":
            _print_json(budget.model_dump(mode="json"))
        else:
            print(f"budget {budget.id}: {describe(budget)}")
        return 0
    usages = await shopper.budgets.usage()
    if args.output == "json":
        _print_json(
            [u.budget.model_dump(mode="json") | {"used": u.used, "over": u.over} for u in usages]
        )
        return 0
    if not usages:
        print("no budgets (see 'gpushop budgets set --help')")
        return 0
    _print_table(
        [
            (
                str(u.budget.id),
                u.budget.consumer or "(global)",
                u.budget.kind.value,
                limit_text(u.budget),
                u.budget.action.value,
                f"{u.fraction:.0%}" + (" OVER" if u.over else ""),
            )
            for u in usages
        ],
        ("ID", "SCOPE", "KIND", "LIMIT", "ACTION", "USED"),
    )
    return 0


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


def _configure_serve_token(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--consumer", help="the token limited to this consumer (made on first ask)"
    )


def _run_serve_token(args: argparse.Namespace) -> int:
    from gpushop_tui.api.tokens import TokenBook

    settings = _settings()
    settings.paths.prepare()
    book = TokenBook.open(settings.paths.data_dir)
    print(book.for_consumer(args.consumer) if args.consumer else book.admin)
    return 0


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
    Command(
        "benchmarks",
        "measured LLM tokens/s per GPU: list, rank (best, cheapest, compare, recommend), import",
        _configure_benchmarks,
        _run_benchmarks,
    ),
    Command(
        "provision",
        "rent an offer (or the cheapest match of a query) and wait until it is ready",
        _configure_provision,
        _run_provision,
    ),
    Command(
        "sessions",
        "list, inspect, end, extend and reach rentals",
        _configure_sessions,
        _run_sessions,
    ),
    Command(
        "shutdown",
        "end a session (= sessions done; with --force, sessions delete)",
        _configure_shutdown,
        _run_shutdown,
    ),
    Command(
        "transfer",
        "copy a file to or from a session's node over SFTP",
        _configure_transfer,
        _run_transfer,
    ),
    Command(
        "reconcile",
        "one supervisor pass, for cron: deadlines, reconciliation, teardowns",
        _add_output,
        _run_reconcile,
    ),
    Command(
        "costs",
        "what rentals cost, per day or month, by consumer or session (csv too)",
        _configure_costs,
        _run_costs,
    ),
    Command(
        "budgets",
        "spend, concurrency and burn-rate limits that warn, block or stop",
        _configure_budgets,
        _run_budgets,
    ),
    Command(
        "serve-token",
        "print the bearer token for 'gpushop --serve' (or one limited to a consumer)",
        _configure_serve_token,
        _run_serve_token,
    ),
    Command(
        "cleanup-orphans",
        "find our instances straight from the provider lists; destroy orphans on --execute",
        _configure_cleanup,
        _run_cleanup,
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
    parser.add_argument(
        "--host", help="with --serve: address to listen on (default 127.0.0.1, loopback only)"
    )
    parser.add_argument(
        "--port", type=_port, default=None, help="with --serve: port to listen on (default 8642)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def _settings() -> Settings:
    from gpushop_tui.config import load_settings

    return load_settings()


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return int(text)


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
        from gpushop_tui.errors import UserError

        raise UserError("--host and --port go with --serve")
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
    words = list(sys.argv[1:] if argv is None else argv)
    trailing = words[words.index("--") + 1 :] if "--" in words else None
    parser = build_parser()
    args = parser.parse_args(words if trailing is None else words[: words.index("--")])
    if trailing is not None:
        if "remote_command" not in vars(args):
            parser.error("'--' is only for a command to run on a node: sessions ssh ID -- COMMAND")
        args.remote_command = trailing
    if args.command and (args.demo or args.serve or args.host or args.port):
        parser.error(f"--demo, --serve, --host and --port cannot be combined with '{args.command}'")
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
