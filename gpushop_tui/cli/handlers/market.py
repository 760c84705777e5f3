"""What inventory, check and benchmarks do (their arguments: cli/market.py)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from gpushop_tui.cli.handlers import NO_PROVIDER, with_shopper
from gpushop_tui.cli.market import RANKINGS
from gpushop_tui.cli.output import PROG, money, print_json, print_table, ratio, rounded
from gpushop_tui.errors import UserError
from gpushop_tui.query import format_query

if TYPE_CHECKING:
    from gpushop_tui.core import (
        Facade,
        GpuRow,
        GpuSummary,
        InventoryComparison,
        InventoryView,
        ProviderReport,
        Ranked,
        RankOrder,
    )
    from gpushop_tui.models import Benchmark, OfferQuery

TABLE_ROWS = 30
"""How many offers (--by-gpu: rows) the inventory table shows unless --limit says otherwise."""
MEASURED_MARK = "*"
"""After a $/Mtok estimate that rests on tokens/s gpushop measured on its own rentals."""


def run_inventory(args: argparse.Namespace) -> int:
    if args.by_gpu:
        query, comparison = asyncio.run(with_shopper(lambda shopper: _compared(shopper, args)))
        _print_comparison(query, comparison, args)
        return _menu_exit_code(comparison.providers)
    query, view = asyncio.run(with_shopper(lambda shopper: _listed(shopper, args)))
    estimates = view.usd_per_mtok
    reports = view.providers
    if args.output == "json":
        print_json(
            {
                "query": format_query(query),
                "offers": [
                    {
                        **o.model_dump(mode="json", exclude={"raw"}),
                        "price_per_gpu_hour": round(o.price_per_gpu_hour, 6),
                        **(
                            {
                                "usd_per_mtok": rounded(estimates.get(o.id)),
                                "usd_per_mtok_measured": o.id in view.measured,
                            }
                            if query.model
                            else {}
                        ),
                    }
                    for o in view.offers
                ],
                "total": view.total,
                "hidden_after_failures": view.hidden,
                "providers": [_report_json(r) for r in reports],
            }
        )
    else:
        shown = view.offers if args.limit is not None else view.offers[:TABLE_ROWS]
        print_table(
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
                    *([_mtok(estimates.get(o.id), o.id in view.measured)] if query.model else []),
                )
                for o in shown
            ],
            ("OFFER", "GPU", "N", "VRAM", "$/H", "$/GPU-H", "WHERE", "REL", "CUDA")
            + (("$/Mtok",) if query.model else ()),
        )
        _print_menu_notes(
            f"{len(view.offers)} matching of {view.total} offers",
            len(view.offers) - len(shown),
            view.hidden,
            query.model,
            reports,
            marked=any(o.id in view.measured for o in shown),
        )
    return _menu_exit_code(reports)


async def _query(shopper: Facade, args: argparse.Namespace) -> OfferQuery:
    """The query the command's words and flags ask for; `--limit` overrides its `limit=`."""
    query = await shopper.parse_query(" ".join([*args.query, *_flag_terms(args)]))
    if args.limit is not None:
        query = query.model_copy(update={"limit": args.limit})
    return query


async def _listed(shopper: Facade, args: argparse.Namespace) -> tuple[OfferQuery, InventoryView]:
    query = await _query(shopper, args)
    return query, await shopper.offers(query, refresh=args.refresh, whole_menu=False)


async def _compared(
    shopper: Facade, args: argparse.Namespace
) -> tuple[OfferQuery, InventoryComparison]:
    query = await _query(shopper, args)
    return query, await shopper.compare_offers(query, refresh=args.refresh, whole_menu=False)


def _print_comparison(
    query: OfferQuery, comparison: InventoryComparison, args: argparse.Namespace
) -> None:
    """`inventory --by-gpu`: one row per GPU model and count, each provider's best $/h in its
    own column (the configured providers asked, in the menu's order)."""
    if args.output == "json":
        print_json(
            {
                "query": format_query(query),
                "rows": [_row_json(row, query.model) for row in comparison.rows],
                "rows_total": comparison.groups,
                "matching_offers": comparison.offers,
                "total": comparison.total,
                "hidden_after_failures": comparison.hidden,
                "providers": [_report_json(r) for r in comparison.providers],
            }
        )
        return
    columns = [r.provider for r in comparison.providers if r.status != "not configured"]
    shown = comparison.rows if args.limit is not None else comparison.rows[:TABLE_ROWS]
    print_table(
        [
            (
                row.gpu_name,
                str(row.gpu_count),
                f"{row.vram_gb:g}",
                *(money(_best_price(row, provider)) for provider in columns),
                str(row.offers),
                f"{row.price_min:.3f}-{row.price_max:.3f}",
                *([_mtok(row.usd_per_mtok, row.usd_per_mtok_measured)] if query.model else []),
            )
            for row in shown
        ],
        ("GPU", "N", "VRAM", *(provider.upper() for provider in columns), "OFFERS", "$/H RANGE")
        + (("$/Mtok",) if query.model else ()),
    )
    _print_menu_notes(
        f"{comparison.groups} rows, one per GPU model and count, from {comparison.offers} "
        f"matching of {comparison.total} offers",
        comparison.groups - len(shown),
        comparison.hidden,
        query.model,
        comparison.providers,
        marked=any(row.usd_per_mtok_measured for row in shown),
    )


def _best_price(row: GpuRow, provider: str) -> float | None:
    best = row.by_provider.get(provider)
    return best.price_per_hour if best is not None else None


def _row_json(row: GpuRow, model: str | None) -> dict[str, Any]:
    """One comparison row; `usd_per_mtok` and `usd_per_mtok_measured` only when the query names
    a model (as for offers)."""
    return {
        **{
            name: rounded(value) if isinstance(value, float) else value
            for name, value in asdict(row).items()
            if model or name not in ("usd_per_mtok", "usd_per_mtok_measured")
        },
        "price_per_gpu_hour_min": rounded(row.price_per_gpu_hour_min),
    }


def _mtok(value: float | None, measured: bool) -> str:
    """A $/Mtok cell: `MEASURED_MARK` after an estimate that rests on gpushop's own
    measurements."""
    return money(value) + (MEASURED_MARK if measured else "")


def _print_menu_notes(
    lead: str,
    more: int,
    hidden: int,
    model: str | None,
    reports: Sequence[ProviderReport],
    *,
    marked: bool,
) -> None:
    """What follows an inventory table: how much matched and how much is not shown, what the
    $/Mtok column means (and its `MEASURED_MARK`, when a shown row has it), and how each
    provider stands (stale, capped, failing)."""
    print(
        f"\n{lead}"
        + (f" ({more} more: use --limit)" if more else "")
        + (f"; {hidden} hidden after repeated failures" if hidden else "")
    )
    if model:
        print(
            f"$/Mtok: estimated $ per million tokens of {model}, from measured tokens/s "
            f"of the same GPU ('{PROG} benchmarks -m {model}'); - where none"
        )
    if marked:
        print(
            f"{MEASURED_MARK}: includes tokens/s gpushop measured on its own rentals of that GPU "
            "(source 'measured'); unmarked: shipped and imported benchmarks only"
        )
    for report in reports:
        print(f"  {_describe(report)}")


def _flag_terms(args: argparse.Namespace) -> list[str]:
    """The query terms `--gpu`, `--max-price` and `--min-vram` stand for (the brief's forms)."""
    gpu = args.gpu.replace('"', "") if args.gpu is not None else None
    return [
        *([f'gpu="{gpu}"'] if gpu is not None else []),
        *([f"price<={args.max_price:g}"] if args.max_price is not None else []),
        *([f"vram>={args.min_vram:g}"] if args.min_vram is not None else []),
    ]


def _describe(report: ProviderReport) -> str:
    """The report's status line, and whether the provider capped its answer."""
    capped = "; capped by the provider: it holds more offers" if report.truncated else ""
    return report.describe() + capped


def _report_json(report: ProviderReport) -> dict[str, Any]:
    return {
        "provider": report.provider,
        "status": report.status,
        "offers": report.offers,
        "age_s": round(report.age_s, 1) if report.age_s is not None else None,
        "error": report.error,
        "truncated": report.truncated,
    }


def _menu_exit_code(reports: Sequence[ProviderReport]) -> int:
    """Non-zero when no configured provider that was asked could give any offers at all."""
    configured = [r for r in reports if r.status != "not configured"]
    if not configured:
        raise NO_PROVIDER
    if all(r.status == "error" for r in configured):
        print(f"{PROG}: error: no provider answered", file=sys.stderr)
        return 1
    return 0


def run_check(args: argparse.Namespace) -> int:
    checks = asyncio.run(with_shopper(lambda shopper: shopper.check_providers()))
    if args.output == "json":
        print_json([{**vars(c), "works": c.works} for c in checks])
    else:

        def yes_no(value: bool | None) -> str:
            return "-" if value is None else ("yes" if value else "NO")

        print_table(
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


def run_benchmarks(args: argparse.Namespace) -> int:
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
    return int(asyncio.run(with_shopper(lambda shopper: _benchmarks(shopper, args))))


async def _benchmarks(shopper: Facade, args: argparse.Namespace) -> int:
    if args.action == "import":
        imported, replaced = await shopper.import_benchmarks(args.file)
        if args.output == "json":
            print_json({"source": args.file.name, "imported": imported, "replaced": replaced})
        else:
            print(
                f"Imported {imported} measurements from {args.file.name}"
                + (f" (in place of the {replaced} it gave before)." if replaced else ".")
            )
        return 0
    if args.action == "recommend":
        summaries = await shopper.recommend_gpus(args.model, args.gpu)
        _print_summaries(summaries[: args.limit], args.output)
        return 0
    order: RankOrder = "all" if args.action in (None, "list") else args.action
    ranked = await shopper.rank_benchmarks(order, args.model, args.gpu, args.min_tps)
    _print_ranked(ranked[: args.limit], args.output, compared=args.action == "compare")
    return 0


def _print_ranked(ranked: Sequence[Ranked], output: str, *, compared: bool) -> None:
    if output == "json":
        print_json(
            [
                {
                    **r.measurement.model_dump(mode="json", exclude={"id"}),
                    "usd_per_mtok": rounded(r.usd_per_mtok),
                    **(
                        {
                            "speedup": rounded(r.speedup),
                            "cost_efficiency": rounded(r.cost_efficiency),
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
    print_table(
        [
            (
                *_measurement_cells(r.measurement),
                money(r.usd_per_mtok),
                *((ratio(r.speedup), ratio(r.cost_efficiency)) if compared else ()),
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
        money(m.price_per_hour),
    )


def _print_summaries(summaries: Sequence[GpuSummary], output: str) -> None:
    if output == "json":
        print_json(
            [
                {
                    name: rounded(value) if isinstance(value, float) else value
                    for name, value in asdict(s).items()
                }
                for s in summaries
            ]
        )
        return
    print_table(
        [
            (
                s.gpu_name,
                str(s.gpu_count),
                str(s.samples),
                f"{s.avg_tokens_per_second:.1f}",
                f"{s.avg_price_per_hour:.3f}" if s.avg_price_per_hour is not None else "-",
                money(s.usd_per_mtok),
            )
            for s in summaries
        ],
        ("GPU", "N", "SAMPLES", "AVG TOK/S", "AVG $/H", "$/Mtok"),
    )
