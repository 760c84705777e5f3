"""The market commands' arguments: inventory, check, benchmarks (handlers: handlers/market.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gpushop_tui.cli.args import Command, add_output, non_negative, positive_int

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

HANDLERS = "gpushop_tui.cli.handlers.market"


def _configure_inventory(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "query",
        nargs="*",
        help="filter and sort, e.g. 'gpu=4090 vram>=24 price<=0.5 n>=2 region=US sort=price'; "
        "quote a value with spaces: 'gpu=\"RTX 4090\"'; rel is a fraction or a percent "
        "(rel>=0.99, rel>=99); region is a country code, a region or a continent (europe, asia, "
        "north_america, ...); 'model=llama3.1:8b sort=usd_per_mtok' ranks by estimated $ per "
        "million tokens",
    )
    parser.add_argument("--gpu", metavar="NAME", help="= the query term gpu=NAME")
    parser.add_argument("--max-price", type=non_negative, metavar="USD", help="= price<=USD")
    parser.add_argument("--min-vram", type=non_negative, metavar="GB", help="= vram>=GB")
    parser.add_argument(
        "--by-gpu",
        action="store_true",
        help="compare instead of list: one row per GPU model and count, each provider's best $/h "
        "side by side, the number of offers and their price range ($/M tokens with model=)",
    )
    add_output(parser)
    parser.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help="show at most N offers (with --by-gpu: N rows)",
    )
    parser.add_argument("--refresh", action="store_true", help="ignore cached offers")


def _configure_benchmarks(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = BENCHMARK_FORMATS
    parser.add_argument(
        "action",
        nargs="?",
        choices=("list", *RANKINGS, "import"),
        help="list (the default): every measurement, shipped, imported or measured on a "
        "session's node (source 'measured', with its session); best: fastest first; cheapest: "
        "lowest $ per million tokens first; compare: each relative to the fastest; recommend: "
        "per-GPU averages; import FILE: add measurements",
    )
    parser.add_argument("file", nargs="?", type=Path, help="with import: a result JSON or CSV")
    parser.add_argument("-m", "--model", help="the LLM, e.g. llama3.1:8b (rankings need one)")
    parser.add_argument("-g", "--gpu", help="only these GPUs, as in the query's gpu=, e.g. 4090")
    parser.add_argument("-l", "--limit", type=positive_int, help="show at most N rows")
    parser.add_argument(
        "--min-tps", type=non_negative, help="cheapest: only measurements this fast or faster"
    )
    add_output(parser)


INVENTORY = Command(
    "inventory",
    "list offers across providers, filtered and sorted by a query (--by-gpu: compare by GPU)",
    _configure_inventory,
    f"{HANDLERS}:run_inventory",
)
CHECK = Command(
    "check",
    "per provider: credential set? accepted? reachable? how fast?",
    add_output,
    f"{HANDLERS}:run_check",
)
BENCHMARKS = Command(
    "benchmarks",
    "measured LLM tokens/s per GPU: list, rank (best, cheapest, compare, recommend), import",
    _configure_benchmarks,
    f"{HANDLERS}:run_benchmarks",
)
