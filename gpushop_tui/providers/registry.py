"""Which adapter serves which provider, and building them from the settings and credentials."""

from __future__ import annotations

from collections.abc import Mapping

from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings
from gpushop_tui.models import PROVIDERS
from gpushop_tui.providers.base import Provider
from gpushop_tui.providers.bluelobster import BlueLobster
from gpushop_tui.providers.tensordock import TensorDock
from gpushop_tui.providers.vastai import VastAi

ADAPTERS: dict[str, type[Provider]] = {
    "vastai": VastAi,
    "tensordock": TensorDock,
    "bluelobster": BlueLobster,
}


def base_url(settings: Settings, provider: str) -> str:
    """The API base a provider's adapter talks to (a setting, so the simulator can stand in)."""
    urls = {
        "vastai": settings.vastai_api_url,
        "tensordock": settings.tensordock_api_url,
        "bluelobster": settings.bluelobster_api_url,
    }
    return urls[provider]


def connect_providers(
    settings: Settings, keys: Mapping[str, str | None], install_id: str, clock: Clock
) -> dict[str, Provider | None]:
    """An adapter for every provider that has a credential; None for the others."""
    return {
        name: ADAPTERS[name].connect(
            base_url(settings, name),
            key,
            install_id,
            clock=clock,
            timeout_s=settings.http_timeout_s,
        )
        if (key := keys.get(name))
        else None
        for name in PROVIDERS
    }
