"""The protocol every provider adapter implements, its error taxonomy, and the shared HTTP plumbing.

DESIGN.md §4. Adapters turn each provider's API into `Offer`s and `InstanceStatus`es and every
failure into one of the errors below, so the core can decide what to do without knowing which
provider spoke. The plumbing here gives each provider one httpx client, a rate limiter on which
status and destroy calls jump ahead of inventory, timeouts, and jittered backoff on transient
failures only (429, 5xx, connection errors); a request that is wrong is never retried.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import random
import re
import ssl
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, ClassVar, Self

import httpx

from gpushop_tui.clock import Clock, SystemClock
from gpushop_tui.models import InstanceStatus, Offer, OfferQuery, ProviderName

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 60.0
"""The longest `Retry-After` we honour; a larger value is treated as this."""


# --------------------------------------------------------------------------- errors


class ProviderError(Exception):
    """A provider call that did not do what was asked; the message is one redacted sentence."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.provider = provider
        self.status = status
        self.instance_id = instance_id
        """Set when an instance exists despite the error: it must be recorded and cleaned up."""
        # Imported here: secrets reads the provider registry, which imports this module.
        from gpushop_tui.secrets import redact

        self.message = redact(message)
        super().__init__(f"{provider}: {self.message}")


class AuthError(ProviderError):
    """The credential is missing, wrong or not allowed to do this."""


class RateLimited(ProviderError):
    """The provider refused the call for its rate; `until` is set when only time will help."""

    retryable = True

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = 429,
        retry_after_s: float | None = None,
        until: datetime | None = None,
    ) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after_s = retry_after_s
        self.until = until


class OfferGone(ProviderError):
    """The offer is no longer rentable (stale inventory): pick another one."""


class CapacityError(ProviderError):
    """The provider has no capacity for this right now."""


class NotFound(ProviderError):
    """The instance (or other object) does not exist at the provider."""


class TransientError(ProviderError):
    """A failure that may pass: 5xx, timeout, connection trouble.

    `ambiguous` is set when a non-idempotent request (a create) may have taken effect anyway;
    the caller must then look for the result (by label) before trying again.
    """

    retryable = True

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        ambiguous: bool = False,
        instance_id: str | None = None,
    ) -> None:
        super().__init__(provider, message, status=status, instance_id=instance_id)
        self.ambiguous = ambiguous


class ProviderBug(ProviderError):
    """The provider answered in a shape we do not understand; never read as "nothing there"."""


# --------------------------------------------------------------------------- labels

LABEL_PREFIX = "gpushop-"
_LABEL = re.compile(r"^gpushop-([a-z0-9]{4,16})-([a-z0-9]{6,32})$")


def label_for(install_id: str, session_id: str) -> str:
    """The label every instance carries, so it can be found again from the provider alone.

    Letters, digits and '-' only, at most 49 characters: within Vast's label, TensorDock's VM
    name and Blue Lobster's name rules (`^[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]$`, <= 64).
    """
    label = f"{LABEL_PREFIX}{install_id}-{session_id}"
    if not _LABEL.match(label):
        raise ValueError(f"no label from install {install_id!r}, session {session_id!r}")
    return label


def parse_label(label: str | None) -> tuple[str, str] | None:
    """(install id, session id) from one of our labels; None for anything else."""
    if not label:
        return None
    match = _LABEL.match(label.strip())
    return (match.group(1), match.group(2)) if match else None


# --------------------------------------------------------------------------- the protocol


DEFAULT_DISK_GB = 50.0
"""The disk a rental gets unless asked otherwise (and the one search prices storage for)."""


@dataclass(frozen=True)
class CreateSpec:
    """What a create call needs besides the offer."""

    label: str
    ssh_public_key: str
    image: str | None = None
    disk_gb: float = DEFAULT_DISK_GB
    onstart: str | None = None
    ports: tuple[int, ...] = ()
    """Node TCP ports to publish on the instance's public address. Only a provider that runs
    images is asked (the core decides; `InstanceStatus.ports` says where each one answers)."""
    terminate_at: datetime | None = None
    """Where the provider can end the instance by itself (`Capabilities.provider_ttl`): when
    it must, whatever becomes of us (the core passes the session's hard max)."""


@dataclass(frozen=True)
class InstanceRef:
    """What a successful create returns: the provider's id for the new instance, and the
    instance-scoped API key where the provider makes one (`Capabilities.instance_scoped_key`)."""

    provider: ProviderName
    instance_id: str
    label: str
    instance_key: str | None = field(default=None, repr=False)
    """Good for this one instance only: the node's watchdog destroys it with this key, so the
    account key never goes to the node. A secret: never logged, never in the database."""


@dataclass(frozen=True)
class Readiness:
    """How an instance of this provider becomes usable over SSH (DESIGN.md §4)."""

    ssh_user: str
    initial_delay_s: float
    """The provider's boot time after create (an adapter's is its `INFO.first_ssh_budget_s`):
    a maximum, not a sleep. SSH is probed from the start and used once it answers; until this
    has passed, a refused or unauthenticated probe means "still booting" (the key may not be
    installed yet), not a key to attach again."""
    probe_dpkg_and_smi: bool
    """Ready only once the dpkg lock is free and `nvidia-smi` answers twice, 5 s apart."""


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do beyond renting and destroying; the core and faces ask here."""

    can_stop: bool
    """Stop and start an instance, keeping its disk (the "keep" storage policy needs it)."""
    provider_ttl: bool
    """The provider itself ends an instance after a time limit we set at create."""
    spot: bool
    """The adapter lists interruptible (spot or bid) offers, not on-demand ones only."""
    instance_scoped_key: bool
    """Create answers with an API key limited to the new instance (Vast's `instance_api_key`,
    provider-apis.md §1.4), injected into the instance; our account key never goes there."""
    runs_images: bool = False
    """Instances are containers from an image the create names (Vast); otherwise a VM boots the
    provider's OS image, and a workload's image cannot be honoured."""
    node_watchdog: bool = True
    """A watchdog on the node can end the bill by itself: with the instance-scoped key, or by
    powering the VM off (which stops it billing compute). False where neither holds (a
    container cannot power off its host; a VM that bills until terminated)."""


_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9]*$")


@dataclass(frozen=True)
class ProviderInfo:
    """Everything gpushop knows of one provider outside its adapter's code: the one descriptor
    that settings, credentials, the registry and the faces read (each adapter's `INFO`)."""

    name: str
    """The key in offer ids, settings and the keyring; lowercase letters and digits, because
    env var names are made from it (GPUSHOP_<NAME>_PROVISION_BUDGET_S)."""
    display_name: str
    credential_env: tuple[str, ...]
    """Env vars that hold the credential, overriding the keyring; the first is the one named
    in advice, later ones are accepted aliases."""
    default_base_url: str
    base_url_env: str
    """Env var that points the adapter elsewhere (the simulator, in tests and the demo)."""
    provision_budget_s: float
    """Default for how long a session may take to become ready before it is failed."""
    first_ssh_budget_s: float
    """The longest boot wait after the provider says running: SSH is tried meanwhile, and a
    refusal before it has passed only means the node is still booting."""
    capabilities: Capabilities

    def __post_init__(self) -> None:
        if not _PROVIDER_NAME.match(self.name):
            raise ValueError(f"provider name {self.name!r} is not lowercase letters and digits")
        if not self.credential_env:
            raise ValueError(f"provider {self.name!r} names no credential env var")


InstanceIdSink = Callable[[str], Awaitable[None]]


class OfferList(list[Offer]):
    """A provider's offers, and whether its answer was capped (`truncated`): the provider
    holds more offers matching the search than it returned."""

    def __init__(self, offers: Iterable[Offer] = (), *, truncated: bool = False) -> None:
        super().__init__(offers)
        self.truncated = truncated


class Provider(ABC):
    """One marketplace, as the core sees it."""

    INFO: ClassVar[ProviderInfo]
    """The provider's descriptor; every adapter in the registry declares one."""
    name: ClassVar[ProviderName]
    readiness: ClassVar[Readiness]
    rate: ClassVar[RateLimit]
    """The provider's own rate limit, which we stay under."""
    final_429: ClassVar[RateLimitCheck | None] = None
    can_stop: ClassVar[bool] = False
    """Whether `stop` keeps the disk of an instance; adapters take it from `INFO`."""

    def __init__(self, http: ProviderHttp, install_id: str) -> None:
        self.http = http
        self.install_id = install_id

    @staticmethod
    @abstractmethod
    def auth_headers(key: str) -> dict[str, str]:
        """The headers that carry the credential, as the provider wants them."""

    @classmethod
    def connect(
        cls,
        base_url: str,
        key: str,
        install_id: str,
        *,
        clock: Clock | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        rate: RateLimit | None = None,
    ) -> Self:
        """The adapter with its own HTTP client, rate limit and retry policy."""
        http = ProviderHttp(
            cls.name,
            base_url,
            cls.auth_headers(key),
            clock=clock or SystemClock(),
            timeout_s=timeout_s,
            rate=rate or cls.rate,
            retry=retry or RetryPolicy(),
            final_429=cls.final_429,
        )
        return cls(http, install_id)

    def ours(self, label: str | None) -> bool:
        """Whether a label is one this installation wrote."""
        parsed = parse_label(label)
        return parsed is not None and parsed[0] == self.install_id

    @abstractmethod
    async def list_offers(self, query: OfferQuery | None = None) -> OfferList:
        """Rentable offers, normalized, and whether the provider capped its answer.

        `query` is a hint: an adapter pushes into the provider's own search what that search
        can express, so that a capped answer still holds every match. The offers may include
        some that do not match; the caller filters them again.
        """

    @abstractmethod
    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        """Rent `offer` and install the SSH key.

        `on_instance` is awaited with the provider's instance id the moment it is known, before
        any further step (key attach, task polling), so the caller can commit it. Stale offers
        raise OfferGone/CapacityError. Nothing half-succeeds silently: an outcome we cannot
        tell is `TransientError(ambiguous=True)`, and an error raised after the instance exists
        carries its `instance_id`.
        """

    @abstractmethod
    async def get(self, instance_id: str) -> InstanceStatus | None:
        """The instance now, or None only when the provider says it is gone."""

    async def list_ours(self) -> list[InstanceStatus]:
        """Every instance carrying this installation's label; raises on any doubt."""
        return [status for status in await self.list_labelled() if self.ours(status.label)]

    async def list_labelled(self) -> list[InstanceStatus]:
        """Every instance carrying any installation's gpushop label; raises on any doubt.

        What `cleanup-orphans --all-installs` lists: an install whose data directory was lost
        has a new install id, and its old instances bill on unseen by `list_ours`.
        """
        raise ProviderError(self.name, "listing instances is not supported here")

    @abstractmethod
    async def destroy(self, instance_id: str) -> None:
        """Ask for the instance to be destroyed; an instance already gone is not an error.
        Success here is a request accepted, not proof: confirm with `get` returning None."""

    @abstractmethod
    async def check(self) -> None:
        """One authenticated call that proves the key works; raises AuthError if not."""

    async def attach_key(self, instance_id: str, public_key: str) -> None:
        """Install the SSH key on an existing instance again, where that is a call of its own.

        Readiness calls it when the node refuses the key: a create cut off (kill -9, a one-shot
        that exits) between the instance id and the key attach. Providers that take the key
        in the create call itself have nothing to do.
        """
        return None

    async def stop(self, instance_id: str) -> None:
        """Stop the instance but keep its disk, where the provider can."""
        raise ProviderError(self.name, "stopping an instance is not supported here")

    def stopped_price_per_hour(self, offer: Offer) -> float:
        """What a stopped instance of this offer still bills per hour. Where the provider does
        not say, assume the full price: money paths are conservative."""
        return offer.price_per_hour

    async def start(self, instance_id: str) -> None:
        """Start a stopped instance again, where the provider can."""
        raise ProviderError(self.name, "starting an instance is not supported here")

    async def move_ttl(self, instance_id: str, at: datetime) -> None:
        """Move the provider's own time limit (`CreateSpec.terminate_at`) of an instance."""
        raise ProviderError(self.name, "a provider time limit is not supported here")

    async def release(self, label: str) -> None:
        """Remove what the adapter registered at the provider for the instance labelled
        `label` (Lambda's per-session SSH key), once that instance is confirmed gone. Nothing
        to do for most providers; an error is the caller's to log, never to block a close."""
        return None

    async def balance(self) -> float | None:
        """The account's remaining credit in USD, where the provider reports it."""
        return None

    async def aclose(self) -> None:
        await self.http.aclose()


# --------------------------------------------------------------------------- rate limiting


class Priority(IntEnum):
    """Who goes first when the rate limit bites: money-critical calls before the menu."""

    URGENT = 0  # status and destroy
    NORMAL = 1  # create, label, stop/start
    BACKGROUND = 2  # inventory


TOKEN_EPSILON = 1e-9
"""A token short of whole by less than this is whole: a refill computed in floating point can
fall short by a rounding error, and the wait for the rest (~1e-17 s) would not move a clock."""


class RateLimiter:
    """A token bucket on the injected clock; waiters are served by priority, then in order."""

    def __init__(self, clock: Clock, per_second: float | None, burst: int = 1) -> None:
        self._clock = clock
        self._rate = per_second
        self._burst = max(1, burst)
        self._tokens = float(self._burst)
        self._stamp = clock.monotonic()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._pump: asyncio.Task[None] | None = None

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def acquire(self, priority: Priority = Priority.NORMAL) -> None:
        """Wait for a token."""
        if self._rate is None:
            return
        self._refill()
        if self._tokens >= 1 and not self._waiters:
            self._tokens -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (int(priority), next(self._seq), future))
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._serve())
        await future

    async def _serve(self) -> None:
        assert self._rate is not None
        while self._waiters:
            if self._waiters[0][2].done():  # its caller gave up
                heapq.heappop(self._waiters)
                continue
            self._refill()
            if self._tokens >= 1 - TOKEN_EPSILON:
                self._tokens = max(0.0, self._tokens - 1)
                heapq.heappop(self._waiters)[2].set_result(None)
                continue
            await self._clock.sleep((1 - self._tokens) / self._rate)


# --------------------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff for transient failures only."""

    attempts: int = 4
    base_s: float = 0.5
    max_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `attempt` (1-based), jittered by ±50 %."""
        return min(self.max_s, self.base_s * 2.0 ** (attempt - 1)) * rng.uniform(0.5, 1.5)


@dataclass(frozen=True)
class RateLimit:
    per_second: float | None
    burst: int = 1


RateLimitCheck = Callable[[httpx.Response, datetime], RateLimited | None]
"""Adapter hook, given the answer and the time now: a 429 that must not be retried (e.g. a daily
quota, over until midnight) becomes an error at once."""


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The one TLS context of every provider client (httpx's defaults: certifi or SSL_CERT_FILE).

    Each httpx client would otherwise load the CA bundle into a context of its own, ~20 ms apiece
    on the one-shot CLI's path to its first request; a context may serve any number of clients.
    """
    return httpx.create_ssl_context()


@dataclass
class ProviderHttp:
    """One provider's HTTP client: auth headers, rate limit, timeouts and transient retries."""

    provider: ProviderName
    base_url: str
    headers: Mapping[str, str]
    clock: Clock = field(default_factory=SystemClock)
    timeout_s: float = 30.0
    rate: RateLimit = field(default_factory=lambda: RateLimit(None))
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    final_429: RateLimitCheck | None = None
    transport: httpx.AsyncBaseTransport | None = None

    def __post_init__(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.base_url.rstrip("/"),
            headers=dict(self.headers),
            timeout=self.timeout_s,
            transport=self.transport,
            verify=shared_tls_context(),
            follow_redirects=False,
        )
        self.limiter = RateLimiter(self.clock, self.rate.per_second, self.rate.burst)
        self._rng = random.Random()

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        priority: Priority = Priority.NORMAL,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one call, retrying only what is safe to retry; the caller reads any 4xx.

        A non-idempotent call (a create) is retried only when the provider certainly did not act
        on it: a refused connection or a 429. After a timeout or 5xx it raises
        `TransientError(ambiguous=True)` at once.
        """
        what = f"{method} {url.split('?', 1)[0]}"
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire(priority)
            last_try = attempt >= self.retry.attempts
            wait: float | None = None
            try:
                response = await self.client.request(method, url, **kwargs)
            except httpx.ConnectError as err:
                if last_try:
                    raise TransientError(self.provider, f"cannot connect ({what}): {err}") from err
            except httpx.HTTPError as err:
                reason = "timed out" if isinstance(err, httpx.TimeoutException) else str(err)
                if last_try or not idempotent:
                    raise TransientError(
                        self.provider, f"{what} failed: {reason}", ambiguous=not idempotent
                    ) from err
            else:
                if response.status_code == 429:
                    if self.final_429 is not None and (
                        final := self.final_429(response, self.clock.now())
                    ):
                        raise final
                    wait = _retry_after(response)
                    if last_try:
                        raise RateLimited(
                            self.provider,
                            f"rate limited on {what}; tried {attempt} times",
                            retry_after_s=wait,
                        )
                elif response.status_code >= 500:
                    if last_try or not idempotent:
                        raise TransientError(
                            self.provider,
                            f"{what} answered HTTP {response.status_code}",
                            status=response.status_code,
                            ambiguous=not idempotent,
                        )
                else:
                    return response
            delay = wait if wait is not None else self.retry.delay(attempt, self._rng)
            log.info("%s: %s, retry %d in %.2f s", self.provider, what, attempt, delay)
            await self.clock.sleep(delay)


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return min(RETRY_AFTER_CAP_S, max(0.0, float(raw))) if raw is not None else None
    except ValueError:
        return None


def type_and_region(offer_id: str, provider: str, display_name: str) -> tuple[str, str]:
    """(instance type, region) from an offer id `<provider>:<instance type>:<region>`, the
    shape of providers that sell instance types per region (Blue Lobster, Lambda Cloud)."""
    prefix, _, rest = offer_id.partition(":")
    itype, _, region = rest.rpartition(":")
    if prefix != provider or not itype or not region:
        raise ValueError(f"{offer_id!r} is not a {display_name} offer id")
    return itype, region


def json_or_none(response: httpx.Response) -> Any:
    """The body as JSON, or None when it is not (an error body's reason is then unknown)."""
    try:
        return response.json()
    except ValueError:
        return None


def text_of(value: Any) -> str | None:
    """A JSON string value stripped, or None when it is missing, blank or not a string."""
    return value.strip() or None if isinstance(value, str) else None


def number_of(value: Any) -> float | None:
    """A finite number from a JSON value (a number or a numeric string), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def timestamp_of(value: Any) -> datetime | None:
    """An ISO 8601 time from a JSON value, in UTC ('Z' and no zone read as UTC), else None."""
    text = text_of(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def json_of(provider: str, response: httpx.Response) -> Any:
    """The body as JSON; anything else is a `ProviderBug` (an unexpected shape, not "empty")."""
    try:
        return response.json()
    except ValueError as err:
        snippet = response.text[:120].replace("\n", " ")
        raise ProviderBug(
            provider, f"HTTP {response.status_code} with a body that is not JSON: {snippet!r}"
        ) from err
