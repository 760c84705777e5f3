"""Readiness: from a provider's running instance to a node we can use (DESIGN.md §3).

A session is ready when its node answers over SSH with the host key pinned on first contact,
and reports the hardware the offer promised, with the node's own deadline watchdog armed (or
its failure said loudly, core/watchdogs.py); a session with a workload, once that workload
answers too (core/workloads.py). Each check is one step; a node that is not ready
within the provider's budget, or is not what was promised, fails the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from gpushop_tui.config import Settings
from gpushop_tui.core.access import node_address
from gpushop_tui.core.benchmarks import Benchmarks
from gpushop_tui.core.rows import SETTING_UP, SessionRows, Step, ready_changes
from gpushop_tui.core.teardown import Teardown
from gpushop_tui.core.watchdogs import Watchdogs
from gpushop_tui.core.workloads import Workloads
from gpushop_tui.models import Offer, Session, SessionStatus
from gpushop_tui.node import keys as node_keys
from gpushop_tui.node import probes
from gpushop_tui.node.ssh import NodeAddress, NodeError, connect
from gpushop_tui.providers.base import Provider, ProviderError
from gpushop_tui.providers.gpus import gpu_matches

log = logging.getLogger(__name__)

SMI_RECHECK_S = 5.0
"""Providers that rebuild drivers at boot must answer `nvidia-smi` twice, this far apart."""
READY_POLL_S = (1.0, 15.0)
"""The shortest and the longest wait between readiness checks."""
READY_POLL_FRACTION = 0.25
"""Between checks, this share of the time the instance has taken so far (within
`READY_POLL_S`): a node is found ready at most a quarter (and 15 s) after it is, while a
slow boot is not polled every second."""
VRAM_TOLERANCE = 0.95
"""A card reports a little less memory than its marketing size (24564 MiB for "24 GB")."""


def spec_mismatch(offer: Offer, spec: probes.NodeSpec) -> str | None:
    """Why the node is not what the offer promised (GPU model, count, VRAM, CUDA), or None."""
    if not spec.gpus:
        return "the node reports no GPU"
    if len(spec.gpus) < offer.gpu_count:
        return f"the node has {len(spec.gpus)} GPUs, the offer promised {offer.gpu_count}"
    wrong = [g.name for g in spec.gpus if not gpu_matches(offer.gpu_name, g.name)]
    if wrong:
        return f"the node has {wrong[0]}, the offer promised {offer.gpu_name}"
    sizes = [g.memory_total_mib for g in spec.gpus if g.memory_total_mib is not None]
    if sizes and min(sizes) / 1024 < offer.vram_gb * VRAM_TOLERANCE:
        return (
            f"the node's GPUs have {min(sizes) / 1024:.1f} GB of memory, "
            f"the offer promised {offer.vram_gb:g} GB"
        )
    if spec.cuda is not None and offer.cuda is not None and spec.cuda + 1e-6 < offer.cuda:
        return f"the node supports CUDA {spec.cuda:g}, the offer promised {offer.cuda:g}"
    return None


class Readiness:
    """Checks a provisioning (or starting) session's instance and node until it is running,
    or fails it (a start goes back to stopped: `Teardown.fail`)."""

    def __init__(
        self,
        *,
        rows: SessionRows,
        providers: Mapping[str, Provider | None],
        settings: Settings,
        keys_dir: Path,
        teardown: Teardown,
        benchmarks: Benchmarks,
    ) -> None:
        self.rows = rows
        self.providers = providers
        self.settings = settings
        self.keys_dir = keys_dir
        self.teardown = teardown
        """Fails the session, or records its instance gone, when readiness finds that."""
        self.watchdogs = Watchdogs(
            rows=rows, providers=providers, settings=settings, address=self.address
        )
        self.workloads = Workloads(
            rows=rows,
            teardown=teardown,
            keys_dir=keys_dir,
            address=self.address,
            connect_timeout_s=settings.ssh_connect_timeout_s,
            benchmarks=benchmarks,
        )

    def budget(self, provider: str) -> timedelta:
        """How long a session of `provider` may take to become ready (DESIGN.md §3.7)."""
        seconds = self.settings.provider(provider).provision_budget_s
        return timedelta(seconds=seconds)

    def address(self, session: Session) -> NodeAddress:
        return node_address(session)

    def known_hosts_path(self, session_id: str) -> Path:
        return self.keys_dir / f"{session_id}.known_hosts"

    def forget(self, session_id: str) -> None:
        """A closed session: drop its pinned host key file and its endpoint token."""
        with contextlib.suppress(FileNotFoundError):
            self.known_hosts_path(session_id).unlink()
        self.workloads.forget(session_id)

    def _poll_wait(self, session: Session) -> float:
        """How long to wait before the next check: it follows how long the instance has been
        provisioning (since its id was committed), so a fast boot is seen at once."""
        taken = (self.rows.clock.now() - session.state_entered_at).total_seconds()
        least, most = READY_POLL_S
        return min(most, max(least, taken * READY_POLL_FRACTION))

    async def step(self, session: Session) -> Step | None:
        """One readiness check of a provisioning or starting session whose instance id is
        known (a starting one once its provider says running)."""
        adapter = self.providers.get(session.provider)
        if adapter is None:
            return Step(60.0, f"{session.provider} has no credential; cannot check the instance")
        now = self.rows.clock.now()
        budget = self.budget(session.provider)
        if session.workload_started_at is not None:  # the workload's own budget runs now
            if await self.workloads.overdue(session):
                return Step()
        elif now - session.state_entered_at > budget:
            last = self.rows.note(session.id) or "no answer"
            await self.teardown.fail(
                session.id,
                f"not ready after {budget.total_seconds() / 60:g} min ({last})",
                record_offer=True,
            )
            return Step()
        assert session.instance_id is not None
        try:
            status = await adapter.get(session.instance_id)
        except ProviderError as err:
            return Step(self._poll_wait(session), f"status call failed: {err.message}")
        if status is None:
            await self.teardown.instance_gone(session.id, "vanished while provisioning")
            return Step()
        if status.price_per_hour is not None and status.price_per_hour != session.price_per_hour:
            session = await self._charged(session.id, status.price_per_hour) or session
        if adapter.INFO.capabilities.provider_ttl:
            session = await self.teardown.ttls.observed(session, status.terminate_at)
        if not status.running or not status.ssh_host or not status.ssh_port:
            return Step(self._poll_wait(session), f"instance is {status.state}")
        if (status.ssh_host, status.ssh_port) != (session.ssh_host, session.ssh_port):
            host, port = status.ssh_host, status.ssh_port
            updated = await self.rows.change(
                session.id,
                lambda s: (
                    ({"ssh_host": host, "ssh_port": port}, f"SSH at {host}:{port}")
                    if (s.ssh_host, s.ssh_port) != (host, port)
                    else None
                ),
            )
            session = updated or session
        if session.workload_started_at is not None:  # the node was checked and launched
            runs_images = adapter.INFO.capabilities.runs_images
            return await self.workloads.follow(session, status, runs_images)
        boot_delay = adapter.readiness.initial_delay_s * self.settings.boot_delay_scale
        booted_from = (
            session.power_requested_at or session.instance_created_at or session.created_at
        )
        booting_until = booted_from + timedelta(seconds=boot_delay)
        try:
            spec = await self._probe(session, adapter)
        except NodeError as err:
            if err.kind == "host_key":
                await self.teardown.fail(session.id, f"refusing the node: {err.message}")
                return Step()
            if now < booting_until:  # the provider's boot time: the key may be on its way
                return Step(self._poll_wait(session), f"the node is booting; SSH: {err.message}")
            if err.kind == "auth":
                await self._attach_key_again(session, adapter)
            return Step(self._poll_wait(session), f"SSH: {err.message}")
        if isinstance(spec, str):
            return Step(self._poll_wait(session), spec)
        mismatch = spec_mismatch(session.offer, spec)
        if mismatch is not None:
            await self.teardown.fail(session.id, f"wrong hardware: {mismatch}", record_offer=True)
            return Step()
        if session.watchdog_deadline is None and session.watchdog_error is None:
            session = await self.watchdogs.arm(session)  # before the user gets the node
        if session.workload_spec is not None:
            return await self.workloads.launch(session, adapter.INFO.capabilities.runs_images)
        await self.rows.change(
            session.id,
            lambda s: (
                (
                    ready_changes(s, self.rows.clock.now()),
                    f"ready: {len(spec.gpus)}x {spec.gpus[0].name} at "
                    f"{s.ssh_user}@{s.ssh_host}:{s.ssh_port}",
                )
                if s.status in SETTING_UP
                else None
            ),
        )
        return None

    async def _charged(self, session_id: str, rate: float) -> Session | None:
        """Record the rate the provider says it charges, while the rental is being set up
        (the rate at rental time: a later change does not rewrite what was billed)."""
        return await self.rows.change(
            session_id,
            lambda s: (
                ({"price_per_hour": rate}, f"the provider charges ${rate:.4f}/h")
                if s.status == SessionStatus.PROVISIONING and s.price_per_hour != rate
                else None
            ),
        )

    async def _attach_key_again(self, session: Session, adapter: Provider) -> None:
        """The node refuses our key: attach it again, in case the create that attached it was
        cut off after the instance existed (a lost response never means a lost key)."""
        assert session.instance_id is not None and session.key_path is not None
        public = Path(session.key_path).with_suffix(".pub")
        try:
            key = await asyncio.to_thread(public.read_text)
            await adapter.attach_key(session.instance_id, key)
        except (OSError, ProviderError) as err:
            log.warning("session %s: attaching the key again failed: %s", session.id, err)

    async def _probe(self, session: Session, adapter: Provider) -> probes.NodeSpec | str:
        """SSH in, pin the host key, and read the hardware; a string says what is not ready."""
        conn = await connect(self.address(session), timeout_s=self.settings.ssh_connect_timeout_s)
        async with conn:
            if session.host_key is None:
                await self._pin(session, conn.host_key)
            if not await probes.echo_ok(conn):
                return "the node does not answer 'echo ok' yet"
            if not adapter.readiness.probe_dpkg_and_smi:
                return await probes.read_spec(conn)
            if await probes.dpkg_lock_free(conn) is False:
                return "the dpkg lock is held (drivers still installing)"
            await probes.read_spec(conn)
            if await self.rows.pause(session.id, SMI_RECHECK_S):
                return "the session changed while nvidia-smi was read a second time"
            return await probes.read_spec(conn)

    async def _pin(self, session: Session, host_key: str) -> None:
        assert session.ssh_host is not None and session.ssh_port is not None
        await self.rows.change(
            session.id,
            lambda s: (
                ({"host_key": host_key}, "host key pinned on first contact")
                if s.host_key is None
                else None
            ),
        )
        await asyncio.to_thread(
            node_keys.write_known_hosts,
            self.known_hosts_path(session.id),
            session.ssh_host,
            session.ssh_port,
            host_key,
        )
