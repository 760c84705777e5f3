"""`Facade`: what a face may ask of gpushop, whether the core runs in this process or behind a
`gpushop --serve` (DESIGN.md §1).

`Shopper` (in-process) and `RemoteShopper` (over HTTP) both satisfy it, and the faces are typed
against it, so the TUI and the CLI run unchanged against either. The remote one is answered by
`POST /api/v1/facade/{member}`: `call_types` reads each member's parameter and result types from
this protocol, so the server and the client (de)serialize every call from one declaration.
`Snapshot` carries the answers of the synchronous members, fetched once when a remote façade
opens.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Field, TypeAdapter

from gpushop_tui.clock import Clock
from gpushop_tui.config import Settings
from gpushop_tui.core.benchmarks import GpuSummary, Ranked, RankOrder
from gpushop_tui.core.budgets import BudgetCheck, Usage
from gpushop_tui.core.compare import InventoryComparison
from gpushop_tui.core.costs import Billing, CostReport
from gpushop_tui.core.events import Subscription
from gpushop_tui.core.inventory import InventoryView, ProviderReport
from gpushop_tui.core.provisioning import Rental
from gpushop_tui.core.supervisor import PassReport
from gpushop_tui.core.views import Endpoint, SessionView, Tunnel
from gpushop_tui.models import (
    AuditEvent,
    Benchmark,
    Budget,
    Offer,
    OfferQuery,
    ProvisionRequest,
    Session,
    SessionStatus,
    Severity,
)
from gpushop_tui.node.probes import NodeSample
from gpushop_tui.providers.base import ProviderInfo
from gpushop_tui.secrets import CredentialStatus
from gpushop_tui.store import Lease

if TYPE_CHECKING:
    from gpushop_tui.core.shopper import OrphanRow, ProviderCheck


class Facade(Protocol):
    """Every member a face calls; see `Shopper` for what each one does."""

    settings: Settings
    clock: Clock

    @property
    def remote(self) -> str | None:
        """The `--serve` URL this façade talks to; None in-process."""

    @property
    def supervising(self) -> bool: ...

    async def aclose(self, teardown_grace_s: float = 0.0) -> None: ...

    def subscribe(self) -> Subscription: ...

    async def audit_log(
        self,
        session_id: str | None = None,
        *,
        min_severity: Severity | None = None,
        consumer: str | None = None,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[AuditEvent]: ...

    def now(self) -> datetime: ...

    def today(self) -> date: ...

    def credentials(self) -> tuple[list[CredentialStatus], str | None]: ...

    async def offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryView: ...

    async def cached_offers(self, query: OfferQuery | None = None) -> InventoryView: ...

    async def compare_offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryComparison: ...

    async def cached_comparison(self, query: OfferQuery | None = None) -> InventoryComparison: ...

    def refresh_offers_in_background(self) -> None: ...

    def provider_report(self, provider: str) -> ProviderReport: ...

    async def find_offer(self, offer_id: str) -> Offer | None: ...

    async def benchmark_models(self) -> set[str]: ...

    async def parse_query(self, text: str) -> OfferQuery: ...

    def provider_names(self) -> tuple[str, ...]: ...

    def provider_info(self, name: str) -> ProviderInfo: ...

    def configured_providers(self) -> list[str]: ...

    def provision_budget(self, provider: str) -> timedelta: ...

    async def check_providers(self) -> list[ProviderCheck]: ...

    async def provision(self, request: ProvisionRequest) -> Session: ...

    async def rent(self, request: ProvisionRequest) -> Rental: ...

    async def session_id(self, given: str) -> str: ...

    async def session(self, session_id: str) -> Session: ...

    async def sessions(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Session]: ...

    async def session_view(self, session_id: str) -> SessionView: ...

    async def session_views(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[SessionView]: ...

    async def view_of(self, session: Session) -> SessionView: ...

    async def done(self, session_id: str) -> Session: ...

    async def delete(self, session_id: str) -> Session: ...

    async def stop(
        self, session_id: str, *, by: str, keep_days: float | None = None
    ) -> Session: ...

    async def start(self, session_id: str, *, by: str, hours: float | None = None) -> Session: ...

    async def extend(
        self, session_id: str, hours: float, override_reason: str | None = None
    ) -> Session: ...

    async def touch(self, session_id: str) -> Session: ...

    async def wait_settled(self, session_id: str, timeout_s: float) -> Session: ...

    async def billing_now(self) -> list[Billing]: ...

    async def cost_report(
        self,
        first: date | None = None,
        last: date | None = None,
        *,
        consumer: str | None = None,
        session_id: str | None = None,
    ) -> CostReport: ...

    async def list_budgets(self) -> list[Budget]: ...

    async def set_budget(self, budget: Budget) -> Budget: ...

    async def delete_budget(self, budget_id: int) -> None: ...

    async def budget_usage(self) -> list[Usage]: ...

    async def preview_budgets(
        self, consumer: str, offer: Offer, hours: float
    ) -> list[BudgetCheck]: ...

    def node_sample(self, session_id: str) -> tuple[datetime, NodeSample] | None: ...

    def start_supervisor(self) -> None: ...

    async def supervision(self) -> tuple[bool, Lease | None]: ...

    async def supervisor_lease(self) -> Lease | None: ...

    async def reconcile_once(self) -> PassReport | None: ...

    async def cleanup_orphans(
        self,
        provider: str | None = None,
        *,
        execute: bool = False,
        include_live: bool = False,
        all_installs: bool = False,
        instance_id: str | None = None,
    ) -> tuple[list[OrphanRow], list[str]]: ...

    async def ssh_argv(self, session_id: str, *command: str) -> list[str]: ...

    async def key_path(self, session_id: str) -> Path: ...

    async def transfer(
        self,
        session_id: str,
        direction: Literal["upload", "download"],
        local: Path,
        remote: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int: ...

    async def endpoint(self, session_id: str) -> Endpoint: ...

    def tunnel(self, session_id: str, local_port: int = 0) -> AbstractAsyncContextManager[Tunnel]:
        """Forward a local port to the session's endpoint (see `Shopper.tunnel`)."""
        ...

    async def benchmark_measurements(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[Benchmark]: ...

    async def rank_benchmarks(
        self,
        order: RankOrder,
        model: str | None = None,
        gpu: str | None = None,
        min_tps: float | None = None,
    ) -> list[Ranked]: ...

    async def recommend_gpus(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[GpuSummary]: ...

    async def import_benchmarks(self, path: Path) -> tuple[int, int]: ...


REMOTE_CALLS = frozenset(
    {
        "audit_log", "offers", "cached_offers", "compare_offers", "cached_comparison",
        "find_offer", "benchmark_models", "parse_query", "check_providers", "rent",
        "session_id", "session", "sessions", "session_view", "session_views", "view_of",
        "done", "delete", "stop", "start", "extend", "touch", "wait_settled", "billing_now",
        "cost_report", "list_budgets", "set_budget", "delete_budget", "budget_usage",
        "preview_budgets", "supervisor_lease", "reconcile_once", "cleanup_orphans",
        "benchmark_measurements", "rank_benchmarks", "recommend_gpus",
    }
)  # fmt: skip
"""The members answered as they are by `POST /api/v1/facade/{member}`: every async member whose
arguments and answer are plain data (not the ones bound to this machine's files or SSH)."""


MOST_ROWS = 1000
"""The most rows one remote call lists (the bound of the public routes' `limit`)."""
MOST_WAIT_S = 3600.0
"""The longest one remote `wait_settled` waits on the server."""
BOUNDS: dict[str, Any] = {
    "limit": Field(ge=1, le=MOST_ROWS),
    "timeout_s": Field(gt=0, le=MOST_WAIT_S, allow_inf_nan=False),
    **dict.fromkeys(("session_id", "given", "consumer"), Field(max_length=128)),
}
"""What the server bounds in a remote call's arguments, by parameter name, as the public routes
bound them (a negative `limit` is refused, not handed to the database)."""


@dataclass(frozen=True)
class CallTypes:
    """One remote member's parameters (name -> how to read and write it, bounded by `BOUNDS`),
    the ones a call must give, and its answer."""

    params: dict[str, TypeAdapter[Any]]
    required: tuple[str, ...]
    result: TypeAdapter[Any]


@cache
def call_types(member: str) -> CallTypes:
    """How to (de)serialize a call of `member` (one of `REMOTE_CALLS`), from `Facade`."""
    if member not in REMOTE_CALLS:
        raise KeyError(member)
    from gpushop_tui.core.shopper import OrphanRow, ProviderCheck

    hints = typing.get_type_hints(
        getattr(Facade, member),
        globalns=globals() | {"OrphanRow": OrphanRow, "ProviderCheck": ProviderCheck},
    )
    params = list(inspect.signature(getattr(Facade, member)).parameters.values())[1:]
    bounded: dict[str, Any] = {
        param.name: Annotated[hints[param.name], BOUNDS[param.name]]
        if param.name in BOUNDS
        else hints[param.name]
        for param in params
    }
    return CallTypes(
        params={name: TypeAdapter(hint) for name, hint in bounded.items()},
        required=tuple(param.name for param in params if param.default is param.empty),
        result=TypeAdapter(hints["return"]),
    )


class Snapshot(BaseModel):
    """What a remote façade answers its synchronous members from: fetched when it opens, the
    reports again after each inventory refresh (`GET /api/v1/facade`)."""

    provider_names: tuple[str, ...]
    providers: dict[str, ProviderInfo]
    configured: list[str]
    provision_budgets_s: dict[str, float]
    reports: dict[str, ProviderReport]
    credentials: list[CredentialStatus]

    @classmethod
    def of(cls, facade: Facade) -> Snapshot:
        """The answers `facade` gives now."""
        names = facade.provider_names()
        return cls(
            provider_names=names,
            providers={name: facade.provider_info(name) for name in names},
            configured=facade.configured_providers(),
            provision_budgets_s={
                name: facade.provision_budget(name).total_seconds() for name in names
            },
            reports={name: facade.provider_report(name) for name in names},
            credentials=facade.credentials()[0],
        )


if TYPE_CHECKING:
    from gpushop_tui.core.remote import RemoteShopper
    from gpushop_tui.core.shopper import Shopper

    _LOCAL: type[Facade] = Shopper
    """The type checker proves the in-process core satisfies `Facade`..."""
    _REMOTE: type[Facade] = RemoteShopper
    """...and so does the remote one."""
