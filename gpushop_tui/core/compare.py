"""The menu as a comparison: one row per GPU model and count, each provider's best price side by
side, how many offers there are and the spread of their prices.

A query's filters choose the offers before they are grouped; its sort orders the rows by each
row's best offer under that sort (so `sort=usd_per_mtok` puts the cheapest tokens first), and its
`limit` counts rows, not offers.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpushop_tui.core.inventory import InventoryView, ProviderReport
from gpushop_tui.models import Offer


@dataclass(frozen=True)
class ProviderBest:
    """The cheapest offer one provider has for a row's GPU model and count."""

    offer_id: str
    price_per_hour: float
    offers: int
    """How many offers this provider has in the row."""


@dataclass(frozen=True)
class GpuRow:
    """Every offer of one GPU model and count, compared across providers."""

    gpu_name: str
    gpu_count: int
    vram_gb: float
    """Per GPU: the largest card size among the row's offers."""
    offers: int
    price_min: float
    price_max: float
    """USD/h for the whole offer, cheapest and dearest in the row."""
    best_offer_id: str
    """The row's first offer under the query's sort: what `enter` or a rent would pick."""
    by_provider: dict[str, ProviderBest]
    """Each provider with offers in the row, in the menu's provider order."""
    usd_per_mtok: float | None = None
    """The lowest estimated $ per million tokens in the row, when the query names a model."""
    usd_per_mtok_measured: bool = False
    """That estimate rests (at least in part) on tokens/s gpushop measured on its own sessions'
    nodes (`InventoryView.measured`)."""

    @property
    def price_per_gpu_hour_min(self) -> float:
        return self.price_min / self.gpu_count


@dataclass(frozen=True)
class InventoryComparison:
    """One answer to a query over the menu, grouped by GPU model and count."""

    rows: list[GpuRow]
    providers: list[ProviderReport]
    """Where each provider the query asks stands, as in the offer list."""
    offers: int
    """Offers matched by the query's filters (before rows were cut to its limit)."""
    groups: int
    """Rows before they were cut to the query's limit."""
    total: int
    hidden: int
    model: str | None = None
    """The query's model, whose estimated $ per million tokens each row carries."""


def compare_by_gpu(
    view: InventoryView, *, limit: int | None = None, model: str | None = None
) -> InventoryComparison:
    """Group an offer list (already filtered and sorted) into comparison rows.

    Rows keep the order of their first offer in `view.offers`; `limit` cuts the rows.
    """
    grouped: dict[tuple[str, int], list[Offer]] = {}
    for offer in view.offers:
        grouped.setdefault((offer.gpu_name, offer.gpu_count), []).append(offer)
    order = {report.provider: index for index, report in enumerate(view.providers)}
    rows = [_row(offers, order, view) for offers in list(grouped.values())[:limit]]
    return InventoryComparison(
        rows=rows,
        providers=view.providers,
        offers=len(view.offers),
        groups=len(grouped),
        total=view.total,
        hidden=view.hidden,
        model=model,
    )


def _row(offers: list[Offer], order: dict[str, int], view: InventoryView) -> GpuRow:
    by_provider: dict[str, list[Offer]] = {}
    for offer in offers:
        by_provider.setdefault(offer.provider, []).append(offer)
    prices = [offer.price_per_hour for offer in offers]
    estimates = view.usd_per_mtok
    cheapest = min(
        (offer for offer in offers if offer.id in estimates),
        key=lambda offer: estimates[offer.id],
        default=None,
    )
    return GpuRow(
        gpu_name=offers[0].gpu_name,
        gpu_count=offers[0].gpu_count,
        vram_gb=max(offer.vram_gb for offer in offers),
        offers=len(offers),
        price_min=min(prices),
        price_max=max(prices),
        best_offer_id=offers[0].id,
        by_provider={
            provider: _best(own)
            for provider, own in sorted(
                by_provider.items(), key=lambda item: order.get(item[0], len(order))
            )
        },
        usd_per_mtok=estimates[cheapest.id] if cheapest is not None else None,
        usd_per_mtok_measured=cheapest is not None and cheapest.id in view.measured,
    )


def _best(offers: list[Offer]) -> ProviderBest:
    cheapest = min(offers, key=lambda offer: offer.price_per_hour)
    return ProviderBest(
        offer_id=cheapest.id, price_per_hour=cheapest.price_per_hour, offers=len(offers)
    )
