"""Workloads: from a checked node to a model server that answers (issue 19, DESIGN.md §3).

A session with a workload stays provisioning after its node passed the spec check: gpushop
launches the workload over SSH (node/workloads.py writes the launcher and its spec), then reads
its phase and its health (HTTP through an SSH channel to the node's loopback port) until it
answers, within the kind's budget. Healthy, the session runs and carries its endpoint; never
healthy, or reported failed, the session fails and its instance is destroyed. Each endpoint has
its own token, kept beside the session's SSH key (0600) and written to the node only.

A vLLM workload where the provider runs images is also published: the create asks the provider
to publish its port, the server listens on every address, and once it answers the session
carries `endpoint_public` on the provider's public address. vLLM refuses a request without the
token; Ollama and custom servers guard nothing, so they are reached through the tunnel only.

A stopped session started again launches its workload again (the processes died with the
instance; the model stays on the kept disk) and waits for its health the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from gpushop_tui.core.benchmarks import MEASURED_SOURCE, Benchmarks
from gpushop_tui.core.rows import SETTING_UP, SessionRows, Step, ready_changes
from gpushop_tui.core.teardown import Teardown
from gpushop_tui.models import (
    SERVES_MODEL,
    Benchmark,
    InstanceStatus,
    Session,
    SessionStatus,
    WorkloadSpec,
)
from gpushop_tui.node import workloads as node_workloads
from gpushop_tui.node.ssh import NodeAddress, NodeError, connect

HEALTHY_WITHIN = {"vllm": timedelta(minutes=15), "llm": timedelta(minutes=12)}
"""How long a preset may take from launch to answering (prior-art §4.1: image pulls and model
loads); other workloads get `CUSTOM_HEALTHY_WITHIN`."""
CUSTOM_HEALTHY_WITHIN = timedelta(minutes=10)
VLLM_IMAGE = "vllm/vllm-openai:latest"
"""The image a vLLM workload runs where the provider runs images (vLLM is installed there)."""
POLL_S = (1.0, 15.0)
POLL_FRACTION = 0.25
"""Between checks, a quarter of the time since launch (1 to 15 s): a fast load is seen at once."""
TOKEN_BYTES = 32
BENCHMARK_TOKENS = 256
BENCHMARK_TIMEOUT_S = 50.0
"""The measurement on the node: a few hundred tokens at concurrency 1, within a minute."""


def image_for(spec: WorkloadSpec, runs_images: bool) -> str | None:
    """The image a create names for `spec` (None: the provider's default), where images run."""
    if not runs_images:
        return None
    if spec.image is not None:
        return spec.image
    return VLLM_IMAGE if spec.kind == "vllm" else None


def server_port(spec: WorkloadSpec) -> int | None:
    """The node port the workload's server listens on, if it has one."""
    return launch_of(spec).port if spec.serves else None


def endpoint_url(
    spec: WorkloadSpec, host: str = "127.0.0.1", port: int | None = None
) -> str | None:
    """The base URL of the workload's API on `host` (the node's loopback unless a tunnel's),
    `/v1` for the OpenAI-compatible presets."""
    node_port = server_port(spec)
    if node_port is None:
        return None
    suffix = "/v1" if spec.kind in SERVES_MODEL else ""
    return f"http://{host}:{port or node_port}{suffix}"


def published(spec: WorkloadSpec, runs_images: bool) -> bool:
    """Whether the workload's port is published on the provider's public address: vLLM only
    (it refuses a request without the token), where the provider runs images (Vast publishes
    a container's ports on request; a VM provider is never asked)."""
    return runs_images and spec.kind == "vllm"


def public_ports(spec: WorkloadSpec | None, runs_images: bool) -> tuple[int, ...]:
    """The node ports a create asks the provider to publish (none for an SSH-only rental)."""
    if spec is None or not published(spec, runs_images):
        return ()
    port = server_port(spec)
    return () if port is None else (port,)


def public_url(spec: WorkloadSpec, status: InstanceStatus) -> str | None:
    """The workload's base URL where the provider says its port answers, if it publishes it."""
    port = server_port(spec)
    outside = status.ports.get(port) if port is not None else None
    if status.public_ip is None or outside is None:
        return None
    return endpoint_url(spec, host=status.public_ip, port=outside)


def launch_of(spec: WorkloadSpec, public: bool = False) -> node_workloads.WorkloadLaunch:
    """What the node's launcher is told to run (`public`: listening for a published port)."""
    assert spec.kind in ("llm", "vllm", "custom")
    return node_workloads.WorkloadLaunch(
        kind=spec.kind,
        model=spec.model,
        command=spec.command,
        env=dict(spec.env),
        ports=tuple(spec.ports),
        public=public,
    )


def healthy_within(spec: WorkloadSpec) -> timedelta:
    return HEALTHY_WITHIN.get(spec.kind, CUSTOM_HEALTHY_WITHIN)


class Workloads:
    """Launches a checked node's workload and follows it until it answers, or fails it."""

    def __init__(
        self,
        *,
        rows: SessionRows,
        teardown: Teardown,
        keys_dir: Path,
        address: Callable[[Session], NodeAddress],
        connect_timeout_s: float,
        benchmarks: Benchmarks,
    ) -> None:
        self.rows = rows
        self.benchmarks = benchmarks
        self.teardown = teardown
        self.keys_dir = keys_dir
        self.address = address
        self.connect_timeout_s = connect_timeout_s

    def token_path(self, session_id: str) -> Path:
        return self.keys_dir / f"{session_id}.token"

    def token(self, session_id: str) -> str:
        """The session's endpoint token, made on first use (0600, beside its SSH key)."""
        existing = self.read_token(session_id)
        if existing is not None:
            return existing
        path = self.token_path(session_id)
        value = secrets.token_urlsafe(TOKEN_BYTES)
        scratch = path.with_suffix(".token-new")
        scratch.touch(mode=0o600)
        scratch.write_text(value, encoding="utf-8")
        scratch.replace(path)
        return value

    def read_token(self, session_id: str) -> str | None:
        """The session's endpoint token as kept, or None (a reader never makes one)."""
        try:
            return self.token_path(session_id).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None

    def forget(self, session_id: str) -> None:
        """A closed session: its token goes with it."""
        with contextlib.suppress(FileNotFoundError):
            self.token_path(session_id).unlink()

    def _poll_wait(self, started: datetime) -> float:
        taken = (self.rows.clock.now() - started).total_seconds()
        least, most = POLL_S
        return min(most, max(least, taken * POLL_FRACTION))

    async def launch(self, session: Session, runs_images: bool) -> Step:
        """Start the workload on the checked node (once: the launcher ignores a second start);
        `runs_images`: the provider's, which decides whether the server listens publicly."""
        spec = session.workload_spec
        assert spec is not None
        token = await asyncio.to_thread(self.token, session.id)
        launch = launch_of(spec, public=published(spec, runs_images))
        try:
            conn = await connect(self.address(session), timeout_s=self.connect_timeout_s)
            async with conn:
                await node_workloads.launch(conn, launch, token)
        except NodeError as err:
            return Step(
                self._poll_wait(session.state_entered_at), f"starting the workload: {err.message}"
            )
        now = self.rows.clock.now()
        await self.rows.change(
            session.id,
            lambda s: (
                (
                    {"workload_started_at": now, "workload_phase": "starting"},
                    f"workload started: {_describe(spec)}",
                )
                if s.status in SETTING_UP and s.workload_started_at is None
                else None
            ),
        )
        return Step(POLL_S[0], f"workload started: {_describe(spec)}")

    async def overdue(self, session: Session) -> bool:
        """Fail a launched workload that has not answered within its kind's budget (counted
        from the launch, not from the instance's creation); True if it was failed."""
        spec = session.workload_spec
        started = session.workload_started_at
        assert spec is not None and started is not None
        if self.rows.clock.now() - started <= healthy_within(spec):
            return False
        minutes = healthy_within(spec).total_seconds() / 60
        await self.teardown.fail(
            session.id,
            f"the workload did not answer within {minutes:g} min "
            f"({session.workload_phase or 'not started'})",
            record_offer=spec.kind in SERVES_MODEL,
        )
        return True

    async def follow(
        self, session: Session, status: InstanceStatus, runs_images: bool
    ) -> Step | None:
        """One check of a launched workload: None once it answers (the session then runs, with
        its public endpoint where the provider publishes the port, read from `status`)."""
        spec = session.workload_spec
        started = session.workload_started_at
        assert spec is not None and started is not None
        token = await asyncio.to_thread(self.token, session.id)
        try:
            conn = await connect(self.address(session), timeout_s=self.connect_timeout_s)
            async with conn:
                phase = await node_workloads.read_phase(conn)
                health = await node_workloads.check_health(conn, launch_of(spec), token)
        except NodeError as err:
            return Step(self._poll_wait(started), f"workload: SSH: {err.message}")
        if phase is not None and phase.startswith("failed"):
            await self.teardown.fail(
                session.id, f"the workload {phase}", record_offer=spec.kind in SERVES_MODEL
            )
            return Step()
        if not health.healthy or phase != node_workloads.SERVING:
            shown = phase or "starting"
            await self._phase(session, shown)
            return Step(self._poll_wait(started), f"workload {shown}: {health.detail}")
        measured_once = session.status == SessionStatus.STARTING  # at its rental, not each start
        if spec.benchmark and spec.kind in SERVES_MODEL and not measured_once:
            await self._measure(session, spec, token)
        endpoint = endpoint_url(spec)
        public = public_url(spec, status) if published(spec, runs_images) else None
        ready = await self.rows.change(
            session.id,
            lambda s: (
                (
                    ready_changes(s, self.rows.clock.now())
                    | {"workload_phase": "healthy", "endpoint": endpoint}
                    | {"endpoint_public": public},
                    f"ready: the {spec.kind} workload answers"
                    + (f" ({spec.model})" if spec.model else "")
                    + (f", public at {public}" if public else ""),
                )
                if s.status in SETTING_UP
                else None
            ),
        )
        if ready is None or ready.status != SessionStatus.RUNNING:
            return Step()  # it was ended meanwhile (a `done` during the benchmark): go on with it
        return None

    async def _measure(self, session: Session, spec: WorkloadSpec, token: str) -> None:
        """Measure tokens/s on the very node, once, and keep it as a benchmark row; a failed
        measurement is noted and the session goes on (the endpoint answered)."""
        assert spec.model is not None
        await self._phase(session, "benchmarking")
        await self.rows.progress(session, "the workload answers; measuring tokens/s on the node")
        port = server_port(spec)
        assert port is not None
        try:
            conn = await connect(self.address(session), timeout_s=self.connect_timeout_s)
            async with conn, conn.forward(port) as local:
                measured = await node_workloads.measure(
                    f"http://127.0.0.1:{local}/v1",
                    spec.model,
                    token,
                    max_tokens=BENCHMARK_TOKENS,
                    timeout_s=BENCHMARK_TIMEOUT_S,
                )
        except NodeError as err:
            await self.rows.progress(session, f"benchmark skipped: {err.message}")
            return
        row = await self.benchmarks.record(
            Benchmark(
                gpu_name=session.offer.gpu_name,
                gpu_count=session.offer.gpu_count,
                model=spec.model.lower(),
                tokens_per_second=measured.tokens_per_second,
                runtime="ollama" if spec.kind == "llm" else "vllm",
                provider=session.provider,
                price_per_hour=session.price_per_hour,
                measured_at=self.rows.clock.now(),
                source=MEASURED_SOURCE,
                session_id=session.id,
                time_to_first_token_s=measured.time_to_first_token_s,
            )
        )
        await self.rows.progress(
            session,
            f"benchmark: {row.tokens_per_second:.1f} tokens/s, first token after "
            f"{measured.time_to_first_token_s:.2f} s ({measured.completion_tokens} tokens)",
        )

    async def _phase(self, session: Session, phase: str) -> None:
        """Record where the workload stands (the drive loop's note says it to subscribers)."""
        await self.rows.change(
            session.id,
            lambda s: (
                ({"workload_phase": phase}, f"workload: {phase}")
                if s.workload_phase != phase and s.status in SETTING_UP
                else None
            ),
        )


def _describe(spec: WorkloadSpec) -> str:
    """The workload in an audit line: the model, never a custom command (it may hold a
    secret the user passed to it)."""
    if spec.kind in SERVES_MODEL:
        return f"{spec.kind} serving {spec.model}"
    return "the custom command"
