"""The providers gpushop knows: one tuple of adapter classes, and all that is derived from it.

`ADAPTERS` is the only list of providers. Their names (`PROVIDERS`), descriptors
(`PROVIDER_INFOS`, `provider_info`), settings knobs and credential env vars all come from each
adapter's `INFO`, so adding a provider is one adapter module, one simulator module and one line
here.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings, declare_providers
from gpushop_tui.providers.base import Provider, ProviderInfo
from gpushop_tui.providers.bluelobster import BlueLobster
from gpushop_tui.providers.lambdacloud import LambdaCloud
from gpushop_tui.providers.runpod import RunPod
from gpushop_tui.providers.tensordock import TensorDock
from gpushop_tui.providers.vastai import VastAi

ADAPTERS: tuple[type[Provider], ...] = (
    VastAi,
    TensorDock,
    BlueLobster,
    RunPod,
    LambdaCloud,
)
"""Every provider, in the order menus and tables list them."""


def provider_infos() -> tuple[ProviderInfo, ...]:
    """Each adapter's descriptor, read from `ADAPTERS` now (settings and secrets ask here)."""
    return tuple(adapter.INFO for adapter in ADAPTERS)


PROVIDER_INFOS: tuple[ProviderInfo, ...] = provider_infos()
PROVIDERS: tuple[str, ...] = tuple(info.name for info in PROVIDER_INFOS)


def provider_info(name: str) -> ProviderInfo:
    """The descriptor of provider `name`; KeyError when there is none."""
    for info in provider_infos():
        if info.name == name:
            return info
    raise KeyError(f"unknown provider {name!r}")


def connect_providers(
    settings: Settings, keys: Mapping[str, str | None], install_id: str, clock: Clock
) -> dict[str, Provider | None]:
    """An adapter for every provider that has a credential; None for the others."""
    return {
        adapter.INFO.name: adapter.connect(
            settings.provider(adapter.INFO.name).api_url,
            key,
            install_id,
            clock=clock,
            timeout_s=settings.http_timeout_s,
        )
        if (key := keys.get(adapter.INFO.name))
        else None
        for adapter in ADAPTERS
    }


declare_providers(provider_infos)
