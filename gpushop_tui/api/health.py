"""Liveness and readiness, without a token (for load balancers and systemd)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from gpushop_tui.api.deps import KNOWN_QUERY, state

router = APIRouter(tags=["health"], dependencies=[KNOWN_QUERY])


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    """The process answers; whether startup recovery is done and whether it supervises."""
    api = state(request)
    return {
        "status": "ok",
        "timestamp": api.shopper.now().isoformat(),
        "ready": api.ready.is_set(),
        "supervising": api.shopper.supervising,
    }


@router.get("/ready", responses={503: {"description": "startup recovery is not done yet"}})
async def ready(request: Request) -> JSONResponse:
    """200 once startup recovery (the first supervisor pass) is done; 503 until then."""
    api = state(request)
    body = {"ready": api.ready.is_set(), "timestamp": api.shopper.now().isoformat()}
    return JSONResponse(body, status_code=200 if api.ready.is_set() else 503)


def install(app: FastAPI) -> None:
    app.include_router(router)
