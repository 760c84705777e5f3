"""What the menu says about each provider: only those a query asks, never "None" (issue 17 E)."""

from __future__ import annotations

from typing import Any

from gpushop_tui.core.inventory import ProviderReport
from gpushop_tui.models import OfferQuery
from gpushop_tui.providers.registry import PROVIDERS
from tests.core.test_inventory import world

__all__ = ["world"]


def test_a_provider_with_no_answer_yet_says_so_not_none() -> None:
    line = ProviderReport("tensordock", "error").describe()
    assert line == "tensordock: unavailable: no answer yet"
    assert "None" not in ProviderReport("vastai", "stale", offers=3).describe()


async def test_a_query_naming_providers_reports_only_those(world: Any) -> None:
    inventory, providers, _ = world
    providers["tensordock"].failure = RuntimeError("never asked, never fails")
    view = await inventory.view(OfferQuery(providers=("vastai",)))  # type: ignore[arg-type]
    assert [(r.provider, r.status) for r in view.providers] == [("vastai", "ok")]
    assert providers["tensordock"].calls == 0
    cached = await inventory.cached_view(OfferQuery(providers=("vastai",)))  # type: ignore[arg-type]
    assert [r.provider for r in cached.providers] == ["vastai"]
    everyone = await inventory.cached_view()
    assert [r.provider for r in everyone.providers] == list(PROVIDERS)
    assert "None" not in " ".join(r.describe() for r in everyone.providers)
