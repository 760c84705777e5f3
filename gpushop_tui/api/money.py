"""API routes for money: costs (prior-art §1.2 shapes), budgets, and benchmark rankings.

Costs are the core's cost report (`Shopper.cost_report`) over local days, the same one the CLI
and the Costs pane render. A scoped token sees only its consumer's costs and budgets, and only
the operator writes budgets.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gpushop_tui.api.deps import (
    ApiError,
    CallerDep,
    ShopperDep,
    api_router,
    details,
    fields_named,
    visible_session,
)
from gpushop_tui.api.schemas import error_responses
from gpushop_tui.api.tokens import Principal
from gpushop_tui.core import THRESHOLDS, CostReport, GpuSummary, Ranked, Usage
from gpushop_tui.errors import UserError
from gpushop_tui.models import Budget, BudgetAction, BudgetKind

router = api_router(tags=["money"])

CONSUMER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2999, 12, 31)
"""Report days outside these are refused as bad input (no calendar overflow)."""
REPORT_FIELDS = {"until": "end_date"}
"""The cost report's inputs (as core errors name them) by the query parameter a client sent."""

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


def _round(value: float) -> float:
    return round(value, 6)


def _round_known(value: float | None) -> float | None:
    return _round(value) if value is not None else None


def _rounded(totals: dict[str, float]) -> dict[str, float]:
    return {key: _round(value) for key, value in totals.items()}


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

    @classmethod
    def of(cls, report: CostReport) -> CostSummaryOut:
        return cls(
            consumer_id=report.consumer,
            start_date=report.first_day,
            end_date=report.last_day,
            total_cost=_round(report.total),
            session_count=report.session_count,
            by_consumer=_rounded(report.by("consumer")),
            by_provider=_rounded(report.by("provider")),
            by_gpu=_rounded(report.by("gpu")),
            daily=[
                DayCostOut(date=date.fromisoformat(day), cost=_round(cost))
                for day, cost in report.by("day").items()
            ],
        )


class MonthSummaryOut(CostSummaryOut):
    """This month so far, plus today and what bills right now."""

    today_cost: float
    burn_usd_per_hour: float = Field(description="USD/h of every instance billing now.")
    gpu_usd_per_hour: float = Field(
        description="The part of the burn rate that bills GPU time (running, or on the way)."
    )
    disk_usd_per_hour: float = Field(
        description="The part of the burn rate that bills only stopped sessions' kept disks."
    )

    @classmethod
    def of(cls, report: CostReport) -> MonthSummaryOut:
        return cls(
            **CostSummaryOut.of(report).model_dump(),
            today_cost=_round(report.today_total),
            burn_usd_per_hour=_round(report.burn_usd_per_hour),
            gpu_usd_per_hour=_round(sum(b.usd_per_hour for b in report.gpu_billing)),
            disk_usd_per_hour=_round(sum(b.usd_per_hour for b in report.disk_billing)),
        )


def _consumer(caller: Principal, asked: str | None) -> str | None:
    """The consumer a report covers: a scoped caller's own (another's is forbidden)."""
    if caller.consumer is None:
        return asked
    if asked not in (None, caller.consumer):
        raise ApiError(403, "forbidden", f"this token is limited to consumer {caller.consumer}")
    return caller.consumer


@router.get(
    "/costs",
    response_model=SessionCostOut | CostSummaryOut,
    responses=error_responses(400, 403, 404),
)
async def get_costs(
    shopper: ShopperDep,
    caller: CallerDep,
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
        session = await visible_session(shopper, caller, session_id)
        total = (await shopper.view_of(session)).cost_at(shopper.now())
        return SessionCostOut(session_id=session.id, total_cost=_round(total))
    consumer = _consumer(caller, consumer_id)
    if period == "daily":
        start_date = end_date = shopper.today()
    elif period == "monthly":
        start_date = end_date = None
    with fields_named(REPORT_FIELDS):
        report = await shopper.cost_report(start_date, end_date, consumer=consumer)
    return CostSummaryOut.of(report)


@router.get("/costs/summary", responses=error_responses(400, 403))
async def cost_summary(
    shopper: ShopperDep, caller: CallerDep, consumer_id: ConsumerQuery = None
) -> MonthSummaryOut:
    """This month so far: totals by consumer, provider, GPU and day, today, and the burn rate."""
    report = await shopper.cost_report(consumer=_consumer(caller, consumer_id))
    return MonthSummaryOut.of(report)


# --------------------------------------------------------------------------- budgets


class BudgetIn(BaseModel):
    """A budget to create, or to change (one per consumer and kind; no consumer: global)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    consumer: str | None = Field(
        default=None, pattern=CONSUMER_PATTERN, description="None: a global budget."
    )
    kind: BudgetKind
    limit: float = Field(
        ge=0.01, le=1e9, description="USD/month, sessions, USD/h, or USD/day of kept disks."
    )
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
    used: float = Field(
        description="This month's USD, sessions open, USD/h now, or USD/day of kept disks now."
    )
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
async def list_budgets(shopper: ShopperDep, caller: CallerDep) -> BudgetListOut:
    """Every budget and where it stands now (a scoped token: its consumer's only)."""
    usages = [
        BudgetUsageOut.of_usage(u)
        for u in await shopper.budget_usage()
        if caller.consumer is None or u.budget.consumer == caller.consumer
    ]
    return BudgetListOut(budgets=usages, count=len(usages))


@router.put("/budgets", responses=error_responses(400, 403, 422))
@router.post("/budgets", responses=error_responses(400, 403, 422))
async def set_budget(shopper: ShopperDep, caller: CallerDep, body: BudgetIn) -> BudgetOut:
    """Create a budget, or replace the limit and action of the one of that scope and kind
    (PUT or POST: the same call)."""
    _operator(caller)
    stored = await shopper.set_budget(Budget(**body.model_dump()))
    return BudgetOut.of(stored)


@router.delete(
    "/budgets/{budget_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(400, 403, 404),
)
async def delete_budget(
    shopper: ShopperDep, caller: CallerDep, budget_id: Annotated[int, Path(ge=1, le=2**62)]
) -> Response:
    """Remove a budget."""
    _operator(caller)
    try:
        await shopper.delete_budget(budget_id)
    except UserError as err:
        raise ApiError(404, "not_found", err.message, **details(err)) from None
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
    def of(cls, ranked: Ranked) -> BenchmarkOut:
        return cls(
            **ranked.measurement.model_dump(exclude={"id"}),
            usd_per_mtok=_round_known(ranked.usd_per_mtok),
            speedup=_round_known(ranked.speedup),
            cost_efficiency=_round_known(ranked.cost_efficiency),
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


def _ranking(
    ranking: Literal["best", "cheapest", "compare"], model: str, ranked: list[Ranked], limit: int
) -> RankingOut:
    shown = [BenchmarkOut.of(r) for r in ranked[:limit]]
    return RankingOut(
        model=model.strip().lower(), ranking=ranking, benchmarks=shown, count=len(shown)
    )


def _recommendation(summary: GpuSummary) -> RecommendationOut:
    return RecommendationOut(
        gpu_name=summary.gpu_name,
        gpu_count=summary.gpu_count,
        samples=summary.samples,
        avg_tokens_per_second=_round(summary.avg_tokens_per_second),
        avg_price_per_hour=_round_known(summary.avg_price_per_hour),
        usd_per_mtok=_round_known(summary.usd_per_mtok),
    )


@router.get("/benchmarks", responses=error_responses(400))
async def list_benchmarks(
    shopper: ShopperDep, model: AnyModel = None, gpu: Gpu = None, limit: Limit = 50
) -> BenchmarkListOut:
    """The measurements (seed and imported), by model, fastest first."""
    ranked = await shopper.rank_benchmarks("all", model, gpu)
    shown = [BenchmarkOut.of(r) for r in ranked[:limit]]
    return BenchmarkListOut(benchmarks=shown, count=len(shown))


@router.get("/benchmarks/best", responses=error_responses(400))
async def best_benchmarks(
    shopper: ShopperDep, model: Model, gpu: Gpu = None, limit: Limit = 50
) -> RankingOut:
    """Fastest first (ties: cheaper per token first)."""
    ranked = await shopper.rank_benchmarks("best", model, gpu)
    return _ranking("best", model, ranked, limit)


@router.get("/benchmarks/cheapest", responses=error_responses(400))
async def cheapest_benchmarks(
    shopper: ShopperDep,
    model: Model,
    gpu: Gpu = None,
    min_tps: Annotated[
        float | None, Query(ge=0, le=1e9, description="Only measurements this fast or faster.")
    ] = None,
    limit: Limit = 50,
) -> RankingOut:
    """Cheapest per million tokens first, among priced measurements."""
    ranked = await shopper.rank_benchmarks("cheapest", model, gpu, min_tps)
    return _ranking("cheapest", model, ranked, limit)


@router.get("/benchmarks/compare", responses=error_responses(400))
async def compare_benchmarks(
    shopper: ShopperDep, model: Model, gpu: Gpu = None, limit: Limit = 50
) -> RankingOut:
    """Each measurement relative to the fastest: speedup and tokens per dollar."""
    ranked = await shopper.rank_benchmarks("compare", model, gpu)
    return _ranking("compare", model, ranked, limit)


@router.get("/benchmarks/recommendations", responses=error_responses(400))
async def benchmark_recommendations(
    shopper: ShopperDep, model: Model, gpu: Gpu = None, limit: Limit = 50
) -> RecommendationsOut:
    """Per GPU configuration: average tokens/s and price, fastest first."""
    summaries = (await shopper.recommend_gpus(model, gpu))[:limit]
    shown = [_recommendation(s) for s in summaries]
    return RecommendationsOut(model=model.strip().lower(), recommendations=shown, count=len(shown))


def install(app: FastAPI) -> None:
    """Add the costs, budgets and benchmarks routes."""
    app.include_router(router)
