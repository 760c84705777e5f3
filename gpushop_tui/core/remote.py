"""`RemoteShopper`: the façade over a `gpushop --serve` (`gpushop --remote URL`).

It satisfies `Facade` as `Shopper` does, so the TUI and the CLI run unchanged against a team's
server: each data call is `POST /api/v1/facade/{member}` (typed by `Facade`, so the answers are
the very models and views the local core returns), live events come from `/api/v1/events`, and
the synchronous members answer from a `Snapshot` fetched at open (its provider reports again
after each inventory refresh). The server supervises; this process never does.

SSH-bound members (ssh, transfer, tunnel) fetch the session's key from the server into a `0600`
file under the local keys dir and reach the node directly, as the local core does
(`core/access.py`); a session id the server answers is checked for the form of one before it
names a local file. A server error becomes the core error the local façade raises, its message
ending with the server's request id; an unreachable server, a refused token, a redirect, a server
failure or an answer this version cannot read is `RemoteUnavailable`, one sentence naming the
URL. Plain http to a host other than this machine's loopback is warned about once per process:
the token would travel in clear.

The live stream skips an event it cannot read (logged) and connects again after any break; an
interruption (a reconnect, or the server's `dropped` when this client fell behind) is logged
and delivered as a warning `Alert` (`EVENTS_LOST`), and the snapshot is read again, since the
events missed meanwhile are not replayed: on that alert the cockpit reads its panes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import stat
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import httpx
from pydantic import TypeAdapter

from gpushop_tui.clock import Clock, SystemClock
from gpushop_tui.config import Settings, is_loopback
from gpushop_tui.core import access, costs
from gpushop_tui.core.benchmarks import GpuSummary, Ranked, RankOrder, UnknownModel
from gpushop_tui.core.budgets import BudgetCheck, BudgetRefused, Usage
from gpushop_tui.core.compare import InventoryComparison
from gpushop_tui.core.costs import Billing, CostReport
from gpushop_tui.core.events import (
    EVENTS_LOST,
    Alert,
    Event,
    Fanout,
    InventoryRefreshed,
    Subscription,
    event_kinds,
)
from gpushop_tui.core.facade import MOST_ROWS, Snapshot, call_types
from gpushop_tui.core.inventory import InventoryView, ProviderReport
from gpushop_tui.core.provisioning import Rental
from gpushop_tui.core.rows import (
    NotConfigured,
    SessionConflict,
    SessionNotFound,
    StaleOffer,
    UnknownOffer,
)
from gpushop_tui.core.supervisor import PassReport
from gpushop_tui.core.views import Endpoint, SessionView, Tunnel
from gpushop_tui.errors import Hint, UserError
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
from gpushop_tui.node import keys as node_keys
from gpushop_tui.node.probes import NodeSample
from gpushop_tui.providers.base import ProviderInfo
from gpushop_tui.query import QueryError
from gpushop_tui.secrets import REMOTE, REMOTE_ENV, CredentialStatus, SecretStore, remember_secret
from gpushop_tui.store import Lease

if TYPE_CHECKING:
    from gpushop_tui.core.shopper import OrphanRow, ProviderCheck

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_FILE = "remote_token"
"""The token file in the data dir, the last place the token is looked for (mode 0600 only)."""
CALL_TIMEOUT_S = 300.0
"""How long one call may take to answer (a menu refresh on the server included)."""
RECONNECT_S = (0.5, 10.0)
"""The live stream's first and longest wait before it connects again."""
ERROR_CLASSES: dict[str, type[UserError]] = {
    cls.__name__: cls
    for cls in (
        UserError,
        SessionNotFound,
        SessionConflict,
        StaleOffer,
        UnknownOffer,
        NotConfigured,
        BudgetRefused,
        UnknownModel,
    )
}
"""The core errors a server's `error_class` names, raised here as they are there."""
ERROR_TYPES: dict[str, type[UserError]] = {
    "not_found": SessionNotFound,
    "conflict": SessionConflict,
}
"""Errors the server words without a class (its own checks), by their type word."""
SESSION_ID: TypeAdapter[str] = TypeAdapter(Session.model_fields["id"].rebuild_annotation())
"""A session id as `Session` has it: checked before a server's id names a local file."""
_warned_cleartext: set[str] = set()
"""The plain-http URLs warned about in this process (each once)."""


class RemoteUnavailable(UserError):
    """The server cannot be reached, refused the token, or failed: one sentence naming it."""


def remote_token(settings: Settings, given: str | None = None) -> str:
    """The bearer token for `settings.remote`: `given` (`--token`), else GPUSHOP_REMOTE_TOKEN,
    else the OS keyring (`gpushop keys set remote`), else `remote_token` in the data dir, which
    must be readable by its owner only."""
    if given is not None and given.strip():
        remember_secret(given.strip())
        return given.strip()
    found = SecretStore().get(REMOTE)
    if found:
        return found
    token = _token_file(settings.paths.data_dir / TOKEN_FILE)
    remember_secret(token)
    return token


def _token_file(path: Path) -> str:
    """The token in `path`: a file (not a link) of this user's, private to them, UTF-8 text;
    a `UserError` of one sentence otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise UserError(
            f"no token for the gpushop server: give --token, set {REMOTE_ENV}, run 'gpushop keys "
            f"set remote', or put it in {path} (mode 0600); the server's 'gpushop serve-token' "
            "prints one"
        ) from None
    except OSError as err:
        raise UserError(
            f"cannot read {path} ({err.strerror or type(err).__name__}); make it a plain file "
            f"of yours with mode 0600, not a link"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{path} is not a file; put the server's token in a file there")
        if info.st_uid != os.getuid():
            raise UserError(
                f"{path} belongs to another user (uid {info.st_uid}); put your own token file there"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise UserError(
                f"{path} is readable by others (mode {mode:04o}); make it private with "
                f"'chmod 600 {path}'"
            )
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read()
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror or type(err).__name__})") from None
    finally:
        os.close(fd)
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; put the server's token in it") from None
    if not token:
        raise UserError(f"{path} is empty; put the server's token in it")
    return token


def warn_if_cleartext(url: httpx.URL) -> None:
    """Warn once per process (on stderr and in the log) when `url` is plain http to a host
    other than this machine's loopback: the bearer token would travel in clear."""
    if url.scheme != "http" or is_loopback(url.host) or str(url) in _warned_cleartext:
        return
    _warned_cleartext.add(str(url))
    said = (
        f"{url} is plain http to another machine: the token travels in clear; use an https URL "
        "(a TLS proxy in front of 'gpushop --serve')"
    )
    log.warning("%s", said)
    print(f"gpushop: warning: {said}", file=sys.stderr, flush=True)


def parse_event(kind: str, data: str) -> Event | None:
    """One server-sent event as the core's event; None for one this version does not know."""
    cls = event_kinds().get(kind)
    if cls is None:
        return None
    fields = json.loads(data)
    if not isinstance(fields, dict):
        raise ValueError(f"the data of a {kind!r} event is not an object")
    fields.pop("kind", None)
    return cls.model_validate(fields)


def _text(answer: Any, name: str) -> str:
    """The text field `name` of a JSON answer; `TypeError`/`KeyError` when it has none."""
    value = answer[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not text")
    return value


def _request_id(response: httpx.Response) -> str:
    """` (request id X)` when the server gave one, else nothing."""
    found = response.headers.get("x-request-id")
    return f" (request id {found})" if found else ""


class RemoteShopper:
    """The façade over a `gpushop --serve`; open with `await RemoteShopper.open(...)`."""

    def __init__(
        self, settings: Settings, url: str, client: httpx.AsyncClient, clock: Clock
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._url = url
        self._client = client
        self._snapshot: Snapshot | None = None
        self._events = Fanout()
        self._listening = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._samples: dict[str, tuple[datetime, NodeSample]] = {}

    @classmethod
    async def open(
        cls,
        settings: Settings,
        token: str,
        *,
        url: str | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> RemoteShopper:
        """Connect to `url` (else `settings.remote`), read the snapshot and start the live
        stream; `RemoteUnavailable` when the server cannot be reached or refuses the token.
        `transport` replaces the network (tests)."""
        where = url or settings.remote
        if where is None:
            raise UserError("no gpushop server is named: give --remote URL or set GPUSHOP_REMOTE")
        try:
            warn_if_cleartext(httpx.URL(where))
            client = httpx.AsyncClient(
                base_url=where,
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(CALL_TIMEOUT_S, connect=settings.http_timeout_s),
                transport=transport,
            )
        except httpx.InvalidURL as err:
            raise RemoteUnavailable(f"{where!r} is not a gpushop server's URL ({err})") from None
        shopper = cls(settings, where, client, clock or SystemClock())
        try:
            await shopper._refresh_snapshot()
            shopper._stream = asyncio.create_task(shopper._follow(), name="remote-events")
            async with asyncio.timeout(settings.http_timeout_s):
                await shopper._listening.wait()
        except TimeoutError:
            await shopper.aclose()
            raise RemoteUnavailable(
                f"the gpushop server at {where} did not open its live event stream in time"
            ) from None
        except BaseException:
            await shopper.aclose()
            raise
        return shopper

    async def aclose(self, teardown_grace_s: float = 0.0) -> None:
        """Stop the live stream and the calls in the background (whatever they raised is
        already logged) and close the connection; the server's sessions go on."""
        running = [task for task in (self._stream, *self._background) if task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._client.aclose()

    async def __aenter__(self) -> RemoteShopper:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def remote(self) -> str:
        """The server's URL."""
        return self._url

    # ------------------------------------------------------------------ the wire

    async def _request(
        self,
        method: str,
        path: str,
        read: Callable[[Any], T],
        body: Any = None,
        timeout_s: float | None = None,
    ) -> T:
        """One call to the server: its JSON answer as `read` makes it, or the error it stands
        for, raised (`RemoteUnavailable` for an answer `read` cannot make sense of)."""
        try:
            response = await self._client.request(
                method,
                path,
                json=body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s,
            )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as err:
            reason = str(err) or type(err).__name__
            raise RemoteUnavailable(
                f"cannot reach the gpushop server at {self._url} ({reason})"
            ) from None
        if not response.is_success:
            raise self._error(response)
        try:
            return read(response.json())
        except (ValueError, KeyError, TypeError) as err:
            log.debug("unreadable answer to %s %s", method, path, exc_info=err)
            kind = response.headers.get("content-type", "no content type")
            raise RemoteUnavailable(
                f"the server at {self._url} answered {method} {path} with what this gpushop cannot "
                f"read ({kind}; {type(err).__name__}); is it a 'gpushop --serve' of this version?"
                f"{_request_id(response)}"
            ) from None

    def _error(self, response: httpx.Response) -> UserError:
        """The exception a failed answer stands for, its message ending with the request id."""
        if response.is_redirect:
            return RemoteUnavailable(
                f"the server at {self._url} redirects to {self._redirected(response)}; use that URL"
            )
        request_id = response.headers.get("x-request-id", "unknown")
        try:
            detail: dict[str, Any] = response.json()["error"]
            if not isinstance(detail, dict):
                raise TypeError("the error is not an object")
        except (ValueError, KeyError, TypeError):
            if response.status_code == 401:
                detail = {"message": response.reason_phrase or "unauthorized"}
            else:
                return RemoteUnavailable(
                    f"the server at {self._url} answered HTTP {response.status_code} "
                    f"{response.reason_phrase} without gpushop's error; is it a 'gpushop --serve'?"
                    f"{_request_id(response)}"
                )
        message = str(detail.get("message", "no reason given"))
        named = detail.get("error_class")
        type_ = str(detail.get("type"))
        said = f"{message} (request id {request_id})"
        if response.status_code == 401:
            return RemoteUnavailable(f"the gpushop server at {self._url} refused the token: {said}")
        if type_ == "unknown_member" or (response.status_code == 404 and message == "Not Found"):
            return RemoteUnavailable(
                f"the gpushop server at {self._url} does not answer this call ({said}); run the "
                "same gpushop version there and here"
            )
        if named is None and type_ in ("provider_unavailable", "rate_limited"):
            return UserError(f"a provider failed on the server at {self._url}: {said}")
        if named is None and response.status_code >= 500:
            return RemoteUnavailable(f"the gpushop server at {self._url} failed: {said}")
        query = detail.get("query")
        if named == QueryError.__name__ and isinstance(query, dict):
            error: UserError = QueryError(
                str(query["text"]), int(query["start"]), int(query["end"]), str(query["reason"])
            )
            error.message = f"{error.message} (request id {request_id})"
            error.args = (error.message,)
            return error
        cls = ERROR_CLASSES.get(str(named)) or ERROR_TYPES.get(type_, UserError)
        hint = detail.get("hint")
        if cls is SessionNotFound and hint is None:
            hint = Hint.UNKNOWN_SESSION
        return cls(said, field=detail.get("field"), hint=hint)

    def _redirected(self, response: httpx.Response) -> str:
        """Where a redirect points, as the URL to give `--remote` where it keeps the path
        asked (the whole location otherwise)."""
        location = response.url.join(response.headers.get("location", ""))
        asked = str(response.request.url)[len(self._url.rstrip("/")) :]
        found = str(location)
        return found.removesuffix(asked) if asked and found.endswith(asked) else found

    async def _call(self, member: str, *, wait_s: float | None = None, **args: Any) -> Any:
        """One façade member on the server, its arguments and answer typed by `Facade`;
        `wait_s` overrides how long the answer may take."""
        types = call_types(member)
        body = {
            name: types.params[name].dump_python(value, mode="json") for name, value in args.items()
        }

        def read(answer: Any) -> Any:
            return types.result.validate_python(answer["result"])

        return await self._request("POST", f"/api/v1/facade/{member}", read, body, wait_s)

    async def _refresh_snapshot(self) -> None:
        self._snapshot = await self._request("GET", "/api/v1/facade", Snapshot.model_validate)

    @property
    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None, "opened with RemoteShopper.open"
        return self._snapshot

    # ------------------------------------------------------------------ live events

    async def _follow(self) -> None:
        """Relay the server's event stream to this process's subscribers, reconnecting after a
        break or any failure (waiting longer each time, up to `RECONNECT_S`)."""
        wait_s, most_s = RECONNECT_S
        while True:
            try:
                await self._listen()
                wait_s = RECONNECT_S[0]
            except (httpx.HTTPError, httpx.StreamError) as err:
                log.warning("the event stream of %s broke (%s); reconnecting", self._url, err)
            except Exception:
                log.exception("the event stream of %s failed; reconnecting", self._url)
            await asyncio.sleep(wait_s)
            wait_s = min(most_s, wait_s * 2)

    async def _listen(self) -> None:
        """Follow one connection of the event stream until it ends; once it opens after an
        earlier one did, the events in between are lost (`_interrupted`)."""
        timeout = httpx.Timeout(None, connect=self.settings.http_timeout_s)
        async with self._client.stream("GET", "/api/v1/events", timeout=timeout) as response:
            if not response.is_success:
                await response.aread()
                log.warning("%s", self._error(response).message)
                return
            kind, data, fresh = "message", "", True
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    if fresh and self._listening.is_set():
                        self._interrupted("the connection broke and was made again")
                    fresh = False
                    self._listening.set()
                elif line.startswith("event:"):
                    kind = line.removeprefix("event:").strip()
                elif line.startswith("data:"):
                    data = line.removeprefix("data:").strip()
                elif not line:
                    if data:
                        self._relay(kind, data)
                    kind, data = "message", ""

    def _relay(self, kind: str, data: str) -> None:
        """Deliver one server-sent event; one this process cannot read is logged and skipped."""
        if kind == "dropped":
            self._interrupted(f"this client fell behind and the server dropped events ({data})")
            return
        try:
            event = parse_event(kind, data)
        except (ValueError, TypeError) as err:
            log.warning(
                "skipped a %r event from %s this gpushop cannot read: %s", kind, self._url, err
            )
            return
        if event is None:
            return
        if isinstance(event, InventoryRefreshed):
            self._refresh_in_background()
        self._events.deliver(event)

    def _interrupted(self, why: str) -> None:
        """Events were missed (not replayed): log it, read the snapshot again and tell the
        subscribers (`EVENTS_LOST`), so that the cockpit reads its panes again."""
        said = (
            f"the live events from {self._url} were interrupted: {why}; what they would have "
            "shown is read again"
        )
        log.warning("%s", said)
        self._refresh_in_background()
        self._events.deliver(Alert(message=said, alert=EVENTS_LOST))

    def _refresh_in_background(self) -> None:
        """Read the snapshot again, unless that is already under way."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = self._spawn(self._refresh_snapshot(), "remote-snapshot")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """`work` as a task this façade holds until it ends (cancelled at close), its failure
        logged."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if isinstance(err, UserError):
            log.warning("%s: %s", task.get_name(), err.message)
        elif err is not None:
            log.error("%s failed", task.get_name(), exc_info=err)

    def subscribe(self) -> Subscription:
        """The server's live events from now on (as its token may see them)."""
        return self._events.subscribe()

    # ------------------------------------------------------------------ answered here

    def now(self) -> datetime:
        """This machine's clock (the server's deadlines are absolute times)."""
        return self.clock.now()

    def today(self) -> date:
        return costs.local_date(self.clock.now(), None)

    def credentials(self) -> tuple[list[CredentialStatus], str | None]:
        """Which providers have a credential on the server (never the values)."""
        return list(self.snapshot.credentials), None

    def provider_names(self) -> tuple[str, ...]:
        return self.snapshot.provider_names

    def provider_info(self, name: str) -> ProviderInfo:
        """What the server knows of provider `name`."""
        try:
            return self.snapshot.providers[name]
        except KeyError:
            known = ", ".join(self.snapshot.provider_names)
            raise UserError(
                f"unknown provider {name!r}; one of {known}", field="provider"
            ) from None

    def configured_providers(self) -> list[str]:
        """The providers with a credential on the server, as of the last snapshot."""
        return list(self.snapshot.configured)

    def provision_budget(self, provider: str) -> timedelta:
        return timedelta(seconds=self.snapshot.provision_budgets_s[provider])

    def provider_report(self, provider: str) -> ProviderReport:
        """The server's menu of `provider`, as of its last refresh this process heard of."""
        return self.snapshot.reports[provider]

    def refresh_offers_in_background(self) -> None:
        """Ask the server for a fresh menu, without waiting for it here (a failure is logged)."""
        self._spawn(self._call("offers", refresh=True), "remote-refresh-offers")

    def node_sample(self, session_id: str) -> tuple[datetime, NodeSample] | None:
        """The server's latest node reading of a session, as of its last view read here."""
        return self._samples.get(session_id)

    @property
    def supervising(self) -> bool:
        """Never: the server supervises."""
        return False

    def start_supervisor(self) -> None:
        """Nothing to start: the server supervises."""

    async def supervision(self) -> tuple[bool, Lease | None]:
        """Not this process: the server's lease (None when no supervisor runs there)."""
        return False, await self.supervisor_lease()

    async def import_benchmarks(self, path: Path) -> tuple[int, int]:
        """Refused: the file is read where the measurements are kept, on the server."""
        raise UserError(
            f"importing benchmarks changes the server's data: run 'gpushop benchmarks import "
            f"{path.name}' on the server, not with --remote",
            field="path",
        )

    # ------------------------------------------------------------------ views

    def _localized(self, view: SessionView) -> SessionView:
        """A server view with its node reading remembered and the ssh line this machine
        would run (the key fetched into the local keys dir)."""
        if view.node is not None:
            self._samples[view.session.id] = (view.node.at, view.node.sample)
        if view.ssh_command is None:
            return view
        local = self._local_copy(view.session)
        line = access.ssh_words(local, self._known_hosts(view.session.id))
        return replace(view, ssh_command=shlex.join(line))

    def _key_dir(self) -> Path:
        return self.settings.paths.keys_dir / "remote"

    def _local_name(self, session_id: str) -> str:
        """A server's session id, refused unless it has the form of one: it names local files."""
        try:
            return SESSION_ID.validate_python(session_id)
        except ValueError:
            raise RemoteUnavailable(
                f"the gpushop server at {self._url} answered {session_id[:40]!r}, which is not a "
                "session id"
            ) from None

    def _key_file(self, session_id: str) -> Path:
        return self._key_dir() / f"{self._local_name(session_id)}.key"

    def _known_hosts(self, session_id: str) -> Path:
        return self._key_dir() / f"{self._local_name(session_id)}.known_hosts"

    def _private_dir(self) -> None:
        """The local dir of fetched keys, made (or made again) private to this user."""
        self._key_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
        self._key_dir().chmod(0o700)

    def _local_copy(self, session: Session) -> Session:
        return session.model_copy(update={"key_path": str(self._key_file(session.id))})

    async def _with_key(self, session_id: str) -> Session:
        """The session with its key fetched from the server into a local `0600` file."""
        session = await self.session(session_id)
        path = await self.key_path(session.id)
        return session.model_copy(update={"key_path": str(path)})

    # ------------------------------------------------------------------ calls

    async def audit_log(
        self,
        session_id: str | None = None,
        *,
        min_severity: Severity | None = None,
        consumer: str | None = None,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[AuditEvent]:
        return cast(
            list[AuditEvent],
            await self._call(
                "audit_log",
                session_id=session_id,
                min_severity=min_severity,
                consumer=consumer,
                after_id=after_id,
                limit=min(limit, MOST_ROWS),
            ),
        )

    async def offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryView:
        return cast(
            InventoryView,
            await self._call("offers", query=query, refresh=refresh, whole_menu=whole_menu),
        )

    async def cached_offers(self, query: OfferQuery | None = None) -> InventoryView:
        return cast(InventoryView, await self._call("cached_offers", query=query))

    async def compare_offers(
        self, query: OfferQuery | None = None, *, refresh: bool = False, whole_menu: bool = True
    ) -> InventoryComparison:
        return cast(
            InventoryComparison,
            await self._call("compare_offers", query=query, refresh=refresh, whole_menu=whole_menu),
        )

    async def cached_comparison(self, query: OfferQuery | None = None) -> InventoryComparison:
        return cast(InventoryComparison, await self._call("cached_comparison", query=query))

    async def find_offer(self, offer_id: str) -> Offer | None:
        return cast(Offer | None, await self._call("find_offer", offer_id=offer_id))

    async def benchmark_models(self) -> set[str]:
        return cast(set[str], await self._call("benchmark_models"))

    async def parse_query(self, text: str) -> OfferQuery:
        return cast(OfferQuery, await self._call("parse_query", text=text))

    async def check_providers(self) -> list[ProviderCheck]:
        """The server's providers, checked from the server (operator token only)."""
        return cast("list[ProviderCheck]", await self._call("check_providers"))

    async def provision(self, request: ProvisionRequest) -> Session:
        return (await self.rent(request)).session

    async def rent(self, request: ProvisionRequest) -> Rental:
        return cast(Rental, await self._call("rent", request=request))

    async def session_id(self, given: str) -> str:
        return cast(str, await self._call("session_id", given=given))

    async def session(self, session_id: str) -> Session:
        return cast(Session, await self._call("session", session_id=session_id))

    async def sessions(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[Session]:
        return cast(
            list[Session],
            await self._call(
                "sessions",
                consumer=consumer,
                status=status,
                open_only=open_only,
                provider=provider,
                limit=limit,
            ),
        )

    async def session_view(self, session_id: str) -> SessionView:
        view = cast(SessionView, await self._call("session_view", session_id=session_id))
        return self._localized(view)

    async def session_views(
        self,
        *,
        consumer: str | None = None,
        status: SessionStatus | None = None,
        open_only: bool = False,
        provider: str | None = None,
        limit: int | None = None,
    ) -> list[SessionView]:
        views = cast(
            list[SessionView],
            await self._call(
                "session_views",
                consumer=consumer,
                status=status,
                open_only=open_only,
                provider=provider,
                limit=limit,
            ),
        )
        return [self._localized(view) for view in views]

    async def view_of(self, session: Session) -> SessionView:
        return self._localized(cast(SessionView, await self._call("view_of", session=session)))

    async def done(self, session_id: str) -> Session:
        return cast(Session, await self._call("done", session_id=session_id))

    async def delete(self, session_id: str) -> Session:
        return cast(Session, await self._call("delete", session_id=session_id))

    async def stop(self, session_id: str, *, by: str, keep_days: float | None = None) -> Session:
        return cast(
            Session, await self._call("stop", session_id=session_id, by=by, keep_days=keep_days)
        )

    async def start(self, session_id: str, *, by: str, hours: float | None = None) -> Session:
        return cast(Session, await self._call("start", session_id=session_id, by=by, hours=hours))

    async def extend(
        self, session_id: str, hours: float, override_reason: str | None = None
    ) -> Session:
        return cast(
            Session,
            await self._call(
                "extend", session_id=session_id, hours=hours, override_reason=override_reason
            ),
        )

    async def touch(self, session_id: str) -> Session:
        return cast(Session, await self._call("touch", session_id=session_id))

    async def wait_settled(self, session_id: str, timeout_s: float) -> Session:
        """Waits on the server (the call's own time limit is `timeout_s` and a margin)."""
        return cast(
            Session,
            await self._call(
                "wait_settled",
                wait_s=timeout_s + CALL_TIMEOUT_S,
                session_id=session_id,
                timeout_s=timeout_s,
            ),
        )

    async def billing_now(self) -> list[Billing]:
        return cast(list[Billing], await self._call("billing_now"))

    async def cost_report(
        self,
        first: date | None = None,
        last: date | None = None,
        *,
        consumer: str | None = None,
        session_id: str | None = None,
    ) -> CostReport:
        return cast(
            CostReport,
            await self._call(
                "cost_report", first=first, last=last, consumer=consumer, session_id=session_id
            ),
        )

    async def list_budgets(self) -> list[Budget]:
        return cast(list[Budget], await self._call("list_budgets"))

    async def set_budget(self, budget: Budget) -> Budget:
        return cast(Budget, await self._call("set_budget", budget=budget))

    async def delete_budget(self, budget_id: int) -> None:
        await self._call("delete_budget", budget_id=budget_id)

    async def budget_usage(self) -> list[Usage]:
        return cast(list[Usage], await self._call("budget_usage"))

    async def preview_budgets(self, consumer: str, offer: Offer, hours: float) -> list[BudgetCheck]:
        return cast(
            list[BudgetCheck],
            await self._call("preview_budgets", consumer=consumer, offer=offer, hours=hours),
        )

    async def supervisor_lease(self) -> Lease | None:
        return cast(Lease | None, await self._call("supervisor_lease"))

    async def reconcile_once(self) -> PassReport | None:
        """One supervisor pass on the server (None: its own supervisor holds the lease)."""
        return cast(PassReport | None, await self._call("reconcile_once"))

    async def cleanup_orphans(
        self,
        provider: str | None = None,
        *,
        execute: bool = False,
        include_live: bool = False,
        all_installs: bool = False,
        instance_id: str | None = None,
    ) -> tuple[list[OrphanRow], list[str]]:
        """The server's providers' instances (operator token only); see `Shopper`."""
        return cast(
            "tuple[list[OrphanRow], list[str]]",
            await self._call(
                "cleanup_orphans",
                provider=provider,
                execute=execute,
                include_live=include_live,
                all_installs=all_installs,
                instance_id=instance_id,
            ),
        )

    async def benchmark_measurements(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[Benchmark]:
        return cast(
            list[Benchmark], await self._call("benchmark_measurements", model=model, gpu=gpu)
        )

    async def rank_benchmarks(
        self,
        order: RankOrder,
        model: str | None = None,
        gpu: str | None = None,
        min_tps: float | None = None,
    ) -> list[Ranked]:
        return cast(
            list[Ranked],
            await self._call("rank_benchmarks", order=order, model=model, gpu=gpu, min_tps=min_tps),
        )

    async def recommend_gpus(
        self, model: str | None = None, gpu: str | None = None
    ) -> list[GpuSummary]:
        return cast(list[GpuSummary], await self._call("recommend_gpus", model=model, gpu=gpu))

    # ------------------------------------------------------------------ access

    async def key_path(self, session_id: str) -> Path:
        """The session's private key, fetched from the server into a local `0600` file."""
        session_id = await self.session_id(session_id)
        path = self._key_file(session_id)
        key = await self._request(
            "GET",
            f"/api/v1/sessions/{session_id}/key",
            lambda answer: _text(answer, "ssh_private_key"),
        )
        await asyncio.to_thread(self._private_dir)
        await asyncio.to_thread(node_keys.write_secret, path, key)
        return path

    async def ssh_argv(self, session_id: str, *command: str) -> list[str]:
        """The OpenSSH command line to the node, with the key fetched from the server."""
        session = await self._with_key(session_id)
        return await access.ssh_argv(session, self._known_hosts(session.id), command)

    async def transfer(
        self,
        session_id: str,
        direction: Literal["upload", "download"],
        local: Path,
        remote: str,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """SFTP straight to the node, with the key fetched from the server."""
        session = await self._with_key(session_id)
        timeout_s = self.settings.ssh_connect_timeout_s
        return await access.transfer(session, timeout_s, direction, local, remote, progress)

    async def endpoint(self, session_id: str) -> Endpoint:
        session_id = await self.session_id(session_id)

        def read(answer: Any) -> Endpoint:
            public = answer.get("endpoint_public")
            return Endpoint(
                session_id=session_id,
                url=_text(answer, "endpoint"),
                token=_text(answer, "token"),
                public_url=None if public is None else _text(answer, "endpoint_public"),
            )

        return await self._request("GET", f"/api/v1/sessions/{session_id}/endpoint", read)

    @contextlib.asynccontextmanager
    async def tunnel(self, session_id: str, local_port: int = 0) -> AsyncIterator[Tunnel]:
        """A local port forwarded straight to the node, with the key fetched from the server."""
        await self.endpoint(session_id)
        session = await self._with_key(session_id)
        async with access.tunnel(
            session, self.settings.ssh_connect_timeout_s, local_port
        ) as opened:
            yield opened
