"""Benchmarks: measured LLM tokens/s per GPU and model, ranked, and joined with the live menu.

DESIGN.md §6. The measurements are the seed shipped as package data (`data/benchmarks.csv`: the
product brief's benchmark matrix, Ollama at concurrency 1; a range there is kept as its low and
high ends, each paired with the same end of the price range) plus files the user imported
(stored in the database, `source` = file name) plus what gpushop measured on its own sessions'
nodes (`source` "measured"). GPU names go through the canonical catalogue, so a measurement meets
the offers of the same card. Money per token is
$/M tokens = price_per_hour / (tokens/s * 3600) * 1e6; an offer's estimate says whether it rests
on gpushop's own measurements or only on shipped and imported ones.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from gpushop_tui.errors import UserError
from gpushop_tui.models import Benchmark, Offer
from gpushop_tui.providers.gpus import lookup_gpu
from gpushop_tui.query import gpu_matcher, unknown_model
from gpushop_tui.store import Store

SEED_SOURCE = "seed"
MEASURED_SOURCE = "measured"
"""The `source` of a row gpushop measured on one of its own sessions' nodes."""
CSV_COLUMNS = (
    "gpu_name", "gpu_count", "provider", "model", "tokens_per_second", "price_per_hour",
    "runtime", "measured_at", "note",
)  # fmt: skip
"""The simple CSV format (header row required): gpu_name, model and tokens_per_second in every
row; gpu_count defaults to 1; price_per_hour is USD/h; measured_at is ISO 8601 with a time zone;
note is free text for the reader of the file, not stored."""
_REQUIRED = ("gpu_name", "model", "tokens_per_second")


class UnknownModel(UserError):
    """A model no measurement covers."""


def usd_per_mtok(price_per_hour: float, tokens_per_second: float) -> float:
    """US dollars per million tokens generated at this price and throughput."""
    return price_per_hour / (tokens_per_second * 3600) * 1e6


def cost_of(measurement: Benchmark) -> float | None:
    """$/M tokens of a measurement, or None where its price is unknown (missing or 0)."""
    if not measurement.price_per_hour:
        return None
    return usd_per_mtok(measurement.price_per_hour, measurement.tokens_per_second)


# --------------------------------------------------------------------------- reading files


def _canonical(fields: dict[str, Any], vram_hint_gb: float | None = None) -> Benchmark:
    """A validated measurement with the catalogue's GPU name and a lower-case model name."""
    measurement = Benchmark.model_validate(fields)
    return measurement.model_copy(
        update={
            "gpu_name": lookup_gpu(measurement.gpu_name, vram_hint_gb).name,
            "model": measurement.model.strip().lower(),
        }
    )


def _problem(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse_csv(text: str, source: str) -> list[Benchmark]:
    """The measurements of a CSV file in the simple format (`CSV_COLUMNS`)."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    unknown = [name for name in header if name not in CSV_COLUMNS]
    missing = [name for name in _REQUIRED if name not in header]
    if unknown or missing:
        problem = f"unknown column {unknown[0]!r}" if unknown else f"no {missing[0]!r} column"
        raise UserError(
            f"{source}: {problem}; a benchmark CSV has the columns {', '.join(CSV_COLUMNS)} "
            f"({', '.join(_REQUIRED)} required)"
        )
    measurements = []
    for row in reader:
        if None in row:
            raise UserError(f"{source} line {reader.line_num}: more cells than the header names")
        cells = {k: v.strip() for k, v in row.items() if k != "note" and v and v.strip()}
        try:
            measurements.append(_canonical({**cells, "source": source}))
        except ValidationError as err:
            raise UserError(f"{source} line {reader.line_num}: {_problem(err)}") from None
    return measurements


class _Hardware(BaseModel):
    gpu_name: str = Field(min_length=1)
    gpu_count: int = Field(default=0, ge=0, description="0: not stated (Go's zero value).")
    gpu_memory_mib: float | None = Field(default=None, ge=0)


class _ModelInfo(BaseModel):
    name: str = Field(min_length=1)
    runtime: str | None = None


class _Results(BaseModel):
    avg_tokens_per_second: float = Field(gt=0)


class _Result(BaseModel):
    """The parts we use of one result of the earlier implementation (prior-art §2.8)."""

    timestamp: datetime | None = None
    hardware: _Hardware
    model: _ModelInfo
    results: _Results
    provider: str | None = None
    price_per_hour: float | None = Field(default=None, ge=0)

    def measurement(self, source: str) -> Benchmark:
        memory = self.hardware.gpu_memory_mib
        stated = self.timestamp is not None and self.timestamp.year > 1  # Go's zero time
        return _canonical(
            {
                "gpu_name": self.hardware.gpu_name,
                "gpu_count": self.hardware.gpu_count or 1,
                "model": self.model.name,
                "tokens_per_second": self.results.avg_tokens_per_second,
                "runtime": self.model.runtime or None,
                "provider": self.provider or None,
                "price_per_hour": self.price_per_hour or None,
                "measured_at": self.timestamp if stated else None,
                "source": source,
            },
            memory / 1024 if memory else None,
        )


def parse_result_json(text: str, source: str) -> list[Benchmark]:
    """The measurements of the earlier implementation's benchmark result JSON: one result
    object, or a list of them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{source} is not valid JSON: {err.msg} at line {err.lineno}") from None
    entries = data if isinstance(data, list) else [data]
    measurements = []
    for number, entry in enumerate(entries, 1):
        try:
            measurements.append(_Result.model_validate(entry).measurement(source))
        except ValidationError as err:
            where = f"{source} entry {number}" if isinstance(data, list) else source
            raise UserError(
                f"{where} is not a benchmark result ({_problem(err)}); expected hardware, "
                "model and results.avg_tokens_per_second"
            ) from None
    return measurements


def read_file(path: Path) -> list[Benchmark]:
    """The measurements in a benchmark file: result JSON (starts with '{' or '[') or CSV."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror or err}") from None
    stripped = text.lstrip("\ufeff \t\r\n")
    parse = parse_result_json if stripped.startswith(("{", "[")) else parse_csv
    measurements = parse(stripped, path.name)
    if not measurements:
        raise UserError(f"{path} holds no measurements")
    return measurements


@cache
def seed() -> tuple[Benchmark, ...]:
    """The measurements shipped with gpushop."""
    data = resources.files("gpushop_tui") / "data" / "benchmarks.csv"
    return tuple(parse_csv(data.read_text(encoding="utf-8"), SEED_SOURCE))


# --------------------------------------------------------------------------- rankings


RankOrder = Literal["all", "best", "cheapest", "compare"]
"""How `Shopper.rank_benchmarks` orders measurements."""


@dataclass(frozen=True)
class Ranked:
    """One measurement in a ranking; `speedup` and `cost_efficiency` (tokens per $) are
    relative to the fastest measurement, in `compare` only."""

    measurement: Benchmark
    usd_per_mtok: float | None
    speedup: float | None = None
    cost_efficiency: float | None = None


@dataclass(frozen=True)
class GpuSummary:
    """Per GPU configuration: the average of its measurements of one model."""

    gpu_name: str
    gpu_count: int
    samples: int
    avg_tokens_per_second: float
    avg_price_per_hour: float | None
    usd_per_mtok: float | None


def best(measurements: Iterable[Benchmark]) -> list[Ranked]:
    """Fastest first (ties: cheaper per token first)."""
    ranked = [Ranked(m, cost_of(m)) for m in measurements]
    return sorted(ranked, key=lambda r: (-r.measurement.tokens_per_second, _last(r.usd_per_mtok)))


def cheapest(measurements: Iterable[Benchmark], min_tps: float | None = None) -> list[Ranked]:
    """Cheapest per million tokens first, among priced measurements of at least `min_tps`."""
    ranked = [
        Ranked(m, cost)
        for m in measurements
        if (cost := cost_of(m)) is not None and m.tokens_per_second >= (min_tps or 0)
    ]
    return sorted(ranked, key=lambda r: (r.usd_per_mtok, -r.measurement.tokens_per_second))


def compare(measurements: Iterable[Benchmark]) -> list[Ranked]:
    """`best`, each measurement relative to the fastest: speedup and tokens per dollar."""
    ranked = best(measurements)
    if not ranked:
        return []
    baseline = ranked[0]
    base_tps, base_cost = baseline.measurement.tokens_per_second, baseline.usd_per_mtok
    return [
        Ranked(
            r.measurement,
            r.usd_per_mtok,
            speedup=r.measurement.tokens_per_second / base_tps,
            cost_efficiency=base_cost / r.usd_per_mtok if base_cost and r.usd_per_mtok else None,
        )
        for r in ranked
    ]


def recommend(measurements: Iterable[Benchmark]) -> list[GpuSummary]:
    """Per GPU configuration (card and count): average tokens/s and price, fastest first."""
    groups: dict[tuple[str, int], list[Benchmark]] = defaultdict(list)
    for m in measurements:
        groups[(m.gpu_name, m.gpu_count)].append(m)
    summaries = []
    for (gpu_name, gpu_count), rows in groups.items():
        tps = sum(m.tokens_per_second for m in rows) / len(rows)
        prices = [m.price_per_hour for m in rows if m.price_per_hour]
        price = sum(prices) / len(prices) if prices else None
        summaries.append(
            GpuSummary(
                gpu_name,
                gpu_count,
                len(rows),
                tps,
                price,
                usd_per_mtok(price, tps) if price is not None else None,
            )
        )
    return sorted(summaries, key=lambda s: (-s.avg_tokens_per_second, _last(s.usd_per_mtok)))


def _last(value: float | None) -> float:
    return float("inf") if value is None else value


# --------------------------------------------------------------------------- the live menu


def throughput(measurements: Iterable[Benchmark]) -> dict[str, dict[int, float]]:
    """Average tokens/s per canonical GPU name and GPU count (measurements of one model)."""
    sums: dict[tuple[str, int], list[float]] = defaultdict(list)
    for m in measurements:
        sums[(m.gpu_name, m.gpu_count)].append(m.tokens_per_second)
    table: dict[str, dict[int, float]] = defaultdict(dict)
    for (gpu_name, count), values in sums.items():
        table[gpu_name][count] = sum(values) / len(values)
    return dict(table)


def _basis(table: dict[str, dict[int, float]], gpu_name: str, count: int) -> int | None:
    """The GPU count whose throughput to expect of `count` of a GPU: measured with that many
    GPUs, else with the most measured below it, unscaled (more GPUs are not assumed faster than
    measured); None where the GPU has no measurement with `count` GPUs or fewer."""
    below = [n for n in table.get(gpu_name, {}) if n <= count]
    return max(below) if below else None


@dataclass(frozen=True)
class Estimates:
    """Estimated $ per million tokens per offer id, and the offer ids whose estimate rests
    (at least in part) on tokens/s gpushop measured on its own sessions' nodes."""

    usd_per_mtok: dict[str, float]
    measured: frozenset[str]


def estimates(offers: Iterable[Offer], measurements: Iterable[Benchmark]) -> Estimates:
    """Estimated $ per million tokens per offer id, for the offers whose canonical GPU has
    `measurements` (all of one model): the offer's whole price over the expected tokens/s.
    An estimate is `measured` where the measurements averaged for it include a row gpushop
    made on its own node (`MEASURED_SOURCE`)."""
    rows = list(measurements)
    if not rows:
        return Estimates({}, frozenset())  # no model asked: skip the walk over every offer
    table = throughput(rows)
    own = {(m.gpu_name, m.gpu_count) for m in rows if m.source == MEASURED_SOURCE}
    expected: dict[tuple[str, int], tuple[float, bool] | None] = {}
    usd: dict[str, float] = {}
    measured: set[str] = set()
    for offer in offers:
        key = (offer.gpu_name, offer.gpu_count)
        if key not in expected:
            basis = _basis(table, *key)
            expected[key] = (
                (table[offer.gpu_name][basis], (offer.gpu_name, basis) in own)
                if basis is not None
                else None
            )
        if (found := expected[key]) is not None:
            tps, ours = found
            usd[offer.id] = usd_per_mtok(offer.price_per_hour, tps)
            if ours:
                measured.add(offer.id)
    return Estimates(usd, frozenset(measured))


def estimate(offers: Iterable[Offer], measurements: Iterable[Benchmark]) -> dict[str, float]:
    """`estimates` without saying which rest on gpushop's own measurements."""
    return estimates(offers, measurements).usd_per_mtok


class Benchmarks:
    """Every measurement gpushop knows: the shipped seed, the imported files, and what it
    measured on its own sessions' nodes (`source` "measured", with the session's id)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def measurements(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[Benchmark]:
        """Seed and imported measurements, of `model` (one without any is an `UnknownModel`)
        and of the GPUs `gpu` names (as the query language's `gpu=` matches them)."""
        rows = [*seed(), *await self._store.list_benchmarks()]
        if model is not None:
            wanted = model.strip().lower()
            of_model = [m for m in rows if m.model == wanted]
            if not of_model:
                raise UnknownModel(unknown_model(wanted, {m.model for m in rows}))
            rows = of_model
        if gpu:
            matches = gpu_matcher(gpu)
            rows = [m for m in rows if matches(m.gpu_name)]
        return rows

    async def record(self, row: Benchmark) -> Benchmark:
        """Keep a measurement gpushop made on a session's node, beside the seed and imports."""
        return await self._store.add_benchmark(row)

    async def models(self) -> set[str]:
        """The models with at least one measurement."""
        return {m.model for m in await self.measurements()}

    async def import_file(self, path: Path) -> tuple[int, int]:
        """Import a result JSON or CSV file, replacing an earlier import of the same file name:
        (measurements imported, measurements replaced)."""
        measurements = await asyncio.to_thread(read_file, path)
        replaced = await self._store.replace_benchmarks(path.name, measurements)
        return len(measurements), replaced
