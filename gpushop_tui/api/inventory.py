"""API routes: the offer menu (`GET /api/v1/inventory`, `GET /api/v1/inventory/{id}`) and its
comparison by GPU (`GET /api/v1/inventory/compare`, the same parameters).

The earlier API's query parameters are kept (`gpu=` too, as the brief writes `gpu_type=`) and
`q=` takes our query language; both may be given, and must not contradict each other.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query
from pydantic import ValidationError

from gpushop_tui.api.deps import ApiError, ProviderQuery, ShopperDep, api_router, known_provider
from gpushop_tui.api.schemas import (
    ComparisonOut,
    GpuRowOut,
    InventoryOut,
    OfferOut,
    ProviderStatusOut,
    error_responses,
)
from gpushop_tui.api.schemas import offer_id as canonical_offer_id
from gpushop_tui.core import QueryError, Shopper
from gpushop_tui.models import OfferQuery, validation_problem
from gpushop_tui.query import unknown_model

router = api_router(tags=["inventory"])
MAX_PAGE = 1000


async def _query(
    shopper: Shopper, q: str | None, params: dict[str, tuple[str, Any]], model: str | None
) -> OfferQuery:
    """`q` parsed, with the prior-style parameters (OfferQuery field → (param, value)) on top."""
    try:
        parsed = await shopper.parse_query(q or "")
    except QueryError as err:
        raise ApiError(
            400, "bad_query", err.message, field="q", reason=err.reason, span=[err.start, err.end]
        ) from None
    models = await shopper.benchmark_models()
    if model is not None and model not in models:
        raise ApiError(400, "bad_request", unknown_model(model, models), field="model")
    fields = parsed.model_dump(exclude_unset=True)
    for name, (param, value) in {**params, "model": ("model", model)}.items():
        if value is None:
            continue
        if name in fields and fields[name] != value:
            raise ApiError(
                400,
                "bad_request",
                f"{param}={value} contradicts q={q!r}; give it in one place",
                field=param,
            )
        fields[name] = value
    try:
        return OfferQuery(**fields)
    except ValidationError as err:
        raise ApiError(400, "bad_request", validation_problem(err), field="q") from None


async def offer_query(
    shopper: ShopperDep,
    q: Annotated[
        str | None,
        Query(max_length=2000, description="Query language: 'gpu=4090 vram>=24 price<=0.5'."),
    ] = None,
    provider: ProviderQuery = None,
    gpu_type: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    gpu: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Another name of gpu_type.")
    ] = None,
    location: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    min_vram: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e6)] = None,
    gpu_count: Annotated[int | None, Query(ge=1, le=1024)] = None,
    min_gpu_count: Annotated[int | None, Query(ge=1, le=1024)] = None,
    min_reliability: Annotated[float | None, Query(ge=0, le=1)] = None,
    min_cuda: Annotated[float | None, Query(ge=0, le=1000)] = None,
    spot: Annotated[
        bool | None,
        Query(description="true: interruptible (spot) offers only; false: on-demand only."),
    ] = None,
    model: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Price offers per million tokens."),
    ] = None,
) -> OfferQuery:
    """The menu routes' filter parameters as one query (a dependency, so both routes take the
    same parameters and refuse the same mistakes)."""
    if gpu_count is not None and min_gpu_count is not None:
        raise ApiError(
            400, "bad_request", "give gpu_count or min_gpu_count, not both", field="gpu_count"
        )
    if gpu is not None and gpu_type is not None and gpu != gpu_type:
        raise ApiError(
            400, "bad_request", f"gpu={gpu} contradicts gpu_type={gpu_type}; give one", field="gpu"
        )
    provider = known_provider(shopper, provider)
    return await _query(
        shopper,
        q,
        {
            "providers": ("provider", (provider,) if provider else None),
            "gpu": ("gpu", gpu) if gpu is not None else ("gpu_type", gpu_type),
            "region": ("location", location),
            "min_vram_gb": ("min_vram", min_vram),
            "max_price": ("max_price", max_price),
            "min_gpus": ("gpu_count", gpu_count or min_gpu_count),
            "max_gpus": ("gpu_count", gpu_count),
            "min_reliability": ("min_reliability", min_reliability),
            "min_cuda": ("min_cuda", min_cuda),
            "spot": ("spot", spot),
        },
        model,
    )


OfferQueryDep = Annotated[OfferQuery, Depends(offer_query)]
"""A route parameter `query: OfferQueryDep` receives the query its filter parameters ask for."""
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.get("/inventory", responses=error_responses(400, 429, 503))
async def inventory(
    shopper: ShopperDep,
    query: OfferQueryDep,
    refresh: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> InventoryOut:
    """Offers across providers, cheapest first unless `q` sorts otherwise."""
    view = await shopper.offers(query, refresh=refresh)
    page = view.offers[offset : offset + limit]
    return InventoryOut(
        offers=[
            OfferOut.of(o, view.usd_per_mtok.get(o.id), measured=o.id in view.measured)
            for o in page
        ],
        count=len(page),
        total=len(view.offers),
        menu_size=view.total,
        hidden_after_failures=view.hidden,
        providers=[ProviderStatusOut.of(r) for r in view.providers],
    )


@router.get("/inventory/compare", responses=error_responses(400, 429, 503))
async def compare(
    shopper: ShopperDep,
    query: OfferQueryDep,
    refresh: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> ComparisonOut:
    """The matching offers grouped by GPU model and count: each provider's best price side by
    side, the number of offers and their price range. Rows follow their best offer under the
    query's sort; `limit` and `offset` page the rows."""
    comparison = await shopper.compare_offers(query, refresh=refresh)
    page = comparison.rows[offset : offset + limit]
    return ComparisonOut(
        rows=[GpuRowOut.of(row) for row in page],
        count=len(page),
        total=len(comparison.rows),
        matching_offers=comparison.offers,
        menu_size=comparison.total,
        hidden_after_failures=comparison.hidden,
        model=comparison.model,
        providers=[ProviderStatusOut.of(r) for r in comparison.providers],
    )


@router.get("/inventory/{offer_id}", responses=error_responses(404, 429, 503))
async def one_offer(shopper: ShopperDep, offer_id: str) -> OfferOut:
    """One offer by id (`vastai:123`, or the earlier form `vastai-123`), fresh if it is old."""
    wanted = canonical_offer_id(offer_id, shopper.provider_names())
    found = await shopper.find_offer(wanted)
    if found is None:
        raise ApiError(
            404, "not_found", f"no offer {wanted!r} in the current menu (it may be taken)"
        )
    return OfferOut.of(found)


def install(app: FastAPI) -> None:
    """Add this module's routes to `app`."""
    app.include_router(router)
