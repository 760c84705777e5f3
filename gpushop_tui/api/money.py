"""API routes for money: costs (prior-art §1.2 shapes), budgets, and benchmark rankings.

Costs are the core's per-second cost lines (`Shopper.cost_lines`) over local days, grouped as
the CLI `costs` command groups them. A scoped token sees only its consumer's costs and budgets,
and only the operator writes budgets.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gpushop_tui.api.app import ApiError, Caller, Core, api_router
from gpushop_tui.api.schemas import error_responses
from gpushop_tui.api.tokens import Principal
from gpushop_tui.core import benchmarks, costs
from gpushop_tui.core.benchmarks import UnknownModel
from gpushop_tui.core.budgets import THRESHOLDS, Usage
from gpushop_tui.core.costs import CostLine
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.errors import UserError
from gpushop_tui.models import Benchmark, Budget, BudgetAction, BudgetKind

router = api_router(tags=["money"])

CONSUMER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)
"""Report days outside these are refused as bad input (no calendar overflow)."""

ConsumerQuery = Annotated[
    str | None, Query(pattern=CONSUMER_PATTERN, description="Only this consumer.")
]
Day = Annotated[date | None, Query(ge=FIRST_DAY, le=LAST_DAY, description="YYYY-MM-DD, local.")]
Model = Annotated[
    str, Query(min_length=1, max_length=200, description="The LLM, e.g. llama3.1:8b.")
]
AnyModel = Annotated[str | None, Query(min_length=1, max_length=200, description="Only this LLM.")]
Gpu = Annotated[
    str | None, Query(min_length=1, max_length=200, description="As the query's gpu=, e.g. 4090.")
]
Limit = Annotated[int, Query(ge=1, le=200, description="At most this many rows.")]


# --------------------------------------------------------------------------- costs


class SessionCostOut(BaseModel):
    session_id: str
    total_cost: float = Field(description="USD billed so far (all of it once it is gone).")
    currency: Literal["USD"] = "USD"


class DayCostOut(BaseModel):
    date: date
    cost: float


class CostSummaryOut(BaseModel):
    """What was billed over local days `start_date`..`end_date` (both included)."""

    consumer_id: str | None
    start_date: date
    end_date: date
    total_cost: float
    currency: Literal["USD"] = "USD"
    session_count: int = Field(description="Distinct sessions that billed in the range.")
    by_consumer: dict[str, float]
    by_provider: dict[str, float]
    by_gpu: dict[str, float]
    daily: list[DayCostOut]


class MonthSummaryOut(CostSummaryOut):
    """This month so far, plus today and what bills right now."""

    today_cost: float
    burn_usd_per_hour: float = Field(description="USD/h of every instance billing now.")


def _round(value: float) -> float:
    return round(value, 6)


def _consumer(caller: Principal, asked: str | None) -> str | None:
    """The consumer a report covers: a scoped caller's own (another's is forbidden)."""
    if caller.consumer is None:
        return asked
    if asked not in (None, caller.consumer):
        raise ApiError(403, "forbidden", f"this token is limited to consumer {caller.consumer}")
    return caller.consumer


def _summary(
    lines: list[CostLine], consumer: str | None, first: date, last: date
) -> dict[str, object]:
    return {
        "consumer_id": consumer,
        "start_date": first,
        "end_date": last,
        "total_cost": _round(sum(line.amount for line in lines)),
        "session_count": len({line.session_id for line in lines}),
        **{
            f"by_{what}": {k: _round(v) for k, v in costs.group(lines, what).items()}
            for what in ("consumer", "provider", "gpu")
        },
        "daily": [
            DayCostOut(date=date.fromisoformat(day), cost=_round(cost))
            for day, cost in costs.group(lines, "day").items()
        ],
    }


async def _lines(shopper: Shopper, first: date, last: date, consumer: str | None) -> list[CostLine]:
    since = costs.local_midnight(first, None)
    until = costs.local_midnight(last + timedelta(days=1), None)
    return await shopper.cost_lines(since, until, consumer=consumer)


def _days(
    today: date, period: str | None, start: date | None, end: date | None
) -> tuple[date, date]:
    """The local days a report covers, as the earlier API chose them."""
    if period == "daily":
        return today, today
    if period == "monthly" or (start is None and end is None):
        return costs.month_start(today), costs.next_month(today) - timedelta(days=1)
    if start is None:
        assert end is not None
        return costs.month_start(end), end
    if end is None:
        return start, costs.next_month(start) - timedelta(days=1)
    if end < start:
        raise ApiError(
            400, "bad_request", f"end_date {end} is before start_date {start}", field="end_date"
        )
    return start, end


@router.get(
    "/costs",
    response_model=SessionCostOut | CostSummaryOut,
    responses=error_responses(400, 403, 404),
)
async def get_costs(
    shopper: Core,
    caller: Caller,
    session_id: Annotated[
        str | None, Query(min_length=1, max_length=128, description="One session's total.")
    ] = None,
    period: Annotated[
        Literal["daily", "monthly"] | None, Query(description="Today, or this month.")
    ] = None,
    start_date: Day = None,
    end_date: Day = None,
    consumer_id: ConsumerQuery = None,
) -> SessionCostOut | CostSummaryOut:
    """One session's cost, or a summary over local days (default: this month; with one date,
    the other is the end or start of that date's month)."""
    if session_id is not None:
        session = await shopper.session(session_id)
        if not caller.may_see(session.consumer):
            raise ApiError(404, "not_found", f"no session {session_id}")
        total = costs.cost_of(session, shopper.clock.now())
        return SessionCostOut(session_id=session.id, total_cost=_round(total))
    consumer = _consumer(caller, consumer_id)
    today = costs.local_date(shopper.clock.now(), None)
    first, last = _days(today, period, start_date, end_date)
    lines = await _lines(shopper, first, last, consumer)
    return CostSummaryOut.model_validate(_summary(lines, consumer, first, last))


@router.get("/costs/summary", responses=error_responses(400, 403))
async def cost_summary(
    shopper: Core, caller: Caller, consumer_id: ConsumerQuery = None
) -> MonthSummaryOut:
    """This month so far: totals by consumer, provider, GPU and day, today, and the burn rate."""
    consumer = _consumer(caller, consumer_id)
    today = costs.local_date(shopper.clock.now(), None)
    first = costs.month_start(today)
    lines = await _lines(shopper, first, today, consumer)
    billing = [rate for s, _, rate in await shopper.billing_now() if consumer in (None, s.consumer)]
    return MonthSummaryOut.model_validate(
        {
            **_summary(lines, consumer, first, costs.next_month(today) - timedelta(days=1)),
            "today_cost": _round(sum(line.amount for line in lines if line.day == today)),
            "burn_usd_per_hour": _round(sum(billing)),
        }
    )


# --------------------------------------------------------------------------- budgets


class BudgetIn(BaseModel):
    """A budget to create, or to change (one per consumer and kind; no consumer: global)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    consumer: str | None = Field(
        default=None, pattern=CONSUMER_PATTERN, description="None: a global budget."
    )
    kind: BudgetKind
    limit: float = Field(ge=0.01, le=1e9, description="USD/month, sessions, or USD/h, by kind.")
    action: BudgetAction = BudgetAction.WARN


class BudgetOut(BaseModel):
    id: int
    consumer: str | None = Field(description="None: a global budget.")
    kind: BudgetKind
    limit: float
    action: BudgetAction

    @classmethod
    def of(cls, budget: Budget) -> BudgetOut:
        assert budget.id is not None
        return cls(
            id=budget.id,
            consumer=budget.consumer,
            kind=budget.kind,
            limit=budget.limit,
            action=budget.action,
        )


class BudgetUsageOut(BudgetOut):
    used: float = Field(description="This month's USD, sessions open, or USD/h now.")
    fraction: float = Field(description="used / limit.")
    over: bool
    thresholds_passed: list[int] = Field(description="Of 50, 80, 100 (%), those reached.")

    @classmethod
    def of_usage(cls, usage: Usage) -> BudgetUsageOut:
        return cls(
            **BudgetOut.of(usage.budget).model_dump(),
            used=_round(usage.used),
            fraction=_round(usage.fraction),
            over=usage.over,
            thresholds_passed=[t for t in THRESHOLDS if usage.fraction * 100 >= t],
        )


class BudgetListOut(BaseModel):
    budgets: list[BudgetUsageOut]
    count: int


def _operator(caller: Principal) -> None:
    if caller.consumer is not None:
        raise ApiError(403, "forbidden", "only the operator's token may change budgets")


@router.get("/budgets", responses=error_responses())
async def list_budgets(shopper: Core, caller: Caller) -> BudgetListOut:
    """Every budget and where it stands now (a scoped token: its consumer's only)."""
    usages = [
        BudgetUsageOut.of_usage(u)
        for u in await shopper.budgets.usage()
        if caller.consumer is None or u.budget.consumer == caller.consumer
    ]
    return BudgetListOut(budgets=usages, count=len(usages))


@router.put("/budgets", responses=error_responses(400, 403, 422))
async def set_budget(shopper: Core, caller: Caller, body: BudgetIn) -> BudgetOut:
    """Create a budget, or replace the limit and action of the one of that scope and kind."""
    _operator(caller)
    stored = await shopper.budgets.set(Budget(**body.model_dump()))
    return BudgetOut.of(stored)


@router.delete(
    "/budgets/{budget_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 403, 404),
)
async def delete_budget(
    shopper: Core, caller: Caller, budget_id: Annotated[int, Path(ge=1, le=2**62)]
) -> Response:
    """Remove a budget."""
    _operator(caller)
    try:
        await shopper.budgets.delete(budget_id)
    except UserError as err:
        raise ApiError(404, "not_found", err.message) from None
    return Response(status_code=204)


# --------------------------------------------------------------------------- benchmarks


class BenchmarkOut(BaseModel):
    """One measurement, with its cost per million tokens where its price is known."""

    gpu_name: str
    gpu_count: int
    model: str
    tokens_per_second: float
    runtime: str | None
    provider: str | None
    price_per_hour: float | None
    measured_at: datetime | None
    source: str
    usd_per_mtok: float | None
    speedup: float | None = Field(default=None, description="compare: tokens/s vs the fastest.")
    cost_efficiency: float | None = Field(
        default=None, description="compare: tokens per $ vs the fastest."
    )

    @classmethod
    def of(cls, ranked: benchmarks.Ranked) -> BenchmarkOut:
        def rounded(value: float | None) -> float | None:
            return _round(value) if value is not None else None

        return cls(
            **ranked.measurement.model_dump(exclude={"id"}),
            usd_per_mtok=rounded(ranked.usd_per_mtok),
            speedup=rounded(ranked.speedup),
            cost_efficiency=rounded(ranked.cost_efficiency),
        )


class BenchmarkListOut(BaseModel):
    benchmarks: list[BenchmarkOut]
    count: int


class RankingOut(BenchmarkListOut):
    model: str
    ranking: Literal["best", "cheapest", "compare"]


class RecommendationOut(BaseModel):
    """Per GPU configuration: the average of its measurements of the model."""

    gpu_name: str
    gpu_count: int
    samples: int
    avg_tokens_per_second: float
    avg_price_per_hour: float | None
    usd_per_mtok: float | None


class RecommendationsOut(BaseModel):
    model: str
    recommendations: list[RecommendationOut]
    count: int


async def _measured(shopper: Shopper, model: str | None, gpu: str | None) -> list[Benchmark]:
    try:
        return await shopper.benchmarks.measurements(model, gpu)
    except UnknownModel as err:
        raise ApiError(400, "bad_request", err.message, field="model") from None


def _ranking(
    ranking: Literal["best", "cheapest", "compare"],
    model: str,
    ranked: list[benchmarks.Ranked],
    limit: int,
) -> RankingOut:
    shown = [BenchmarkOut.of(r) for r in ranked[:limit]]
    return RankingOut(
        model=model.strip().lower(), ranking=ranking, benchmarks=shown, count=len(shown)
    )


@router.get("/benchmarks", responses=error_responses(400))
async def list_benchmarks(
    shopper: Core, model: AnyModel = None, gpu: Gpu = None, limit: Limit = 50
) -> BenchmarkListOut:
    """The measurements (seed and imported), by model, fastest first."""
    measured = await _measured(shopper, model, gpu)
    ordered = sorted(measured, key=lambda m: (m.model, -m.tokens_per_second))[:limit]
    shown = [BenchmarkOut.of(benchmarks.Ranked(m, benchmarks.cost_of(m))) for m in ordered]
    return BenchmarkListOut(benchmarks=shown, count=len(shown))


@router.get("/benchmarks/best", responses=error_responses(400))
async def best_benchmarks(
    shopper: Core, model: Model, gpu: Gpu = None, limit: Limit = 50
) -> RankingOut:
    """Fastest first (ties: cheaper per token first)."""
    ranked = benchmarks.best(await _measured(shopper, model, gpu))
    return _ranking("best", model, ranked, limit)


@router.get("/benchmarks/cheapest", responses=error_responses(400))
async def cheapest_benchmarks(
    shopper: Core,
    model: Model,
    gpu: Gpu = None,
    min_tps: Annotated[
        float | None, Query(ge=0, le=1e9, description="Only measurements this fast or faster.")
    ] = None,
    limit: Limit = 50,
) -> RankingOut:
    """Cheapest per million tokens first, among priced measurements."""
    ranked = benchmarks.cheapest(await _measured(shopper, model, gpu), min_tps)
    return _ranking("cheapest", model, ranked, limit)


@router.get("/benchmarks/compare", responses=error_responses(400))
async def compare_benchmarks(
    shopper: Core, model: Model, gpu: Gpu = None, limit: Limit = 50
) -> RankingOut:
    """Each measurement relative to the fastest: speedup and tokens per dollar."""
    ranked = benchmarks.compare(await _measured(shopper, model, gpu))
    return _ranking("compare", model, ranked, limit)


@router.get("/benchmarks/recommendations", responses=error_responses(400))
async def benchmark_recommendations(
    shopper: Core, model: Model, gpu: Gpu = None, limit: Limit = 50
) -> RecommendationsOut:
    """Per GPU configuration: average tokens/s and price, fastest first."""
    summaries = benchmarks.recommend(await _measured(shopper, model, gpu))[:limit]
    shown = [
        RecommendationOut(
            gpu_name=s.gpu_name,
            gpu_count=s.gpu_count,
            samples=s.samples,
            avg_tokens_per_second=_round(s.avg_tokens_per_second),
            avg_price_per_hour=_round(s.avg_price_per_hour)
            if s.avg_price_per_hour is not None
            else None,
            usd_per_mtok=_round(s.usd_per_mtok) if s.usd_per_mtok is not None else None,
        )
        for s in summaries
    ]
    return RecommendationsOut(model=model.strip().lower(), recommendations=shown, count=len(shown))


def install(app: FastAPI) -> None:
    """Add the costs, budgets and benchmarks routes."""
    app.include_router(router)
