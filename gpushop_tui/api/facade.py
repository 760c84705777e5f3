"""API routes for a remote façade (`gpushop --remote URL`): the core's own calls, as data.

`GET /api/v1/facade` answers the synchronous members a remote façade needs up front (a
`Snapshot`); `POST /api/v1/facade/{member}` calls one member of `REMOTE_CALLS` with the body's
arguments and answers `{"result": ...}`, each read and written by the types `Facade` declares, so
a remote `Shopper` gets the very models and views the local one returns. A core error keeps its
status and type word, and adds `error_class` (its class name) so the client raises the same one.

A scoped token gets what the public routes give it: its own consumer's sessions, costs, audit
and budgets only (another consumer's session is 404 as if absent, even by a prefix of its id),
and no operator calls. The arguments are bounded as the public routes bound them (`BOUNDS` in
core/facade.py) and a missing one is 422 naming it; a member that is not remote is 404
`unknown_member`, which a client tells from an absent session. These routes are the façade's
wire, not a public API: they follow the core's models, so they stay out of the OpenAPI
document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from gpushop_tui.api.deps import (
    ApiError,
    CallerDep,
    ShopperDep,
    answer_for,
    api_router,
    asked_by,
    details,
    not_found,
    visible_session,
)
from gpushop_tui.api.tokens import Principal
from gpushop_tui.core import (
    REMOTE_CALLS,
    Billing,
    QueryError,
    SessionNotFound,
    Shopper,
    Snapshot,
    Usage,
    call_types,
)
from gpushop_tui.errors import UserError
from gpushop_tui.models import Budget, ProvisionRequest, Session, problem_field, validation_problem

router = api_router(tags=["facade"])

Arguments = dict[str, Any]
Guard = Callable[[Shopper, Principal, Arguments], Awaitable[None]]

OPERATOR_ONLY = frozenset(
    {"check_providers", "reconcile_once", "cleanup_orphans", "set_budget", "delete_budget"}
)
"""Members only the operator's token may call."""
SESSION_BOUND = frozenset(
    {"session", "session_view", "done", "delete", "touch", "wait_settled", "extend"}
)
"""Members whose `session_id` a scoped token must be allowed to see."""
CONSUMER_SCOPED = frozenset({"sessions", "session_views", "audit_log", "cost_report"})
"""Members whose `consumer` a scoped token fixes to its own."""


async def _may_see(shopper: Shopper, caller: Principal, given: str) -> None:
    """`visible_session`, and for a scoped token a prefix of several ids refused without naming
    them (they may be another consumer's)."""
    try:
        await visible_session(shopper, caller, given)
    except UserError as err:
        if caller.consumer is None or isinstance(err, SessionNotFound):
            raise
        raise ApiError(
            400,
            "bad_request",
            f"{given!r} is the start of more than one session id; give more of it",
            field="session_id",
        ) from None


async def _session_bound(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    await _may_see(shopper, caller, str(args["session_id"]))


async def _session_id(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    """The full id only of a session this caller may see, so a prefix tells a scoped token
    nothing of another consumer's ids."""
    await _may_see(shopper, caller, str(args["given"]))


async def _power(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    """Stop and start: visible, and a scoped token's audit line names its consumer."""
    await _session_bound(shopper, caller, args)
    if caller.consumer is not None:
        args["by"] = asked_by(caller)


async def _consumer_scoped(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    asked = args.get("consumer")
    if asked is not None and not caller.may_see(asked):
        raise ApiError(403, "forbidden", f"this token is limited to consumer {caller.consumer}")
    args["consumer"] = caller.consumer if caller.consumer is not None else asked
    if args.get("session_id") is not None:
        await _may_see(shopper, caller, str(args["session_id"]))


async def _view_of(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    session: Session = args["session"]
    if not caller.may_see(session.consumer):
        raise not_found(session.id)
    await _may_see(shopper, caller, session.id)


async def _rent(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    request: ProvisionRequest = args["request"]
    if not caller.may_see(request.consumer):
        raise ApiError(
            403, "forbidden", f"this token may rent only for consumer {caller.consumer!r}"
        )


async def _preview(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    if not caller.may_see(str(args.get("consumer", ""))):
        raise ApiError(403, "forbidden", f"this token is limited to consumer {caller.consumer}")


async def _operator(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    if caller.consumer is not None:
        raise ApiError(403, "forbidden", "only the operator's token may do this")


async def _anyone(shopper: Shopper, caller: Principal, args: Arguments) -> None:
    """Offers, benchmarks and the supervisor lease are the same for every token."""


def _guard(member: str) -> Guard:
    """What `member` checks (and fixes) in its arguments before the call."""
    special: dict[str, Guard] = {
        "stop": _power,
        "start": _power,
        "view_of": _view_of,
        "session_id": _session_id,
        "rent": _rent,
        "preview_budgets": _preview,
    }
    if member in special:
        return special[member]
    if member in OPERATOR_ONLY:
        return _operator
    if member in SESSION_BOUND:
        return _session_bound
    if member in CONSUMER_SCOPED:
        return _consumer_scoped
    return _anyone


def _owner(item: object) -> str | bool | None:
    """Whose consumer a listed item is (None: global); False for items owned by nobody."""
    if isinstance(item, Billing):
        return item.session.consumer
    if isinstance(item, Usage):
        return item.budget.consumer
    if isinstance(item, Budget):
        return item.consumer
    return False


def _visible(caller: Principal, result: Any) -> Any:
    """A scoped token's share of an answer that lists every consumer's billing or budgets."""
    if caller.consumer is None or not isinstance(result, list):
        return result
    return [item for item in result if _owner(item) in (False, caller.consumer)]


def core_error(exc: UserError) -> ApiError:
    """A core error as the API answers it, with its class (and a query fault's place) so a
    remote façade raises the same one."""
    status, type_, extra = answer_for(exc)
    more: dict[str, Any] = {"error_class": type(exc).__name__}
    if isinstance(exc, QueryError):
        more["query"] = {"text": exc.text, "start": exc.start, "end": exc.end, "reason": exc.reason}
    return ApiError(status, type_, exc.message, **extra, **details(exc), **more)


@router.get("/facade", include_in_schema=False)
async def snapshot(shopper: ShopperDep) -> JSONResponse:
    """What the façade's synchronous members answer now (providers, budgets, reports)."""
    return JSONResponse(Snapshot.of(shopper).model_dump(mode="json"))


async def _arguments(request: Request, member: str) -> Arguments:
    """The body's arguments of `member`, each read by its declared and bounded type, every
    required one given (else 422 naming it)."""
    types = call_types(member)
    params = types.params
    try:
        body = await request.json() if await request.body() else {}
    except ValueError:
        raise ApiError(400, "bad_request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_body", "the body must be an object of arguments")
    unknown = sorted(set(body) - set(params))
    if unknown:
        raise ApiError(422, "invalid_body", f"{member} takes no {unknown[0]!r}", field=unknown[0])
    args: Arguments = {}
    for name, value in body.items():
        try:
            args[name] = params[name].validate_python(value)
        except ValidationError as err:
            where = ".".join(filter(None, (name, problem_field(err))))
            raise ApiError(
                422, "invalid_body", f"{name}: {validation_problem(err)}", field=where
            ) from None
    missing = [name for name in types.required if name not in args]
    if missing:
        raise ApiError(
            422, "invalid_body", f"{member} needs {missing[0]!r}; give it", field=missing[0]
        )
    return args


@router.post("/facade/{member}", include_in_schema=False)
async def call(
    member: str, request: Request, shopper: ShopperDep, caller: CallerDep
) -> JSONResponse:
    """One façade call; 404 `unknown_member` for a member that is not remote."""
    if member not in REMOTE_CALLS:
        raise ApiError(404, "unknown_member", f"the façade has no remote member {member!r}")
    args = await _arguments(request, member)
    await _guard(member)(shopper, caller, args)
    try:
        result = await getattr(shopper, member)(**args)
    except UserError as exc:
        raise core_error(exc) from None
    answer = call_types(member).result.dump_python(_visible(caller, result), mode="json")
    return JSONResponse({"result": answer})


def install(app: FastAPI) -> None:
    """Add this module's routes to `app`."""
    app.include_router(router)
