"""What the app and every router share: the error type, the state, and the request dependencies.

Routers and `api/app.py` both import from here and never from each other, so the package's
imports stay one-way (`app` -> routers -> `deps`). Also here: how a core error or a rule-set
`ValidationError` is worded for a client (its input named by the body field the client sent),
and the one visibility check of a session (absent and not yours are the same 404).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from gpushop_tui.api.tokens import Principal, TokenBook
from gpushop_tui.core import (
    BudgetRefused,
    NotConfigured,
    SessionConflict,
    SessionNotFound,
    Shopper,
    StaleOffer,
    UnknownModel,
)
from gpushop_tui.errors import DatabaseUnavailable, Hint, UserError
from gpushop_tui.models import Session, problem_field, validation_problem

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An error answered as JSON: HTTP status, a type word, one sentence, and extra fields."""

    def __init__(self, status: int, type_: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.extra = extra


@dataclass
class ApiState:
    """What the routes reach through `request.app.state.api`."""

    shopper: Shopper
    tokens: TokenBook
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once startup recovery (the first supervisor pass) is done."""


def state(request: Request) -> ApiState:
    """The app's `ApiState`."""
    api: ApiState = request.app.state.api
    return api


def shopper_of(request: Request) -> Shopper:
    """The `Shopper` the app serves."""
    return state(request).shopper


BEARER = HTTPBearer(
    scheme_name="bearer",
    description="A token from 'gpushop serve-token': the operator's, or one consumer's.",
    auto_error=False,
)
"""The bearer scheme: read the header, and declare the scheme in the OpenAPI document."""


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Principal:
    """The caller, from `Authorization: Bearer <token>`; 401 without a valid one."""
    presented = credentials.credentials.strip() if credentials is not None else ""
    if not presented:
        raise ApiError(
            401, "unauthorized", "send 'Authorization: Bearer <token>' (see 'gpushop serve-token')"
        )
    who = state(request).tokens.principal(presented)
    if who is None:
        raise ApiError(
            401, "unauthorized", "the bearer token is not valid (see 'gpushop serve-token')"
        )
    return who


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route (or dependency) takes, its dependencies' included."""
    names = frozenset(param.alias for param in dependant.query_params)
    return names.union(*(_query_names(sub) for sub in dependant.dependencies))


async def known_query(request: Request) -> None:
    """Refuse (400) query parameters the route does not take, naming them: none is ignored."""
    route: APIRoute = request.scope["route"]
    taken = _query_names(route.dependant)
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        offered = ", ".join(sorted(taken)) or "none"
        raise ApiError(
            400,
            "bad_request",
            f"unknown query parameter {names}; this route takes: {offered}",
            field=unknown[0],
        )


KNOWN_QUERY = Depends(known_query)
"""Every route's dependency: no query parameter goes unread."""


def api_router(*, tags: list[str]) -> APIRouter:
    """A router under /api/v1 whose every route needs the bearer token and refuses unknown
    query parameters (after the token is checked)."""
    return APIRouter(
        prefix="/api/v1", tags=list(tags), dependencies=[Depends(principal), KNOWN_QUERY]
    )


ShopperDep = Annotated[Shopper, Depends(shopper_of)]
"""A route parameter `shopper: ShopperDep` receives the app's `Shopper`."""
CallerDep = Annotated[Principal, Depends(principal)]
"""A route parameter `caller: CallerDep` receives the authenticated `Principal`."""


USER_ERRORS: tuple[tuple[type[UserError], int, str, dict[str, Any]], ...] = (
    (SessionNotFound, 404, "not_found", {}),
    (SessionConflict, 409, "conflict", {}),
    (BudgetRefused, 409, "budget_refused", {}),
    (StaleOffer, 409, "stale_offer", {"retry_suggested": False}),
    (NotConfigured, 503, "provider_unavailable", {"retry_suggested": False}),
    (UnknownModel, 400, "bad_request", {"field": "model"}),
    (DatabaseUnavailable, 503, "database_unavailable", {"retry_suggested": True}),
)
"""Core errors by type: status, type word, extra body fields."""
USER_HINTS: dict[str, tuple[int, str, dict[str, Any]]] = {
    Hint.UNKNOWN_OFFER: (404, "not_found", {}),
}
"""Core errors of no type above, by their hint; any other `UserError` is 400."""


def answer_for(exc: UserError) -> tuple[int, str, dict[str, Any]]:
    """Status, type word and extra body fields for a core error, by its type, else its hint.

    An offer that is not on the menu any more (taken) is 409 and a malformed or unknown one
    404, neither suggesting a retry: the same id would fail again.
    """
    for kind, status, type_, extra in USER_ERRORS:
        if isinstance(exc, kind):
            return status, type_, extra
    return USER_HINTS.get(exc.hint or "", (400, "bad_request", {}))


def asked_by(caller: Principal) -> str:
    """Who asks, as the audit log says it: the token's consumer, or the operator."""
    return "operator (api)" if caller.consumer is None else f"consumer {caller.consumer}"


def details(err: UserError) -> dict[str, str]:
    """The `field` and `hint` of a core error, where it has them, for the error body."""
    found = {"field": err.field, "hint": err.hint}
    return {key: value for key, value in found.items() if value is not None}


@contextmanager
def fields_named(names: Mapping[str, str]) -> Iterator[None]:
    """Core errors raised inside name their input in the API's words (`names`: core -> API)."""
    try:
        yield
    except UserError as err:
        if err.field is not None:
            err.field = names.get(err.field, err.field)
        raise


def checked(model: type[M], names: Mapping[str, str], **values: Any) -> M:
    """`model(**values)`, or 422 with one sentence naming the body field (`names`: model -> API).

    The rule set lives in the model (gpushop_tui.models); the API only words its complaint.
    """
    try:
        return model(**values)
    except ValidationError as err:
        where = problem_field(err, names)
        named = {"field": where} if where is not None else {}
        raise ApiError(422, "invalid_body", validation_problem(err, names), **named) from None


def not_found(session_id: str) -> ApiError:
    """The API's 404 for a session that is absent, or that this caller may not see."""
    return ApiError(404, "not_found", f"no session {session_id!r} (see 'GET /api/v1/sessions')")


async def visible_session(shopper: Shopper, caller: Principal, session_id: str) -> Session:
    """The session, if this caller may see it; 404 (as if absent) otherwise."""
    try:
        session = await shopper.session(session_id)
    except SessionNotFound:
        raise not_found(session_id) from None
    if not caller.may_see(session.consumer):
        raise not_found(session_id)
    return session


ProviderQuery = Annotated[
    str | None, Query(min_length=1, max_length=32, description="Only this provider, e.g. vastai.")
]


def known_provider(shopper: Shopper, provider: str | None) -> str | None:
    """A `provider` query parameter, refused (400) unless it names a provider gpushop knows."""
    if provider is not None and provider not in shopper.provider_names():
        known = ", ".join(shopper.provider_names())
        raise ApiError(
            400, "bad_request", f"unknown provider {provider!r}; one of {known}", field="provider"
        )
    return provider
