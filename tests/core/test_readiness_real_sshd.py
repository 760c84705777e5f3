"""The readiness check against a real OpenSSH sshd (with a stand-in nvidia-smi on its PATH)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings
from gpushop_tui.core.events import EventBus
from gpushop_tui.core.inventory import Inventory
from gpushop_tui.core.sessions import Lifecycle
from gpushop_tui.models import InstanceState, InstanceStatus, Offer, OfferQuery, SessionStatus
from gpushop_tui.node.keys import create_key_pair
from gpushop_tui.providers.base import (
    CreateSpec,
    InstanceIdSink,
    InstanceRef,
    Provider,
    ProviderHttp,
    ProviderInfo,
    RateLimit,
    Readiness,
)
from gpushop_tui.providers.vastai import VastAi
from gpushop_tui.store import Store
from tests.support.factories import make_offer, make_session
from tests.support.sshd import RealSshd


class NodeAtSshd(Provider):
    """A provider whose one instance is running at the real sshd."""

    INFO: ClassVar[ProviderInfo] = VastAi.INFO
    name: ClassVar[Any] = "vastai"
    rate = RateLimit(None)
    readiness: ClassVar[Readiness]

    def __init__(self, sshd: RealSshd, clock: FakeClock) -> None:
        super().__init__(ProviderHttp("vastai", "http://127.0.0.1:9", {}, clock=clock), "abcd1234")
        self.sshd = sshd
        self.readiness = Readiness(sshd.user, 0, probe_dpkg_and_smi=False)  # type: ignore[misc]

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {}

    async def get(self, instance_id: str) -> InstanceStatus | None:
        return InstanceStatus(
            provider="vastai",
            instance_id=instance_id,
            state="running",
            running=True,
            ssh_host=self.sshd.host,
            ssh_port=self.sshd.port,
        )

    async def list_offers(self, query: OfferQuery | None = None) -> list[Offer]:
        return []

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        raise AssertionError("not rented here")

    async def list_ours(self) -> list[InstanceStatus]:
        return []

    async def destroy(self, instance_id: str) -> None:
        self.destroyed = instance_id

    async def check(self) -> None:
        return None


@dataclass
class Rig:
    lifecycle: Lifecycle
    provider: NodeAtSshd
    store: Store
    clock: FakeClock
    sshd: RealSshd
    keys_dir: Path

    async def provisioning(self, offer: Offer, host_key: str | None = None) -> str:
        session = make_session(
            self.clock.now(),
            self.store.install_id,
            offer=offer,
            status=SessionStatus.PROVISIONING,
            instance=InstanceState.LIVE,
            instance_id="4242",
            ssh_user=self.sshd.user,
            host_key=host_key,
        )
        key_path = self.keys_dir / session.id
        self.sshd.authorize(create_key_pair(key_path, session.label))
        await self.store.insert_session(session.model_copy(update={"key_path": str(key_path)}))
        return session.id


@pytest.fixture
async def rig(real_sshd: RealSshd, settings: Settings, store: Store) -> AsyncIterator[Rig]:
    clock = FakeClock()
    provider = NodeAtSshd(real_sshd, clock)
    providers: dict[str, Provider | None] = {"vastai": provider}
    events = EventBus(store, clock)
    # The node is this very machine: its own watchdog must never be armed here, since its
    # deadline (on the fake clock, long past) would power the machine running the tests off.
    settings = settings.model_copy(update={"node_watchdog": False})
    lifecycle = Lifecycle(
        settings=settings,
        store=store,
        providers=providers,
        inventory=Inventory(providers, clock=clock, store=store),
        events=events,
        clock=clock,
        keys_dir=settings.paths.keys_dir,
    )
    yield Rig(lifecycle, provider, store, clock, real_sshd, settings.paths.keys_dir)
    await lifecycle.aclose()


async def test_readiness_reaches_real_sshd_pins_its_key_and_checks_the_gpu(rig: Rig) -> None:
    offer = make_offer(rig.clock.now(), gpu_name="RTX 4090", vram_gb=24, cuda=12.4)
    session_id = await rig.provisioning(offer)
    step = await rig.lifecycle.step(await rig.lifecycle.get(session_id))
    assert step is None, rig.sshd.log()
    ready = await rig.lifecycle.get(session_id)
    assert ready.status == SessionStatus.RUNNING
    assert ready.host_key == rig.sshd.host_key
    assert (ready.ssh_host, ready.ssh_port) == (rig.sshd.host, rig.sshd.port)
    known = rig.lifecycle.known_hosts_path(session_id).read_text()
    assert f"[{rig.sshd.host}]:{rig.sshd.port} {rig.sshd.host_key}" in known


async def test_a_real_node_with_the_wrong_gpu_fails_and_is_destroyed(rig: Rig) -> None:
    offer = make_offer(rig.clock.now(), gpu_name="H100 SXM", vram_gb=80, cuda=12.4)
    session_id = await rig.provisioning(offer)
    await rig.lifecycle.step(await rig.lifecycle.get(session_id))
    failed = await rig.lifecycle.get(session_id)
    assert failed.status == SessionStatus.FAILED
    assert "NVIDIA GeForce RTX 4090" in (failed.error or "")
    await rig.lifecycle.step(failed)
    assert rig.provider.destroyed == "4242"


async def test_a_real_node_presenting_another_host_key_is_refused(rig: Rig) -> None:
    offer = make_offer(rig.clock.now(), gpu_name="RTX 4090", vram_gb=24, cuda=12.4)
    impostor = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJvkn0zmQqh3Y6cRr8M7oTg1wqUzV3cS2b3Mq3o3Xy1p"
    session_id = await rig.provisioning(offer, host_key=impostor)
    await rig.lifecycle.step(await rig.lifecycle.get(session_id))
    refused = await rig.lifecycle.get(session_id)
    assert refused.status == SessionStatus.FAILED
    assert "refusing the node" in (refused.error or "")
