"""`Shopper`: the one façade the TUI, the API and the CLI call.

Built once per process by `await Shopper.open(settings)` and closed with `aclose()`; tests
build it on a temporary data dir with a `FakeClock`. It must never import a face, Textual or
the web framework (tests check this).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Literal

from gpushop_tui.clock import Clock, SystemClock
from gpushop_tui.config import Settings
from gpushop_tui.core import access, benchmarks, costs
from gpushop_tui.core.benchmarks import GpuSummary, Ranked, RankOrder
from gpushop_tui.core.budgets import BudgetCheck, Budgets, Usage
from gpushop_tui.core.compare import InventoryComparison, compare_by_gpu
from gpushop_tui.core.costs import Billing, CostLine, CostReport
from gpushop_tui.core.events import EventBus, Subscription
from gpushop_tui.core.inventory import Inventory, InventoryView, ProviderReport
from gpushop_tui.core.notify import WebhookNotifier
from gpushop_tui.core.provisioning import Rental
from gpushop_tui.core.sessions import ACTIVE, Lifecycle, NotConfigured, SessionNotFound
from gpushop_tui.core.supervisor import PassReport, Supervisor
from gpushop_tui.core.views import Endpoint, NodeReading, SessionView, Tunnel
from gpushop_tui.core.workloads import server_port
from gpushop_tui.errors import Hint, UserError
from gpushop_tui.models import (
    AuditEvent,
    Benchmark,
    Budget,
    ExtendRequest,
    Offer,
    OfferQuery,
    ProvisionRequest,
    Session,
    SessionStatus,
    Severity,
    StartRequest,
    StopRequest,
    checked,
)
from gpushop_tui.node.probes import NodeSample
from gpushop_tui.providers.base import (
    AuthError,
    Provider,
    ProviderError,
    ProviderInfo,
    TransientError,
    parse_label,
)
from gpushop_tui.providers.registry import PROVIDERS, connect_providers, provider_info
from gpushop_tui.query import parse_query
from gpushop_tui.secrets import CredentialStatus, SecretStore
from gpushop_tui.store import Lease, Store


@dataclass(frozen=True)
class ProviderCheck:
    """`gpushop check` for one provider: configured, key accepted, reachable, how fast."""

    provider: str
    configured: bool
    key_valid: bool | None = None
    reachable: bool | None = None
    latency_ms: float | None = None
    error: str | None = None

    @property
    def works(self) -> bool:
        return bool(self.configured and self.key_valid and self.reachable)


@dataclass(frozen=True)
class OrphanRow:
    """An instance carrying a gpushop label as a provider lists it: the install that rented
    it, what it costs, and the session it belongs to when that install is this one."""

    provider: str
    instance_id: str
    label: str | None
    state: str
    session_id: str | None
    session_status: str | None
    live_session: bool
    install_id: str | None
    """The install id in the label (None only from an adapter that lists an unlabelled one)."""
    ours: bool
    """Rented by this install; another install's instance never has a session here."""
    age_s: float | None
    """How long since the provider started it; None where the provider does not say."""
    usd_per_hour: float | None
    """What it bills per hour, as the provider says; None where it does not say."""
    action: str = "none"
    """What cleanup did: none (dry run or kept), destroyed, destroy failed: ..."""


class Shopper:
    """Everything a face may ask of gpushop, over one database, clock and event bus."""

    def __init__(
        self, settings: Settings, store: Store, clock: Clock, secrets: SecretStore
    ) -> None:
        self.settings = settings
        self._store = store
        self.clock = clock
        self._secrets = secrets
        self._events = EventBus(store, clock)
        self._providers = connect_providers(
            settings, {name: secrets.get(name) for name in PROVIDERS}, store.install_id, clock
        )
        self._inventory = Inventory(
            self._providers,
            clock=clock,
            store=store,
            events=self._events,
            ttl_s=settings.inventory_refresh_s,
            timeout_s=settings.http_timeout_s,
        )
        self._lifecycle = Lifecycle(
            settings=settings,
            store=store,
            providers=self._providers,
            inventory=self._inventory,
            events=self._events,
            clock=clock,
            keys_dir=settings.paths.keys_dir,
        )
        self._budgets = Budgets(store, self._lifecycle, self._events, clock)
        self._lifecycle.admit = self._budgets.admit
        self._supervisor = Supervisor(self._lifecycle, budgets=self._budgets)
        self._notifier = WebhookNotifier(settings, secrets, clock, self._events, store.install_id)
        self._supervising: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        secrets: SecretStore | None = None,
    ) -> Shopper:
        """Prepare the data dir, open (and migrate) the database, and wire the core together."""
        paths = settings.paths
        paths.prepare()
        store = await Store.open(paths.db_file, settings.database_url)
        shopper = cls(settings, store, clock or SystemClock(), secrets or SecretStore())
        shopper._notifier.start()
        return shopper

    async def aclose(self, teardown_grace_s: float = 0.0) -> None:
        """Stop this process's work; every session stays as it is for the next supervisor.

        With `teardown_grace_s`, destroys already under way get that long to finish first
        (`--serve` on SIGTERM); nothing running is ever destroyed because the process stops.
        """
        if teardown_grace_s > 0:
            await self._lifecycle.finish_teardowns(teardown_grace_s)
        if self._supervising is not None:
            self._supervising.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervising
        await self._lifecycle.aclose()
        await self._inventory.aclose()
        await self._notifier.aclose()
        await self._events.aclose()
        await self._store.aclose()

    async def __aenter__(self) -> Shopper:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def remote(self) -> str | None:
        """None: this façade works on the local database (see `RemoteShopper`)."""
        return None

    @property
    def install_id(self) -> str:
        return self._store.install_id

    def subscribe(self) -> Subscription:
        """Live events from now on; close the subscription when done."""
        return self._events.subscribe()

    async def audit_log(
        self,
        session_id: str | None = None,
        *,
        min_severity: Severity | None = None,
        consumer: str | None = None,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[AuditEvent]:
        """The most recent audit events, oldest first, filtered in the database.

        `min_severity` keeps that severity and worse; `consumer` keeps events about that
        consumer's sessions; `after_id` only those newer than an event already seen.
        """
        severities = None
        if min_severity is not None:
            rank = list(Severity).index(min_severity)
            severities = [s.value for s in list(Severity)[rank:]]
        return await self._store.list_audit(
            session_id=session_id,
            after_id=after_id,
            limit=limit,
            severities=severities,
            consumer=consumer,
        )

    def now(self) -> datetime:
        """The core's clock: what every deadline, countdown and cost is measured against."""
        return self.clock.now()

    def today(self) -> date:
        """Today as a local calendar day (cost reports and budgets use local days)."""
        return costs.local_date(self.clock.now(), None)

    def credentials(self) -> tuple[list[CredentialStatus], str | None]:
        """Which providers have a credential and where from; plus why the keyring failed."""
        return self._secrets.status()

    async def offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryView:
        """The offer menu for `query`, from every configured provider at once.

        `whole_menu=False` suits a one-shot command: a query with filters is sent to each
        provider as its own search, not answered from the whole market fetched and kept.
        """
        return await self._inventory.view(query, refresh=refresh, whole_menu=whole_menu)

    async def cached_offers(self, query: OfferQuery | None = None) -> InventoryView:
        """The menu as cached now, without waiting for any provider (the TUI's live filter)."""
        return await self._inventory.cached_view(query)

    async def compare_offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryComparison:
        """The menu grouped by GPU model and count, each provider's best price side by side.

        The query's `limit` counts rows; its filters, its sort and `whole_menu` work as for
        `offers`.
        """
        query = query or OfferQuery()
        whole = query.model_copy(update={"limit": None})
        view = await self._inventory.view(whole, refresh=refresh, whole_menu=whole_menu)
        return compare_by_gpu(view, limit=query.limit, model=query.model)

    async def cached_comparison(self, query: OfferQuery | None = None) -> InventoryComparison:
        """The comparison as cached now, without waiting for any provider (the TUI's view)."""
        query = query or OfferQuery()
        view = await self._inventory.cached_view(query.model_copy(update={"limit": None}))
        return compare_by_gpu(view, limit=query.limit, model=query.model)

    def refresh_offers_in_background(self) -> None:
        """Start refreshing every provider whose menu is old, without waiting."""
        self._inventory.refresh_in_background()

    def provider_report(self, provider: str) -> ProviderReport:
        """Where one provider's menu stands now: ok, stale, failing or not configured."""
        return self._inventory.report(provider)

    async def find_offer(self, offer_id: str) -> Offer | None:
        """One offer by id from its provider's menu (refreshed if old), or None."""
        return await self._inventory.find(offer_id)

    async def benchmark_models(self) -> set[str]:
        """The LLMs with benchmark measurements: what a query's `model=` may name."""
        return await self._inventory.benchmarks.models()

    async def parse_query(self, text: str) -> OfferQuery:
        """Parse the query language, with `model=` checked against the measured models.

        Raises `QueryError` (a `UserError` with a caret under the fault).
        """
        return parse_query(text, await self.benchmark_models())

    def provider_names(self) -> tuple[str, ...]:
        """Every provider gpushop knows, in menu order (configured or not)."""
        return PROVIDERS

    def provider_info(self, name: str) -> ProviderInfo:
        """What provider `name` is and can do (credentials, budgets, stop/start, TTL, spot)."""
        if name not in PROVIDERS:
            raise UserError(
                f"unknown provider {name!r}; one of {', '.join(PROVIDERS)}", field="provider"
            )
        return provider_info(name)

    def configured_providers(self) -> list[str]:
        """The providers that have a credential, in menu order."""
        return self._inventory.configured

    def provision_budget(self, provider: str) -> timedelta:
        """How long a rental on `provider` may take to become ready before it is failed."""
        return self._lifecycle.provision_budget(provider)

    async def check_providers(self) -> list[ProviderCheck]:
        """Per provider: is a key set, does the provider accept it, and how long it took."""
        return list(await asyncio.gather(*(self._check(name) for name in PROVIDERS)))

    async def _check(self, name: str) -> ProviderCheck:
        adapter = self._providers[name]
        if adapter is None:
            return ProviderCheck(name, configured=False)
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(self.settings.http_timeout_s):
                await adapter.check()
        except AuthError as err:
            return ProviderCheck(name, True, key_valid=False, reachable=True, error=err.message)
        except TransientError as err:
            return ProviderCheck(name, True, reachable=False, error=err.message)
        except ProviderError as err:
            return ProviderCheck(name, True, reachable=True, error=err.message)
        except TimeoutError:
            return ProviderCheck(name, True, reachable=False, error="no answer in time")
        latency = (self.clock.monotonic() - started) * 1000
        return ProviderCheck(name, True, key_valid=True, reachable=True, latency_ms=latency)

    # ------------------------------------------------------------------ sessions

    async def provision(self, request: ProvisionRequest) -> Session:
        """Rent an offer; returns with the session provisioning (readiness goes on here)."""
        return (await self.rent(request)).session

    async def rent(self, request: ProvisionRequest) -> Rental:
        """Rent an offer, once per `request_id`: a repeated request answers with its session
        (`created` False); one already used for another consumer is a `SessionConflict`."""
        return await self._lifecycle.provision(request)

    async def session_id(self, given: str) -> str:
        """The full id of the one session whose id starts with `given`, as every call that
        takes a session id accepts it: an unknown id is `SessionNotFound`, and a prefix of
        several ids a `UserError` naming them."""
        matches = await self._store.session_ids_from(given) if given else []
        if not matches:
            raise SessionNotFound.for_id(given)
        if matches[0] == given or len(matches) == 1:
            return matches[0]
        raise UserError(
            f"{given!r} is the start of more than one session id, among them "
            f"{' and '.join(matches)}; give more of it",
            field="session_id",
            hint=Hint.UNKNOWN_SESSION,
        )

    async def session(self, session_id: str) -> Session:
        return await self._lifecycle.get(await self.session_id(session_id))

    async def sessions(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Session]:
        """Sessions, newest first; `open_only` keeps those still supervised."""
        return await self._store.list_sessions(
            consumer=consumer, status=status, open_only=open_only, provider=provider, limit=limit
        )

    async def session_view(self, session_id: str) -> SessionView:
        """A session as the faces show it: ssh command, node reading, cost and deadlines."""
        return await self.view_of(await self.session(session_id))

    async def session_views(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[SessionView]:
        """`sessions(...)` as views, newest first."""
        found = await self.sessions(
            consumer=consumer, status=status, open_only=open_only, provider=provider, limit=limit
        )
        lease = await self._supervisor.lease()  # once for the list, not once a row
        return [self._view(session, lease) for session in found]

    async def view_of(self, session: Session) -> SessionView:
        """The view of a session already read."""
        return self._view(session, None if session.closed else await self._supervisor.lease())

    def _view(self, session: Session, lease: Lease | None) -> SessionView:
        """The view of `session`, with `lease` the supervisor lease as read for it."""
        reading = self._supervisor.samples.get(session.id)
        adapter = self._providers.get(session.provider)
        stopped_rate = (
            adapter.stopped_price_per_hour(session.offer)
            if adapter is not None and adapter.can_stop
            else None
        )
        return SessionView(
            session=session,
            ssh_command=self._ssh_command(session),
            node=NodeReading(*reading) if reading is not None else None,
            keep_days=session.kept_days(self.settings.keep_days),
            stopped_usd_per_day=None if stopped_rate is None else stopped_rate * 24,
            supervisor=None if lease is None or session.closed else lease.holder,
        )

    def _ssh_command(self, session: Session) -> str | None:
        """The ssh line of a session with an address, from the row as read: no second read
        and no file written (readiness wrote the pinned host key), so listing views is cheap."""
        if session.closed:
            return None
        try:
            return shlex.join(
                access.ssh_words(session, self._lifecycle.known_hosts_path(session.id))
            )
        except UserError:  # no SSH address yet
            return None

    async def done(self, session_id: str) -> Session:
        """End a session gracefully (destroy, or stop and keep the disk); answers at once."""
        return await self._lifecycle.done(
            await self.session_id(session_id), reason="requested by the user"
        )

    async def delete(self, session_id: str) -> Session:
        """Destroy a session's instance whatever its storage policy; answers at once."""
        return await self._lifecycle.delete(await self.session_id(session_id))

    async def stop(self, session_id: str, *, by: str, keep_days: float | None = None) -> Session:
        """Power a running session off and keep its disk (for `keep_days`, else as it was);
        answers at once. `by` says who asked, in the audit log."""
        request = checked(StopRequest, {"keep_days": keep_days})
        return await self._lifecycle.stop(
            await self.session_id(session_id), by=by, keep_days=request.keep_days
        )

    async def start(self, session_id: str, *, by: str, hours: float | None = None) -> Session:
        """Power a stopped session on for a new reservation (`hours`, else its own length)
        and a hard max counted from now; answers at once. `by` says who asked."""
        request = checked(StartRequest, {"hours": hours})
        return await self._lifecycle.start(
            await self.session_id(session_id), by=by, hours=request.hours
        )

    async def extend(
        self, session_id: str, hours: float, override_reason: str | None = None
    ) -> Session:
        request = checked(ExtendRequest, {"hours": hours, "override_reason": override_reason})
        return await self._lifecycle.extend(
            await self.session_id(session_id), request.hours, request.override_reason
        )

    async def touch(self, session_id: str) -> Session:
        """Record activity on a session (it is not idle)."""
        return await self._lifecycle.touch(await self.session_id(session_id))

    async def wait_settled(self, session_id: str, timeout_s: float) -> Session:
        """Wait until the session is running, stopped or closed (or the time is up)."""
        return await self._lifecycle.wait_settled(await self.session_id(session_id), timeout_s)

    # ------------------------------------------------------------------ money

    async def cost_lines(
        self,
        since: datetime,
        until: datetime,
        *,
        consumer: str | None = None,
        session_id: str | None = None,
    ) -> list[CostLine]:
        """What was billed in [since, until), per session, kind and local day, up to now."""
        billing = await self._store.sessions_billing_between(since, until, consumer)
        if session_id is not None:
            billing = [s for s in billing if s.id == session_id]
        return costs.daily_lines(billing, since, until, self.clock.now())

    async def billing_now(self) -> list[Billing]:
        """Every session whose instance bills right now, with its cost so far and USD/h."""
        now = self.clock.now()
        return [
            Billing(s, costs.cost_of(s, now), costs.burn_rate(s))
            for s in await self._store.list_sessions(open_only=True)
            if costs.burn_rate(s) > 0
        ]

    async def cost_report(
        self,
        first: date | None = None,
        last: date | None = None,
        *,
        consumer: str | None = None,
        session_id: str | None = None,
    ) -> CostReport:
        """What was billed over local days `first`..`last`, both included, up to now.

        Neither day given: this month; one given: the rest of that day's month. `billing` holds
        what bills right now in the same scope.
        """
        now = self.clock.now()
        first_day, last_day = costs.report_days(costs.local_date(now, None), first, last)
        since = costs.local_midnight(first_day, None)
        until = costs.local_midnight(last_day + timedelta(days=1), None)
        lines = await self.cost_lines(since, until, consumer=consumer, session_id=session_id)
        billing = [
            billed
            for billed in await self.billing_now()
            if consumer in (None, billed.session.consumer)
            and session_id in (None, billed.session.id)
        ]
        return costs.CostReport(
            first_day=first_day,
            last_day=last_day,
            since=since,
            until=until,
            now=now,
            today=costs.local_date(now, None),
            consumer=consumer,
            lines=tuple(lines),
            billing=tuple(billing),
        )

    async def list_budgets(self) -> list[Budget]:
        return await self._budgets.all()

    async def set_budget(self, budget: Budget) -> Budget:
        """Create a budget, or change the one for the same consumer and kind."""
        return await self._budgets.set(budget)

    async def delete_budget(self, budget_id: int) -> None:
        await self._budgets.delete(budget_id)

    async def budget_usage(self) -> list[Usage]:
        """Every budget with what counts against it now."""
        return await self._budgets.usage()

    async def preview_budgets(self, consumer: str, offer: Offer, hours: float) -> list[BudgetCheck]:
        """What each budget would say to this rental, before anything is rented."""
        return await self._budgets.preview(consumer, offer, hours)

    def node_sample(self, session_id: str) -> tuple[datetime, NodeSample] | None:
        """The supervisor's latest GPU/SSH reading of a running session, if it took one."""
        return self._supervisor.samples.get(session_id)

    # ------------------------------------------------------------------ supervision

    def start_supervisor(self) -> None:
        """Supervise in the background (TUI, --serve) until `aclose`; a viewer if another does."""
        if self._supervising is None or self._supervising.done():
            self._supervising = asyncio.create_task(self._supervisor.run(), name="supervisor")

    @property
    def supervising(self) -> bool:
        """Whether this process holds the supervisor lease right now."""
        return self._supervisor.holding

    @property
    def process_name(self) -> str:
        """How this process is named in the supervisor lease ("host:pid:token")."""
        return self._supervisor.holder

    async def supervision(self) -> tuple[bool, Lease | None]:
        """Once this process has tried the lease: whether it supervises, else who does."""
        await self._supervisor.decided.wait()
        if self._supervisor.holding:
            return True, None
        return False, await self._supervisor.lease()

    async def recovered(self) -> None:
        """Wait until the supervisor's first pass after start-up has run (`/ready`)."""
        await self._supervisor.recovered.wait()

    async def supervisor_lease(self) -> Lease | None:
        """The live supervisor's lease, if any process holds one."""
        return await self._supervisor.lease()

    async def reconcile_once(self) -> PassReport | None:
        """One supervisor pass for cron; None when a live supervisor already holds the lease."""
        return await self._supervisor.run_once()

    async def cleanup_orphans(
        self,
        provider: str | None = None,
        *,
        execute: bool = False,
        include_live: bool = False,
        all_installs: bool = False,
        instance_id: str | None = None,
    ) -> tuple[list[OrphanRow], list[str]]:
        """Instances straight from the provider lists, with their sessions; destroy on ask.

        Lists this install's instances; with `all_installs`, every instance carrying any
        install's gpushop label (an install whose data dir was lost has a new id, and its old
        instances bill on unseen). `instance_id` (with `provider`) lists that one instance,
        whichever install rented it. On `execute` every listed instance is destroyed, except
        those of our live sessions unless `include_live`: another install's instance only when
        it was asked for by id or with `all_installs`. Returns the rows and one sentence per
        provider that could not be listed. No provider configured (or the one named not
        configured) is a `NotConfigured`; an `instance_id` no list holds is a `UserError`.
        """
        if provider is not None and provider not in PROVIDERS:
            raise UserError(
                f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}", field="provider"
            )
        if instance_id is not None and provider is None:
            raise UserError("an instance id needs its provider", field="instance")
        if not any(self._providers.values()):
            raise NotConfigured("no provider is configured", hint=Hint.NOT_CONFIGURED)
        if provider is not None and self._providers.get(provider) is None:
            raise NotConfigured(
                f"{provider} is not configured", field="provider", hint=Hint.NOT_CONFIGURED
            )
        rows: list[OrphanRow] = []
        problems: list[str] = []
        now = self.clock.now()
        for name, adapter in self._providers.items():
            if adapter is None or (provider is not None and name != provider):
                continue
            try:
                if all_installs or instance_id is not None:
                    listed = await adapter.list_labelled()
                else:
                    listed = await adapter.list_ours()
            except ProviderError as err:
                problems.append(f"{name}: cannot list instances: {err.message}")
                continue
            for instance in listed:
                if instance_id is not None and instance.instance_id != instance_id:
                    continue
                parsed = parse_label(instance.label)
                ours = parsed is not None and parsed[0] == self._store.install_id
                session = await self._store.get_session(parsed[1]) if parsed and ours else None
                live = session is not None and (
                    session.status in ACTIVE
                    or (session.status == SessionStatus.STOPPED and not session.instance.absent)
                    or (session.status == SessionStatus.STOPPING and session.keep_disk)
                )
                action = "none"
                if execute and (include_live or not live):
                    action = await self._destroy_listed(adapter, instance.instance_id, session)
                started = instance.started_at
                rows.append(
                    OrphanRow(
                        provider=name,
                        instance_id=instance.instance_id,
                        label=instance.label,
                        state=instance.state,
                        session_id=session.id if session else None,
                        session_status=session.status.value if session else None,
                        live_session=live,
                        install_id=parsed[0] if parsed else None,
                        ours=ours,
                        age_s=max(0.0, (now - started).total_seconds()) if started else None,
                        usd_per_hour=instance.price_per_hour,
                        action=action,
                    )
                )
        if instance_id is not None and not rows and not problems:
            raise UserError(
                f"no instance {provider}:{instance_id} carries a gpushop label", field="instance"
            )
        return rows, problems

    async def _destroy_listed(
        self, adapter: Provider, instance_id: str, session: Session | None
    ) -> str:
        if session is not None and session.instance_id in (None, instance_id):
            if session.instance_id is None:
                await self._lifecycle.record_instance(session.id, instance_id, self.clock.now())
            await self._lifecycle.delete(session.id, reason="cleanup-orphans")
            await self._lifecycle.drive(session.id)
            after = await self._lifecycle.get(session.id)
            return "destroyed" if after.instance.absent else f"destroying ({after.instance})"
        try:
            await adapter.destroy(instance_id)
        except ProviderError as err:
            return f"destroy failed: {err.message}"
        return "destroy requested"

    # ------------------------------------------------------------------ access

    async def ssh_argv(self, session_id: str, *command: str) -> list[str]:
        """The OpenSSH command line that reaches the session's node with its own key."""
        session = await self.session(session_id)
        return await access.ssh_argv(session, self._lifecycle.known_hosts_path(session.id), command)

    async def key_path(self, session_id: str) -> Path:
        """The session's private key file (kept until the session is closed)."""
        session = await self.session(session_id)
        path = Path(session.key_path) if session.key_path else None
        if path is None or not await asyncio.to_thread(path.exists):
            raise UserError(f"session {session.id} has no key any more (it is closed)")
        return path

    async def transfer(
        self,
        session_id: str,
        direction: Literal["upload", "download"],
        local: Path,
        remote: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Copy one file to or from the session's node over SFTP; returns the bytes copied."""
        session = await self.session(session_id)
        timeout_s = self.settings.ssh_connect_timeout_s
        return await access.transfer(session, timeout_s, direction, local, remote, progress)

    async def endpoint(self, session_id: str) -> Endpoint:
        """The session's model endpoint, its token and its public URL if it has one, once its
        workload answers."""
        session = await self.session(session_id)
        if session.endpoint is None:
            if session.workload_spec is None or server_port(session.workload_spec) is None:
                raise UserError(f"session {session.id} has no endpoint: it serves no workload")
            raise UserError(
                f"session {session.id} has no endpoint yet "
                f"(its workload is {session.workload_phase or 'not started'})"
            )
        workloads = self._lifecycle.readiness.workloads
        token = await asyncio.to_thread(workloads.read_token, session.id)
        if token is None:
            raise UserError(f"session {session.id} has no token any more (it is closed)")
        return Endpoint(
            session_id=session.id,
            url=session.endpoint,
            token=token,
            public_url=session.endpoint_public,
        )

    @contextlib.asynccontextmanager
    async def tunnel(self, session_id: str, local_port: int = 0) -> AsyncIterator[Tunnel]:
        """Forward a local port (0: a free one) to the session's endpoint over its SSH key and
        pinned host key, open until the block ends; `Tunnel.closed` ends when the connection
        under it does (the node went away, the session ended)."""
        session = await self.session(session_id)
        await self.endpoint(session.id)
        timeout_s = self.settings.ssh_connect_timeout_s
        async with access.tunnel(session, timeout_s, local_port) as opened:
            yield opened

    # ------------------------------------------------------------------ benchmarks

    async def benchmark_measurements(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[Benchmark]:
        """Every measurement, optionally of one model and/or one GPU (as the query's `gpu=`).

        An unknown model raises `UnknownModel` naming the models measured.
        """
        return await self._inventory.benchmarks.measurements(model, gpu)

    async def rank_benchmarks(
        self,
        order: RankOrder,
        model: str | None = None,
        gpu: str | None = None,
        min_tps: float | None = None,
    ) -> list[Ranked]:
        """Measurements ranked: `all` by model then speed, `best` fastest first, `cheapest` by
        $/M tokens (at least `min_tps`), `compare` one model across GPUs."""
        measured = await self.benchmark_measurements(model, gpu)
        match order:
            case "best":
                return benchmarks.best(measured)
            case "cheapest":
                return benchmarks.cheapest(measured, min_tps)
            case "compare":
                return benchmarks.compare(measured)
            case "all":
                return [
                    benchmarks.Ranked(m, benchmarks.cost_of(m))
                    for m in sorted(measured, key=lambda m: (m.model, -m.tokens_per_second))
                ]

    async def recommend_gpus(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[GpuSummary]:
        """Per GPU configuration: its best speed and cost per million tokens."""
        return benchmarks.recommend(await self.benchmark_measurements(model, gpu))

    async def import_benchmarks(self, path: Path) -> tuple[int, int]:
        """Import measurements (the earlier tool's JSON or CSV): (imported, replaced)."""
        return await self._inventory.benchmarks.import_file(path)
