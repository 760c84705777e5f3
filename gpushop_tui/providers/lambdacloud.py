"""Lambda Cloud (cloud.lambda.ai): fixed-price on-demand VMs, in `{"data": …}` envelopes.

provider-apis.md §4. Quirks handled here:

- Offers are `GET /instance-types`, a dict keyed by type name; one offer per type and region with
  capacity. Prices are integer cents; VRAM comes from the GPU catalogue, else from the "(24 GB)"
  that `gpu_description` states.
- Errors are `{"error": {"code", "message", "suggestion"?}}` and are told apart by `code`; a 2xx
  body without `data` is a shape we do not understand, never "nothing there".
- SSH keys: a launch takes exactly one key *name* (`ssh_key_names`), registered beforehand with
  `POST /ssh-keys`. Each gpushop session has its own key pair, so the adapter registers one key
  per session, named after the session's label, just before the launch (deleting any key of that
  name first: a create retried after a crash), and `release(label)` deletes it once the instance
  is gone. A per-install key would need one private key shared on disk by every session.
- Rate limits: about 1 request/s in general, and 1 launch per 12 s. The launch spacing is timed
  from the previous launch's *answer* (see `LambdaCloud._launch`), so the general limiter's own
  hold before a request can never squeeze two launches closer than 12 s at the provider.
- Status words: `booting` (no IP yet), `active`, `unhealthy`, `terminating`, and `terminated` /
  `preempted`, which mean gone. There is no stop/start, and no instance-scoped key.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from gpushop_tui.models import InstanceStatus, Offer, OfferQuery, ProviderName
from gpushop_tui.providers.base import (
    AuthError,
    Capabilities,
    CapacityError,
    CreateSpec,
    InstanceIdSink,
    InstanceRef,
    NotFound,
    OfferList,
    Priority,
    Provider,
    ProviderBug,
    ProviderError,
    ProviderInfo,
    RateLimit,
    Readiness,
    TransientError,
    json_of,
    json_or_none,
    parse_label,
    text_of,
    type_and_region,
)
from gpushop_tui.providers.gpus import lookup_gpu

log = logging.getLogger(__name__)

PROVIDER: ProviderName = "lambda"
USERNAME = "ubuntu"
SSH_PORT = 22
NAME_MAX = 64
"""The longest instance `name` a launch accepts."""
LAUNCH_INTERVAL_S = 12.0
"""Lambda allows one launch per 12 s (5 a minute) on top of the general rate."""
RUNNING = "active"
GONE = frozenset({"terminated", "preempted"})
"""Status words of an instance that no longer exists (and no longer bills)."""

AUTH_CODES = frozenset(
    {
        "global/invalid-api-key",
        "global/account-inactive",
        "global/forbidden",
        "global/invalid-address",
    }
)
NOT_FOUND_CODES = frozenset({"global/object-does-not-exist", "global/not-found"})
GONE_CODE = "global/object-does-not-exist"
"""The one 404 code that says an instance does not exist (§4.2); `global/not-found` may be a
route that does not exist, which proves nothing about the instance."""
CAPACITY_CODES = frozenset({"instance-operations/launch/insufficient-capacity"})

_COUNTRIES = {
    "europe-central-1": "DE",
    "asia-northeast-1": "JP",
    "asia-northeast-2": "JP",
    "asia-south-1": "IN",
    "me-west-1": "IL",
}
_STATED_VRAM = re.compile(r"\s*\((\d+(?:\.\d+)?)\s*GB\b[^)]*\)", re.I)
_COUNT_PREFIX = re.compile(r"^\s*\d+\s*x\s*", re.I)


# --------------------------------------------------------------------------- pure parsing


@dataclass(frozen=True)
class ErrorInfo:
    """What an error envelope says; every field None when the body is not one."""

    code: str | None
    message: str | None
    suggestion: str | None = None

    @property
    def text(self) -> str:
        """One line: the message, the suggestion, and the code to branch on."""
        text = self.message or "no reason given"
        if self.suggestion:
            text += f" ({self.suggestion})"
        return f"{text} [{self.code}]" if self.code else text


def parse_error(body: Any) -> ErrorInfo:
    """The `{"error": {"code", "message", "suggestion"?}}` envelope of a failed call."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return ErrorInfo(None, None)
    return ErrorInfo(
        text_of(error.get("code")), text_of(error.get("message")), text_of(error.get("suggestion"))
    )


def error_for(status: int, info: ErrorInfo, what: str) -> ProviderError:
    """The taxonomy's error for a non-2xx answer, by `code` first and by status without one.

    429 and 5xx never get here (the HTTP layer owns them). Quota, invalid parameters, a file
    system in the wrong region and conflicts are plain `ProviderError`s: the request was wrong.
    """
    message = f"{what} failed with HTTP {status}: {info.text}"
    code = info.code
    if code in AUTH_CODES or (code is None and status in (401, 403)):
        return AuthError(PROVIDER, message, status=status)
    if code in NOT_FOUND_CODES or (code is None and status == 404):
        return NotFound(PROVIDER, message, status=status)
    if code in CAPACITY_CODES:
        return CapacityError(PROVIDER, message, status=status)
    return ProviderError(PROVIDER, message, status=status)


def country_of(region_name: str) -> str | None:
    """ISO country of a Lambda region name; None for a region we do not know."""
    if region_name in _COUNTRIES:
        return _COUNTRIES[region_name]
    return "US" if region_name.startswith("us-") else None


def normalize_offers(type_name: str, record: dict[str, Any], fetched_at: datetime) -> list[Offer]:
    """The offers of one `/instance-types` entry: one per region with capacity.

    CPU-only types (`gpus` 0) and sold-out types (no region with capacity) give none.
    Raises KeyError/TypeError/ValueError on an entry without the fields an offer needs.
    """
    itype = record["instance_type"]
    specs = itype["specs"]
    gpus = int(specs.get("gpus") or 0)
    if gpus <= 0:
        return []
    described = text_of(itype.get("gpu_description")) or _COUNT_PREFIX.sub(
        "", str(itype.get("description") or "")
    )
    gpu = lookup_gpu(described)
    if not gpu.known:  # "RTX 6000 (24 GB)": the stated size is the only VRAM figure there is
        stated = _STATED_VRAM.search(described)
        spelling = _STATED_VRAM.sub("", described).strip() or described
        gpu = lookup_gpu(spelling, float(stated.group(1)) if stated else None)
    name = str(itype.get("name") or type_name)
    price = int(itype["price_cents_per_hour"]) / 100
    offers = []
    for region in record.get("regions_with_capacity_available") or []:
        region_name = str(region["name"])
        offers.append(
            Offer(
                id=f"{PROVIDER}:{name}:{region_name}",
                provider=PROVIDER,
                gpu_name=gpu.name,
                gpu_count=gpus,
                vram_gb=gpu.vram_gb,
                price_per_hour=price,
                vcpus=specs.get("vcpus"),
                ram_gb=specs.get("memory_gib"),
                disk_gb=specs.get("storage_gib"),
                region=text_of(region.get("description")) or region_name,
                country=country_of(region_name),
                reliability=None,
                fetched_at=fetched_at,
                raw=record,
            )
        )
    return offers


def parse_offer_id(offer_id: str) -> tuple[str, str]:
    """(instance type, region) from an offer id `lambda:<instance type>:<region>`."""
    return type_and_region(offer_id, PROVIDER, "Lambda Cloud")


def instance_name(label: str) -> str:
    """The instance `name`, and the SSH key's name, for a session label (at most 64 chars)."""
    return label.strip()[:NAME_MAX]


def launched_id(data: Any) -> str | None:
    """The instance id in a launch answer's `data` (`{"instance_ids": [id]}`), if there is one."""
    ids = data.get("instance_ids") if isinstance(data, dict) else None
    return text_of(ids[0]) if isinstance(ids, list) and ids else None


def parse_instance(record: Any) -> InstanceStatus:
    """An instance object as an `InstanceStatus`; raises ValueError without an id or status.

    Only `active` is running, reachable at `ip` on port 22 (or the simulator's own `ssh_port`);
    a `terminated` or `preempted` instance is gone (see `is_gone`). The price is the type's.
    """
    if not isinstance(record, dict) or not text_of(record.get("id")):
        raise ValueError("an instance record without an id")
    state = text_of(record.get("status"))
    if state is None:
        raise ValueError(f"instance {record['id']} has no status")
    state = state.lower()
    running = state == RUNNING
    ip = text_of(record.get("ip")) if running else None
    port = record.get("ssh_port")  # simulator only: the real API always means port 22
    has_port = isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
    itype = record.get("instance_type")
    cents = itype.get("price_cents_per_hour") if isinstance(itype, dict) else None
    return InstanceStatus(
        provider=PROVIDER,
        instance_id=str(record["id"]),
        label=text_of(record.get("name")),
        state=state,
        running=running,
        ssh_host=ip,
        ssh_port=None if ip is None else (port if has_port else SSH_PORT),
        price_per_hour=cents / 100 if isinstance(cents, int | float) and cents >= 0 else None,
        raw=record,
    )


def is_gone(status: InstanceStatus) -> bool:
    """Whether the provider says the instance no longer exists."""
    return status.state in GONE


def _error(response: httpx.Response, what: str) -> ProviderError:
    return error_for(response.status_code, parse_error(json_or_none(response)), what)


# --------------------------------------------------------------------------- the adapter


class LambdaCloud(Provider):
    """The Lambda Cloud API (Bearer key), base `https://cloud.lambda.ai/api/v1`."""

    INFO: ClassVar[ProviderInfo] = ProviderInfo(
        name=PROVIDER,
        display_name="Lambda Cloud",
        credential_env=("LAMBDA_API_KEY",),
        default_base_url="https://cloud.lambda.ai/api/v1",
        base_url_env="LAMBDA_API_URL",
        provision_budget_s=1800.0,
        first_ssh_budget_s=300.0,
        capabilities=Capabilities(
            can_stop=False,
            provider_ttl=False,
            spot=False,
            instance_scoped_key=False,
            runs_images=False,
            node_watchdog=False,
        ),
    )
    """On-demand VMs that bill until terminated: no stop, no provider TTL, no instance key.
    Big types (8x H100) can take 25-30 min to come up, hence the provision budget."""
    name: ClassVar[ProviderName] = PROVIDER
    readiness: ClassVar[Readiness] = Readiness(
        ssh_user=USERNAME, initial_delay_s=INFO.first_ssh_budget_s, probe_dpkg_and_smi=True
    )
    rate: ClassVar[RateLimit] = RateLimit(per_second=1.0, burst=1)
    can_stop: ClassVar[bool] = INFO.capabilities.can_stop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._launching = asyncio.Lock()
        self._next_launch = float("-inf")
        """Clock time (monotonic) before which no launch may be sent."""

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    async def list_offers(self, query: OfferQuery | None = None) -> OfferList:
        """Every GPU type and region with capacity. `GET /instance-types` has no filters and no
        paging: `query` is unused and the answer is never capped."""
        response = await self.http.request("GET", "/instance-types", priority=Priority.BACKGROUND)
        types = self._data(response, "listing instance types")
        if not isinstance(types, dict):
            raise ProviderBug(PROVIDER, "the instance types are not an object keyed by name")
        fetched_at = self.http.clock.now()
        offers: list[Offer] = []
        unreadable = 0
        for type_name, record in types.items():
            try:
                offers += normalize_offers(type_name, record, fetched_at)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                log.warning("lambda: skipped instance type %r we cannot read: %s", type_name, err)
                unreadable += 1
        if types and unreadable == len(types):
            raise ProviderBug(PROVIDER, f"none of the {unreadable} instance types could be read")
        return OfferList(offers)

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        """Register the session's key, then launch the offer's type in its region.

        A launch refused outright (no capacity, invalid parameters) deletes the key again; an
        outcome we cannot tell keeps it for `release`. `spec.image` and `spec.onstart` have no
        use here (VMs boot Lambda's own image) and `disk_gb` is fixed by the type.
        """
        try:
            itype, region = parse_offer_id(offer.id)
        except ValueError as err:
            raise ProviderError(PROVIDER, str(err)) from err
        name = instance_name(spec.label)
        await self._register_key(name, spec.ssh_public_key.strip())
        body = {
            "region_name": region,
            "instance_type_name": itype,
            "ssh_key_names": [name],
            "name": name,
        }
        try:
            response = await self._launch(body)
        except ProviderError as err:
            if not (isinstance(err, TransientError) and err.ambiguous):
                await self._forget_key(name)
            raise
        if not response.is_success:
            refused = _error(response, f"launching {itype} in {region}")
            await self._forget_key(name)
            raise refused
        try:
            data = self._data(response, "launching an instance")
        except ProviderBug as err:  # it answered 2xx: the instance may well exist
            raise TransientError(PROVIDER, err.message, ambiguous=True) from err
        instance_id = launched_id(data)
        if instance_id is None:
            raise TransientError(PROVIDER, "the launch answer named no instance id", ambiguous=True)
        if on_instance is not None:
            await on_instance(instance_id)
        return InstanceRef(PROVIDER, instance_id, name)

    async def _launch(self, body: dict[str, Any]) -> httpx.Response:
        """Send one launch, at least `LAUNCH_INTERVAL_S` after the previous one was answered.

        Timing from the answer rather than from a token taken before the request matters: the
        general limiter may hold a request after the launch limiter has let it go, so a token
        bucket could let two launches reach Lambda less than 12 s apart (and get a 429).
        """
        clock = self.http.clock
        async with self._launching:
            await clock.sleep(self._next_launch - clock.monotonic())
            try:
                return await self.http.request(
                    "POST", "/instance-operations/launch", json=body, idempotent=False
                )
            finally:
                self._next_launch = clock.monotonic() + LAUNCH_INTERVAL_S

    async def _register_key(self, name: str, public_key: str) -> None:
        """Register `public_key` as `name`, replacing a key of that name left by a create that
        was cut off."""
        await self._delete_keys(name)
        response = await self.http.request(
            "POST", "/ssh-keys", json={"name": name, "public_key": public_key}
        )
        if response.status_code == 409 and await self._has_key(name, public_key):
            return  # our own POST, retried after it took effect unseen
        self._data(response, f"registering SSH key {name}")

    async def _has_key(self, name: str, public_key: str) -> bool:
        """Whether the account holds this very key under `name`."""
        return any(
            key.get("name") == name and text_of(key.get("public_key")) == public_key.strip()
            for key in await self._keys()
        )

    async def _keys(self) -> list[dict[str, Any]]:
        response = await self.http.request("GET", "/ssh-keys")
        keys = self._data(response, "listing SSH keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise ProviderBug(PROVIDER, "the SSH key list is not a list of objects")
        return keys

    async def _forget_key(self, name: str) -> None:
        """Delete the key of a launch that certainly failed; a failure here is only logged."""
        try:
            await self._delete_keys(name)
        except ProviderError as err:
            log.warning("lambda: could not delete SSH key %s after a failed launch: %s", name, err)

    async def _delete_keys(self, name: str) -> None:
        for key in await self._keys():
            if key.get("name") != name or not text_of(key.get("id")):
                continue
            response = await self.http.request(
                "DELETE", f"/ssh-keys/{quote(str(key['id']), safe='')}"
            )
            if response.status_code == 404:
                continue
            self._data(response, f"deleting SSH key {name}")

    async def release(self, label: str) -> None:
        """Delete the session's SSH key (`DELETE /ssh-keys/{id}` of the key named after
        `label`); none there is fine."""
        await self._delete_keys(instance_name(label))

    async def get(self, instance_id: str) -> InstanceStatus | None:
        """The instance, or None when Lambda says it is gone: `terminated`, `preempted`, or a
        404 whose error code says there is no such object (a bare 404 is not proof)."""
        response = await self.http.request(
            "GET", f"/instances/{quote(instance_id, safe='')}", priority=Priority.URGENT
        )
        if response.status_code == 404:
            info = parse_error(json_or_none(response))
            if info.code == GONE_CODE:
                return None
            raise ProviderBug(
                PROVIDER,
                f"reading instance {instance_id}: a 404 not saying it is gone: {info.text}",
            )
        status = self._status(self._data(response, f"reading instance {instance_id}"))
        return None if is_gone(status) else status

    async def list_labelled(self) -> list[InstanceStatus]:
        response = await self.http.request("GET", "/instances", priority=Priority.URGENT)
        records = self._data(response, "listing instances")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ProviderBug(PROVIDER, "the instance list is not a list of objects")
        statuses = [self._status(r) for r in records if parse_label(text_of(r.get("name")))]
        return [s for s in statuses if not is_gone(s)]

    async def destroy(self, instance_id: str) -> None:
        """`POST /instance-operations/terminate`; an instance Lambda does not know is gone."""
        response = await self.http.request(
            "POST",
            "/instance-operations/terminate",
            json={"instance_ids": [instance_id]},
            priority=Priority.URGENT,
        )
        if response.is_success:
            return
        err = _error(response, f"terminating instance {instance_id}")
        if not isinstance(err, NotFound):
            raise err

    async def check(self) -> None:
        response = await self.http.request("GET", "/ssh-keys", priority=Priority.URGENT)
        self._data(response, "checking the API key")

    def _data(self, response: httpx.Response, what: str) -> Any:
        """The `data` of a 2xx answer; any other answer raises its mapped error."""
        if not response.is_success:
            raise _error(response, what)
        body = json_of(PROVIDER, response)
        if not isinstance(body, dict) or "data" not in body:
            raise ProviderBug(PROVIDER, f"{what}: HTTP {response.status_code} without `data`")
        return body["data"]

    def _status(self, record: Any) -> InstanceStatus:
        try:
            return parse_instance(record)
        except ValueError as err:
            raise ProviderBug(PROVIDER, str(err)) from err
