"""What the simulator's node tests share: a fake-clock world with its SSH nodes, and a key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncssh
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.world import World


@dataclass
class Env:
    clock: FakeClock
    world: World
    nodes: SshNodes
    key: asyncssh.SSHKey


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    nodes = SshNodes(world)
    world.nodes = nodes
    yield Env(clock, world, nodes, asyncssh.generate_private_key("ssh-ed25519"))
    await nodes.aclose()
