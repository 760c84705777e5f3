"""The API's shared JSON shapes: the error body, offers and sessions as clients see them.

Keys follow the earlier implementation's API (prior-art §2.1, §2.2) where they were sound, so
its clients can switch; ours are added beside them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gpushop_tui.core import GpuRow, ProviderBest, ProviderHealth, ProviderReport
from gpushop_tui.models import (
    CostKind,
    IdleAction,
    InstanceState,
    Offer,
    SessionStatus,
    StoragePolicy,
)


class ErrorDetail(BaseModel):
    """What went wrong; `field`, `hint`, `provider` and `retry_suggested` appear where they
    apply."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A word for the kind of error, e.g. 'not_found'.")
    message: str
    request_id: str
    field: str | None = Field(default=None, description="The offending input, for bad input.")
    hint: str | None = Field(
        default=None,
        description="A way out, e.g. 'needs_override', 'storage_not_keepable', 'not_configured'.",
    )
    retry_suggested: bool | None = None
    provider: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: `{"error": {...}}`."""

    error: ErrorDetail


ERROR_WORDS = {
    400: "bad input (the offending field named)",
    401: "no valid bearer token",
    403: "not allowed for this token's consumer",
    404: "not found",
    409: "conflict with the current state (or the offer is taken)",
    413: "request body too large",
    422: "invalid request body",
    429: "a provider rate-limited us",
    503: "a provider is unavailable or not configured",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error model under each status it may answer, plus 401."""
    return {
        code: {"model": ErrorBody, "description": ERROR_WORDS.get(code, "error")}
        for code in sorted({401, *codes})
    }


_PRIOR_ID = re.compile(r"^(?P<provider>[A-Za-z]+)-(?P<rest>.+)$")


def offer_id(text: str, providers: Collection[str]) -> str:
    """Our offer id (`vastai:123`) for ours or the earlier API's form (`vastai-123`)."""
    text = text.strip()
    head, colon, rest = text.partition(":")
    if colon and head.lower() in providers:
        return f"{head.lower()}:{rest}"
    prior = _PRIOR_ID.match(text)
    if prior and prior["provider"].lower() in providers:
        return f"{prior['provider'].lower()}:{prior['rest']}"
    return text


class OfferOut(BaseModel):
    """One offer: the earlier API's keys plus ours."""

    id: str = Field(description="'<provider>:<provider offer id>'")
    provider: str
    provider_id: str = Field(description="The provider's own offer id.")
    gpu_type: str = Field(description="Canonical GPU name, e.g. 'RTX 4090'.")
    gpu_count: int
    vram_gb: float = Field(description="Per GPU.")
    price_per_hour: float = Field(description="USD/h for the whole offer.")
    price_per_gpu_hour: float
    location: str | None = Field(description="Region, else country.")
    region: str | None
    country: str | None
    reliability: float | None
    cuda_version: float | None
    inet_down_mbps: float | None
    vcpus: float | None
    ram_gb: float | None
    disk_gb: float | None
    interruptible: bool
    available: bool = True
    fetched_at: datetime
    usd_per_mtok: float | None = Field(
        description="Estimated USD per million tokens of the asked model; null without one."
    )
    usd_per_mtok_measured: bool = Field(
        default=False,
        description="The estimate rests (at least in part) on tokens/s gpushop measured on its "
        "own rentals (benchmark source 'measured'), not only on shipped or imported ones.",
    )

    @classmethod
    def of(
        cls, offer: Offer, usd_per_mtok: float | None = None, *, measured: bool = False
    ) -> OfferOut:
        return cls(
            id=offer.id,
            provider=offer.provider,
            provider_id=offer.provider_offer_id,
            gpu_type=offer.gpu_name,
            gpu_count=offer.gpu_count,
            vram_gb=offer.vram_gb,
            price_per_hour=offer.price_per_hour,
            price_per_gpu_hour=round(offer.price_per_gpu_hour, 6),
            location=offer.region or offer.country,
            region=offer.region,
            country=offer.country,
            reliability=offer.reliability,
            cuda_version=offer.cuda,
            inet_down_mbps=offer.inet_down_mbps,
            vcpus=offer.vcpus,
            ram_gb=offer.ram_gb,
            disk_gb=offer.disk_gb,
            interruptible=offer.interruptible,
            fetched_at=offer.fetched_at,
            usd_per_mtok=round(usd_per_mtok, 6) if usd_per_mtok is not None else None,
            usd_per_mtok_measured=measured,
        )


class ProviderStatusOut(BaseModel):
    """How one provider's part of the menu stands."""

    provider: str
    status: ProviderHealth
    offers: int
    age_s: float | None = Field(description="Seconds since its offers were fetched.")
    error: str | None
    truncated: bool = Field(
        description="The provider's answer was capped: it holds more offers than these."
    )

    @classmethod
    def of(cls, report: ProviderReport) -> ProviderStatusOut:
        age = round(report.age_s, 1) if report.age_s is not None else None
        return cls(
            provider=report.provider,
            status=report.status,
            offers=report.offers,
            age_s=age,
            error=report.error,
            truncated=report.truncated,
        )


class InventoryOut(BaseModel):
    offers: list[OfferOut]
    count: int = Field(description="Offers in this page.")
    total: int = Field(description="Offers matching, before limit and offset.")
    menu_size: int = Field(description="Offers known before filtering.")
    hidden_after_failures: int
    providers: list[ProviderStatusOut]


class ProviderBestOut(BaseModel):
    """One provider's cheapest offer in a comparison row."""

    offer_id: str
    price_per_hour: float = Field(description="USD/h for the whole offer.")
    offers: int = Field(description="This provider's offers in the row.")

    @classmethod
    def of(cls, best: ProviderBest) -> ProviderBestOut:
        return cls(offer_id=best.offer_id, price_per_hour=best.price_per_hour, offers=best.offers)


class GpuRowOut(BaseModel):
    """Every matching offer of one GPU model and count, compared across providers."""

    gpu_type: str = Field(description="Canonical GPU name, e.g. 'RTX 4090'.")
    gpu_count: int
    vram_gb: float = Field(description="Per GPU: the largest among the row's offers.")
    offers: int
    price_min: float = Field(description="USD/h for the whole offer, the cheapest in the row.")
    price_max: float = Field(description="USD/h for the whole offer, the dearest in the row.")
    price_per_gpu_hour_min: float
    best_offer_id: str = Field(description="The row's first offer under the query's sort.")
    by_provider: dict[str, ProviderBestOut] = Field(
        description="Each provider with offers in the row, in the menu's provider order."
    )
    usd_per_mtok: float | None = Field(
        description="The row's lowest estimated USD per million tokens of the asked model; "
        "null without one."
    )
    usd_per_mtok_measured: bool = Field(
        default=False,
        description="That estimate rests (at least in part) on tokens/s gpushop measured on its "
        "own rentals (benchmark source 'measured'), not only on shipped or imported ones.",
    )

    @classmethod
    def of(cls, row: GpuRow) -> GpuRowOut:
        return cls(
            gpu_type=row.gpu_name,
            gpu_count=row.gpu_count,
            vram_gb=row.vram_gb,
            offers=row.offers,
            price_min=row.price_min,
            price_max=row.price_max,
            price_per_gpu_hour_min=round(row.price_per_gpu_hour_min, 6),
            best_offer_id=row.best_offer_id,
            by_provider={name: ProviderBestOut.of(best) for name, best in row.by_provider.items()},
            usd_per_mtok=round(row.usd_per_mtok, 6) if row.usd_per_mtok is not None else None,
            usd_per_mtok_measured=row.usd_per_mtok_measured,
        )


class ComparisonOut(BaseModel):
    """The menu grouped by GPU model and count."""

    rows: list[GpuRowOut]
    count: int = Field(description="Rows in this page.")
    total: int = Field(description="Rows, before limit and offset.")
    matching_offers: int = Field(description="Offers matching the query, over all rows.")
    menu_size: int = Field(description="Offers known before filtering.")
    hidden_after_failures: int
    model: str | None = Field(description="The model whose USD per million tokens rows carry.")
    providers: list[ProviderStatusOut]


class CycleOut(BaseModel):
    """One stretch of a session's power cycles: running (`compute`, the GPU rate) or stopped
    with its disk kept (`storage`, the disk rate)."""

    kind: CostKind
    started_at: datetime
    ended_at: datetime | None = Field(description="null while it is still billing.")
    rate_per_hour: float = Field(description="USD/h.")
    hours: float
    cost: float = Field(description="USD, so far while it is still billing.")


class SessionOut(BaseModel):
    """One session: the earlier API's keys plus ours; never the private key."""

    id: str
    consumer_id: str
    provider: str
    offer_id: str
    gpu_type: str
    gpu_count: int
    status: SessionStatus = Field(
        description="stopped: the instance is off and its disk kept (billing the disk only); "
        "ended: destroyed and confirmed gone, or nothing was rented."
    )
    status_words: str = Field(
        description="The status as every face says it, e.g. 'stopped (disk kept, $2.88/day)', "
        "'ended (destroyed)'."
    )
    instance_id: str | None
    instance_state: InstanceState
    error: str | None
    ssh_host: str | None
    ssh_port: int | None
    ssh_user: str | None
    ssh_command: str | None = Field(description="How to reach the node, while it is reachable.")
    workload_type: str
    model_id: str | None = Field(default=None, description="The model llm or vllm serves.")
    workload_phase: str | None = Field(
        default=None,
        description="starting, installing, pulling model, loading, healthy, or failed: why.",
    )
    endpoint: str | None = Field(
        default=None,
        description="Base URL of the workload's OpenAI-compatible API on the node's loopback: "
        "reach it with `gpushop sessions tunnel ID` (the token: /sessions/{id}/endpoint).",
    )
    endpoint_public: str | None = Field(
        default=None,
        description="Base URL of the same API on the provider's public address, guarded by the "
        "token (vLLM where the provider runs images); null: reached through the tunnel only.",
    )
    reservation_hours: float
    idle_threshold_minutes: float = Field(description="0: never stopped for idleness.")
    idle_reason: str | None
    last_busy_at: datetime | None
    storage_policy: StoragePolicy
    idle_action: IdleAction = Field(description="What an idle stop does: destroy, or stop.")
    keep_days: float | None = Field(
        description="Days a stopped disk is kept before it is destroyed (null: the setting)."
    )
    keep_until: datetime | None = Field(
        description="While stopped: when the kept disk is destroyed unless started again."
    )
    disk_usd_per_day: float | None = Field(description="While stopped: what the kept disk bills.")
    price_per_hour: float | None
    cost_usd: float = Field(description="Billed so far (all of it once the instance is gone).")
    cycles: list[CycleOut] = Field(
        description="Each running and each stopped stretch it billed (or bills), oldest first."
    )
    created_at: datetime
    expires_at: datetime
    hard_max_at: datetime
    stopped_at: datetime | None
    kill_paths: list[str] = Field(
        description="What ends the instance if nobody does, in words, one per path: the "
        "supervisor (while one runs) and the node's own watchdog, armed or why not; empty "
        "once the session is closed."
    )
    watchdog_deadline: datetime | None = Field(
        description="When the watchdog armed on the node ends the instance by itself (null: "
        "none armed)."
    )
    watchdog_error: str | None = Field(
        description="Why the node's watchdog could not be armed or moved (null: it is as it "
        "should be)."
    )


class SessionListOut(BaseModel):
    sessions: list[SessionOut]
    count: int


class CreatedSessionOut(BaseModel):
    session: SessionOut
    ssh_private_key: str | None = Field(description="Only when return_private_key was asked.")
    key_path: str | None = Field(description="Where the server keeps the key (until closed).")
    retries_attempted: Literal[0] = 0


class SessionEndpointOut(BaseModel):
    session_id: str
    endpoint: str = Field(description="Base URL on the node's loopback (through a tunnel).")
    token: str = Field(description="The endpoint's bearer token (vLLM checks it).")
    endpoint_public: str | None = Field(
        default=None, description="Public base URL (vLLM where images run), else null."
    )
    tunnel_command: str = Field(description="Forwards a local port to the endpoint over SSH.")


class SessionKeyOut(BaseModel):
    session_id: str
    ssh_private_key: str


class SessionActionOut(BaseModel):
    message: str
    session_id: str
    status: SessionStatus


class ExtendedOut(BaseModel):
    message: str
    session_id: str
    new_expires_at: datetime


class ActivityOut(BaseModel):
    session_id: str
    last_busy_at: datetime | None
