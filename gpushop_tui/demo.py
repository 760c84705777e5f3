"""The demo marketplace: the simulator in-process, with gpushop pointed at it.

A face-level helper (only faces may import the simulator). Nothing in demo mode can reach a
real provider: every provider URL and credential is the simulator's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings
from gpushop_tui.core import CREDENTIAL_ENV, SecretStore
from gpushop_tui.sim.runner import Simulator, run_simulator

DEMO_BOOT_DELAY_SCALE = 0.02
"""Simulated instances boot in seconds, not the minutes real providers take."""


@dataclass
class Demo:
    """Settings and credentials that point at a running simulator."""

    settings: Settings
    secrets: SecretStore
    simulator: Simulator


@asynccontextmanager
async def demo_marketplace(
    settings: Settings, seed: int = 0, clock: Clock | None = None
) -> AsyncIterator[Demo]:
    """Run the simulator for as long as the block lasts, with `settings` re-pointed at it."""
    async with run_simulator(seed=seed, clock=clock) as simulator:
        providers = {
            name: knobs.model_copy(update={"api_url": simulator.urls[name]})
            for name, knobs in settings.providers.items()
        }
        yield Demo(
            settings=settings.model_copy(
                update={"providers": providers, "boot_delay_scale": DEMO_BOOT_DELAY_SCALE}
            ),
            secrets=SecretStore(
                {CREDENTIAL_ENV[provider]: key for provider, key in simulator.keys.items()}
            ),
            simulator=simulator,
        )
