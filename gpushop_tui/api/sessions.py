"""API routes: sessions (rent, list, read, key, stop, start, done, extend, delete, activity).

A scoped token sees and acts on its own consumer's sessions only: another consumer's session
answers 404 as if absent, and renting for another consumer is 403.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Body, FastAPI, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gpushop_tui.api.deps import (
    ApiError,
    CallerDep,
    ProviderQuery,
    ShopperDep,
    api_router,
    asked_by,
    checked,
    fields_named,
    known_provider,
    visible_session,
)
from gpushop_tui.api.schemas import (
    ActivityOut,
    CreatedSessionOut,
    CycleOut,
    ExtendedOut,
    SessionActionOut,
    SessionEndpointOut,
    SessionKeyOut,
    SessionListOut,
    SessionOut,
    error_responses,
    offer_id,
)
from gpushop_tui.core import SessionView, Shopper
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    ConsumerId,
    ExtendRequest,
    IdleAction,
    IdleMinutes,
    KeepDays,
    ProvisionRequest,
    RequestId,
    ReservationHours,
    SessionStatus,
    StoragePolicy,
    Workload,
)

router = api_router(tags=["sessions"])
SessionId = Annotated[str, Path(description="The session id, e.g. 'k3x9q2ab'.")]
STORAGE = {
    "destroy": StoragePolicy.DESTROY,
    "keep": StoragePolicy.KEEP,
    "preserve": StoragePolicy.KEEP,  # the earlier API's word for keep
}
RENTAL_FIELDS = {
    "consumer": "consumer_id",
    "hours": "reservation_hours",
    "idle_timeout_min": "idle_threshold_minutes",
    "storage": "storage_policy",
    "workload": "workload_type",
    "workload.kind": "workload_type",
    "workload.model": "model_id",
    "workload.image": "docker_image",
    "workload.command": "on_start_cmd",
    "workload.env": "env",
    "workload.ports": "exposed_ports",
    "workload.benchmark": "benchmark",
    "image": "docker_image",
}
"""`ProvisionRequest` fields (and core errors' `field`) by the body field a client sent."""
EARLIER_WORKLOADS = {"ssh": "interactive", "llm_vllm": "vllm"}
"""The earlier API's workload names that map onto ours."""
EXTEND_FIELDS = {"hours": "additional_hours"}
"""`ExtendRequest` fields (and core errors' `field`) by the body field a client sent."""


class CreateSessionIn(BaseModel):
    """A rental: the earlier API's keys plus `query`, workloads and key return.

    Unknown keys are refused (422 naming them): a key gpushop cannot honour is never dropped.
    Bounds come from the one rule set (`ProvisionRequest` and `WorkloadSpec`,
    gpushop_tui.models), which also checks what this body leaves open (exactly one of
    `offer_id` and `query`; a model for llm and vllm, a command for custom).
    """

    model_config = ConfigDict(extra="forbid")

    consumer_id: ConsumerId | None = Field(
        default=None, description="Defaults to a scoped token's consumer."
    )
    offer_id: str | None = Field(default=None, description="'vastai:123' or 'vastai-123'.")
    query: str | None = Field(default=None, description="Query language; best match.")
    workload_type: Workload | Literal["ssh", "llm_vllm"] = Field(
        default="interactive",
        description="interactive (SSH only; the earlier 'ssh'), llm (Ollama), vllm (the earlier "
        "'llm_vllm') or custom.",
    )
    model_id: str | None = Field(default=None, description="The model llm or vllm serves.")
    docker_image: str | None = Field(
        default=None, description="custom or vllm: the image (providers that run images)."
    )
    on_start_cmd: str | None = Field(default=None, description="custom: the start command.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="The server's environment (llm, vllm, custom): HF_TOKEN for a gated model.",
    )
    exposed_ports: list[int] = Field(
        default_factory=list, description="custom: ports it listens on (the first is checked)."
    )
    benchmark: bool = Field(
        default=True, description="Measure tokens/s on the node once the model answers."
    )
    reservation_hours: ReservationHours | None = None
    idle_threshold_minutes: IdleMinutes | None = None
    storage_policy: Literal["destroy", "keep", "preserve"] = "destroy"
    idle_action: IdleAction = Field(
        default=IdleAction.DESTROY,
        description="What an idle stop does: destroy the instance, or stop it and keep its disk.",
    )
    keep_days: KeepDays | None = Field(
        default=None, description="Days a stopped disk is kept (default: the keep_days setting)."
    )
    request_id: RequestId | None = None
    return_private_key: bool = False
    disk_gb: float | None = None


class ExtendIn(BaseModel):
    additional_hours: ReservationHours


class StopIn(BaseModel):
    """A stop that keeps the disk; unknown keys are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    keep_days: KeepDays | None = Field(
        default=None,
        description="Days the disk is kept before it is destroyed (default: as it was).",
    )


class StartIn(BaseModel):
    """A start of a stopped session; unknown keys are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    hours: ReservationHours | None = Field(
        default=None, description="The new reservation (default: the session's own length)."
    )


def session_out(view: SessionView, now: datetime) -> SessionOut:
    """The client's view of a session, with its cost at `now` and its ssh command line."""
    session = view.session
    return SessionOut(
        id=session.id,
        consumer_id=session.consumer,
        provider=session.provider,
        offer_id=session.offer_id,
        gpu_type=session.offer.gpu_name,
        gpu_count=session.offer.gpu_count,
        status=session.status,
        status_words=view.status_words,
        instance_id=session.instance_id,
        instance_state=session.instance,
        error=session.error,
        ssh_host=session.ssh_host,
        ssh_port=session.ssh_port,
        ssh_user=session.ssh_user,
        ssh_command=view.ssh_command,
        workload_type=session.workload,
        model_id=session.workload_spec.model if session.workload_spec else None,
        workload_phase=session.workload_phase,
        endpoint=session.endpoint,
        endpoint_public=session.endpoint_public,
        reservation_hours=session.reservation_hours,
        idle_threshold_minutes=session.idle_timeout_min,
        idle_reason=session.idle_reason,
        last_busy_at=session.last_busy_at,
        storage_policy=session.storage_policy,
        idle_action=session.idle_action,
        keep_days=session.keep_days,
        keep_until=view.keep_until,
        disk_usd_per_day=(
            round(view.disk_usd_per_day, 6) if view.disk_usd_per_day is not None else None
        ),
        price_per_hour=session.price_per_hour,
        cost_usd=round(view.cost_at(now), 6),
        cycles=[
            CycleOut(
                kind=stretch.kind,
                started_at=stretch.started_at,
                ended_at=stretch.ended_at,
                rate_per_hour=stretch.rate_per_hour,
                hours=round(stretch.hours, 6),
                cost=round(stretch.cost, 6),
            )
            for stretch in view.cycles(now)
        ],
        created_at=session.created_at,
        expires_at=session.expires_at,
        hard_max_at=session.hard_max_at,
        stopped_at=session.stopped_at,
        kill_paths=view.kill_paths,
        watchdog_deadline=session.watchdog_deadline,
        watchdog_error=session.watchdog_error,
    )


async def _private_key(shopper: Shopper, session_id: str) -> str | None:
    """The session's private key, or None once it is removed (the session closed)."""
    try:
        path = await shopper.key_path(session_id)
        return await asyncio.to_thread(path.read_text, encoding="utf-8")
    except (UserError, FileNotFoundError):
        return None


def _provision_request(body: CreateSessionIn, consumer: str, shopper: Shopper) -> ProvisionRequest:
    hours = body.reservation_hours
    return checked(
        ProvisionRequest,
        RENTAL_FIELDS,
        consumer=consumer,
        offer_id=(
            offer_id(body.offer_id, shopper.provider_names()) if body.offer_id is not None else None
        ),
        query=body.query,
        hours=shopper.settings.default_reservation_hours if hours is None else hours,
        workload={
            "kind": EARLIER_WORKLOADS.get(body.workload_type, body.workload_type),
            "model": body.model_id,
            "image": body.docker_image,
            "command": body.on_start_cmd,
            "env": body.env,
            "ports": body.exposed_ports,
            "benchmark": body.benchmark,
        },
        idle_timeout_min=body.idle_threshold_minutes,
        idle_action=body.idle_action,
        keep_days=body.keep_days,
        storage=STORAGE[body.storage_policy],
        request_id=body.request_id,
        disk_gb=body.disk_gb,
    )


@router.post(
    "/sessions",
    status_code=201,
    responses={
        200: {"model": CreatedSessionOut, "description": "the session of a repeated request_id"},
        **error_responses(400, 403, 404, 409, 422, 429, 503),
    },
)
async def create_session(
    shopper: ShopperDep, caller: CallerDep, body: CreateSessionIn, response: Response
) -> CreatedSessionOut:
    """Rent an offer (or the best match of `query`); answers once the provider has the order.

    The same `request_id` answers with the same session: 201 the first time, 200 after; one
    already used for another consumer's session is 409.
    """
    consumer = body.consumer_id or caller.consumer
    if consumer is None:
        raise ApiError(422, "invalid_body", "consumer_id: required", field="consumer_id")
    if not caller.may_see(consumer):
        raise ApiError(
            403, "forbidden", f"this token may rent only for consumer {caller.consumer!r}"
        )
    request = _provision_request(body, consumer, shopper)
    with fields_named(RENTAL_FIELDS):
        rental = await shopper.rent(request)
    if not rental.created:
        response.status_code = 200
    session = rental.session
    key = await _private_key(shopper, session.id) if body.return_private_key else None
    return CreatedSessionOut(
        session=session_out(await shopper.view_of(session), shopper.now()),
        ssh_private_key=key,
        key_path=None if session.closed else session.key_path,
    )


@router.get("/sessions", responses=error_responses(400, 403))
async def list_sessions(
    shopper: ShopperDep,
    caller: CallerDep,
    consumer_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: SessionStatus | None = None,
    provider: ProviderQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> SessionListOut:
    """Sessions, newest first; a scoped token's own consumer's unless it names itself."""
    consumer = consumer_id or caller.consumer
    if consumer is not None and not caller.may_see(consumer):
        raise ApiError(403, "forbidden", f"this token may list only consumer {caller.consumer!r}")
    found = await shopper.session_views(
        consumer=consumer,
        status=status,
        provider=known_provider(shopper, provider),
        limit=limit,
    )
    now = shopper.now()
    shown = [session_out(view, now) for view in found]
    return SessionListOut(sessions=shown, count=len(shown))


@router.get("/sessions/{session_id}", responses=error_responses(404))
async def get_session(shopper: ShopperDep, caller: CallerDep, session_id: SessionId) -> SessionOut:
    """One session (never its private key)."""
    view = await shopper.view_of(await visible_session(shopper, caller, session_id))
    return session_out(view, shopper.now())


@router.get("/sessions/{session_id}/key", responses=error_responses(404))
async def session_key(
    shopper: ShopperDep, caller: CallerDep, session_id: SessionId
) -> SessionKeyOut:
    """The session's SSH private key, while the session is not closed."""
    await visible_session(shopper, caller, session_id)
    key = await _private_key(shopper, session_id)
    if key is None:
        raise ApiError(404, "not_found", f"session {session_id} has no key any more (it is closed)")
    return SessionKeyOut(session_id=session_id, ssh_private_key=key)


@router.get("/sessions/{session_id}/endpoint", responses=error_responses(404))
async def session_endpoint(
    shopper: ShopperDep, caller: CallerDep, session_id: SessionId
) -> SessionEndpointOut:
    """The session's model endpoint and its token, once its workload answers (a 400 says why
    not yet); the endpoint listens on the node's loopback, reached by an SSH tunnel."""
    session = await visible_session(shopper, caller, session_id)
    endpoint = await shopper.endpoint(session.id)
    return SessionEndpointOut(
        session_id=session.id,
        endpoint=endpoint.url,
        token=endpoint.token,
        endpoint_public=endpoint.public_url,
        tunnel_command=f"gpushop sessions tunnel {session.id}",
    )


@router.post(
    "/sessions/{session_id}/stop",
    status_code=202,
    responses=error_responses(400, 404, 409, 422),
)
async def stop_session(
    shopper: ShopperDep,
    caller: CallerDep,
    session_id: SessionId,
    body: Annotated[StopIn | None, Body()] = None,
) -> SessionOut:
    """Power a running session off, keeping its disk: its GPU stops billing, its disk bills
    until it is started again, ended, or its keep days run out. Answers once the stop is under
    way (status `stopping`); 400 (hint `cannot_stop`) where the provider cannot stop."""
    session = await visible_session(shopper, caller, session_id)
    asked = body or StopIn()
    stopping = await shopper.stop(session.id, by=asked_by(caller), keep_days=asked.keep_days)
    return session_out(await shopper.view_of(stopping), shopper.now())


@router.post(
    "/sessions/{session_id}/start",
    status_code=202,
    responses=error_responses(400, 404, 409, 422),
)
async def start_session(
    shopper: ShopperDep,
    caller: CallerDep,
    session_id: SessionId,
    body: Annotated[StartIn | None, Body()] = None,
) -> SessionOut:
    """Power a stopped session on again on its kept disk, for a new reservation and a hard max
    counted from now. Answers at once (status `starting`); poll until `running`, or until
    `stopped` again with `error` saying why the start did not succeed."""
    session = await visible_session(shopper, caller, session_id)
    asked = body or StartIn()
    starting = await shopper.start(session.id, by=asked_by(caller), hours=asked.hours)
    return session_out(await shopper.view_of(starting), shopper.now())


@router.post(
    "/sessions/{session_id}/done",
    status_code=202,
    responses=error_responses(404, 409),
)
async def session_done(
    shopper: ShopperDep, caller: CallerDep, session_id: SessionId
) -> SessionActionOut:
    """End gracefully (destroy, or stop and keep the disk where the storage policy is keep; a
    stopped session's kept disk is destroyed); the teardown goes on after."""
    before = await visible_session(shopper, caller, session_id)
    if before.status.terminal or before.status == SessionStatus.STOPPING:
        raise ApiError(409, "conflict", f"session {session_id} is already {before.status}")
    session = await shopper.done(session_id)
    return SessionActionOut(
        message="session shutdown initiated", session_id=session.id, status=session.status
    )


@router.delete(
    "/sessions/{session_id}",
    status_code=202,
    responses=error_responses(404),
)
async def delete_session(
    shopper: ShopperDep, caller: CallerDep, session_id: SessionId
) -> SessionActionOut:
    """Destroy the instance whatever the storage policy; harmless on a closed session."""
    await visible_session(shopper, caller, session_id)
    session = await shopper.delete(session_id)
    message = "session already closed" if session.closed else "session destroy initiated"
    return SessionActionOut(message=message, session_id=session.id, status=session.status)


@router.post("/sessions/{session_id}/extend", responses=error_responses(400, 404, 409, 422))
async def extend_session(
    shopper: ShopperDep, caller: CallerDep, session_id: SessionId, body: ExtendIn
) -> ExtendedOut:
    """Push the reservation out by `additional_hours`; never past the hard max."""
    await visible_session(shopper, caller, session_id)
    request = checked(ExtendRequest, EXTEND_FIELDS, hours=body.additional_hours)
    with fields_named(EXTEND_FIELDS):
        session = await shopper.extend(session_id, request.hours, request.override_reason)
    return ExtendedOut(
        message=f"extended by {request.hours:g} h",
        session_id=session.id,
        new_expires_at=session.expires_at,
    )


@router.post("/sessions/{session_id}/activity", responses=error_responses(404, 409))
async def session_activity(
    shopper: ShopperDep, caller: CallerDep, session_id: SessionId
) -> ActivityOut:
    """Record activity: a running session is busy now, so not stopped for idleness."""
    before = await visible_session(shopper, caller, session_id)
    if before.status != SessionStatus.RUNNING:
        raise ApiError(
            409, "conflict", f"session {session_id} is {before.status}; only a running one is idle"
        )
    session = await shopper.touch(session_id)
    return ActivityOut(session_id=session.id, last_busy_at=session.last_busy_at)


def install(app: FastAPI) -> None:
    """Add this module's routes to `app`."""
    app.include_router(router)
