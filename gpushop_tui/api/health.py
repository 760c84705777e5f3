"""Liveness and readiness, without a token (for load balancers and systemd).

Both name the process that supervises: with replicas on one PostgreSQL, each answers the API,
one holds the supervisor lease, and any of them says which.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from gpushop_tui.api.deps import KNOWN_QUERY, state
from gpushop_tui.core import Shopper

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"], dependencies=[KNOWN_QUERY])


async def supervision(shopper: Shopper) -> dict[str, Any]:
    """Whether this process supervises, its name in the lease, the live lease's holder, and
    whether the database answered (a liveness probe must not fail with it: the process lives)."""
    try:
        lease = await shopper.supervisor_lease()
    except Exception:
        log.warning("the database did not answer a health check", exc_info=True)
        return {
            "supervising": False,
            "process": shopper.process_name,
            "supervisor": None,
            "supervisor_lease_expires_at": None,
            "database": "unreachable",
        }
    return {
        "supervising": shopper.supervising,
        "process": shopper.process_name,
        "supervisor": lease.holder if lease is not None else None,
        "supervisor_lease_expires_at": lease.expires_at.isoformat() if lease else None,
        "database": "ok",
    }


@router.get("/health")
async def health(request: Request) -> dict[str, object]:
    """The process answers; whether startup recovery is done, and who supervises."""
    api = state(request)
    return {
        "status": "ok",
        "timestamp": api.shopper.now().isoformat(),
        "ready": api.ready.is_set(),
        **await supervision(api.shopper),
    }


@router.get("/ready", responses={503: {"description": "startup recovery is not done yet"}})
async def ready(request: Request) -> JSONResponse:
    """200 once startup recovery (the first supervisor pass) is done and the database answers;
    503 otherwise. The body says who supervises."""
    api = state(request)
    found = await supervision(api.shopper)
    ready = api.ready.is_set() and found["database"] == "ok"
    body = {"ready": ready, "timestamp": api.shopper.now().isoformat(), **found}
    return JSONResponse(body, status_code=200 if ready else 503)


def install(app: FastAPI) -> None:
    app.include_router(router)
