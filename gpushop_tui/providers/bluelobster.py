"""Blue Lobster (bluelobster.ai): fixed-price dedicated VMs, launched through asynchronous tasks.

provider-apis.md §3. Quirks handled here: prices are integer cents; `gpu_model` is a string or a
list and the API has no VRAM field (`memory_gib` is system RAM), so VRAM comes from the GPU
catalogue; the launch answer is flat (BL-003) and the launch is only done when its task says
COMPLETED (a task that times out is a failure, never a success); the SSH key must not end in a
newline (BL-004) and the name must match the provider's regex (BL-002); `power_status` is often
null on running instances (BL-008), so running is inferred from the IP, except that the IP
lingers for a while after a delete, so instances this adapter asked to delete read "deleting".
"""

from __future__ import annotations

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
    OfferGone,
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
    timestamp_of,
    type_and_region,
)
from gpushop_tui.providers.gpus import lookup_gpu

log = logging.getLogger(__name__)

PROVIDER: ProviderName = "bluelobster"
TASK_POLL_S = 3.0
"""How often a launch task is polled (both known clients use 3 s)."""
TASK_TIMEOUT_S = 300.0
"""How long a launch task may take before the create fails (observed: 63-114 s)."""
TEMPLATE = "UBUNTU-22-04-NV"
USERNAME = "ubuntu"
SSH_PORT = 22
NAME_MAX = 64
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]$")
"""The provider's rule for instance names."""
TASK_DONE = "COMPLETED"
TASK_FAILED = ("FAILED", "CANCELLED")

_NOT_NAME = re.compile(r"[^a-zA-Z0-9-]+")
_STATED_VRAM = re.compile(r"\((\d+(?:\.\d+)?)\s*GB\)", re.I)
_COUNT_PREFIX = re.compile(r"^\s*\d+\s*x\s*", re.I)


# --------------------------------------------------------------------------- pure parsing


def sanitize_name(label: str) -> str:
    """`label` made valid for Blue Lobster's `name`: letters, digits, inner '-', 2-64 chars.

    Our labels (`label_for`) are already valid and come back unchanged, so `ours()` still
    recognises them; anything else has each run of other characters turned into one '-',
    its ends trimmed of '-', and is cut to 64 characters (BL-002).
    """
    name = _NOT_NAME.sub("-", label).strip("-")[:NAME_MAX].rstrip("-")
    if len(name) < 2:
        name = f"gpushop-{name}".rstrip("-")
    return name


@dataclass(frozen=True)
class ErrorInfo:
    """What an error body says, whichever of the provider's shapes it came in."""

    code: str | None
    message: str | None
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def text(self) -> str:
        """One line: the message, then each field's complaint."""
        parts = [self.message] if self.message else []
        parts += [f"{name}: {complaint}" for name, complaint in self.fields]
        return "; ".join(parts) or "no reason given"


def parse_error(body: Any) -> ErrorInfo:
    """Read `{"detail":{"error","message"}}`, `{"error","message","errors":[{field,message}]}`,
    and FastAPI's own `{"detail":[{"loc","msg"}]}`; anything else gives an empty `ErrorInfo`."""
    if not isinstance(body, dict):
        return ErrorInfo(None, None)
    detail = body.get("detail")
    inner = detail if isinstance(detail, dict) else body
    message = text_of(detail) or text_of(inner.get("message"))
    errors = body.get("errors") or (detail if isinstance(detail, list) else inner.get("errors"))
    fields: list[tuple[str, str]] = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, dict):
            continue
        where = error.get("field") or error.get("loc")
        if isinstance(where, list):  # FastAPI: ["body", "ssh_key"]
            where = ".".join(str(p) for p in where if p != "body")
        complaint = text_of(error.get("message")) or text_of(error.get("msg")) or "invalid"
        fields.append((str(where or "request"), complaint))
    return ErrorInfo(text_of(inner.get("error")), message, tuple(fields))


def normalize_offers(record: dict[str, Any], fetched_at: datetime) -> list[Offer]:
    """The offers of one `/instances/available` record: one per region with capacity.

    CPU-only types (`gpus` 0) and sold-out types (no region with capacity) give none.
    Raises KeyError/TypeError/ValueError on a record without the fields an offer needs.
    """
    itype = record["instance_type"]
    specs = itype["specs"]
    gpus = int(specs.get("gpus") or 0)
    if gpus <= 0:
        return []
    description = str(itype.get("description") or "")
    spelling = specs.get("gpu_model") or _COUNT_PREFIX.sub("", _STATED_VRAM.sub("", description))
    gpu = lookup_gpu(spelling)
    if not gpu.known:  # the description's "(24 GB)" is the only VRAM figure the API gives
        stated = _STATED_VRAM.search(description)
        gpu = lookup_gpu(spelling, float(stated.group(1)) if stated else None)
    name = str(itype.get("name") or record["id"])
    price = int(itype["price_cents_per_hour"]) / 100
    offers = []
    for region in record.get("regions_with_capacity_available") or []:
        location = region.get("location") or {}
        offers.append(
            Offer(
                id=f"{PROVIDER}:{name}:{region['name']}",
                provider=PROVIDER,
                gpu_name=gpu.name,
                gpu_count=gpus,
                vram_gb=gpu.vram_gb,
                price_per_hour=price,
                vcpus=specs.get("vcpus"),
                ram_gb=specs.get("memory_gib"),
                disk_gb=specs.get("storage_gib"),
                region=_region_text(region),
                country=_country(location.get("country")),
                reliability=None,
                fetched_at=fetched_at,
                raw=record,
            )
        )
    return offers


def parse_offer_id(offer_id: str) -> tuple[str, str]:
    """(instance type, region) from an offer id `bluelobster:<instance type>:<region>`."""
    return type_and_region(offer_id, PROVIDER, "Blue Lobster")


def parse_launch(body: Any) -> tuple[str | None, str | None]:
    """(task id, instance uuid) from a launch answer, in any shape a known client has met.

    Live it is flat `{task_id, vm_uuid, assigned_ip, status}`; the Terraform client also takes
    `instance_id`, `vm_uuids`/`instance_ids` lists, a nested `data` object and `task.{id}`.
    """
    if not isinstance(body, dict):
        return None, None
    task_id: str | None = None
    vm: str | None = None
    for layer in (body, body.get("data")):
        if not isinstance(layer, dict):
            continue
        task = layer.get("task")
        task_id = task_id or text_of(layer.get("task_id"))
        if isinstance(task, dict):
            task_id = task_id or text_of(task.get("id")) or text_of(task.get("task_id"))
        vm = vm or text_of(layer.get("vm_uuid")) or text_of(layer.get("instance_id"))
        vm = vm or _first(layer.get("vm_uuids")) or _first(layer.get("instance_ids"))
    return task_id, vm


def parse_task(body: Any) -> tuple[str, str, str | None]:
    """(status in capitals, message, instance uuid if named) of a `/tasks/{id}` record."""
    record = _unwrap(body)
    if record is None or not text_of(record.get("status")):
        raise ValueError("a task record without a status")
    vm = None
    for where in ("params", "result"):
        part = record.get(where)
        if isinstance(part, dict):
            vm = vm or text_of(part.get("vm_uuid"))
    return str(record["status"]).strip().upper(), text_of(record.get("message")) or "", vm


def task_failure(task_id: str, status: str, message: str, instance_id: str | None) -> ProviderError:
    """The error for a launch task that ended FAILED or CANCELLED; capacity gets its own class."""
    text = f"launch task {task_id} ended {status}: {message or 'no reason given'}"
    if "capacity" in message.lower():
        return CapacityError(PROVIDER, text, instance_id=instance_id)
    return ProviderError(PROVIDER, text, instance_id=instance_id)


def parse_instance(record: Any, *, deleting: bool = False) -> InstanceStatus:
    """An instance object as an `InstanceStatus`.

    `power_status` is kept (lowercased) when set; "stopped" is a VM shut down with its disk
    kept. When it is null (BL-008) an instance with an IP is running. `deleting` (we asked for
    a delete) wins over both, since the IP lingers after a delete: such an instance is
    "deleting", not running, with no SSH address.
    Raises ValueError on a record without a uuid.
    """
    if not isinstance(record, dict) or not text_of(record.get("uuid")):
        raise ValueError("an instance record without a uuid")
    power = text_of(record.get("power_status"))
    ip = text_of(record.get("ip_address"))
    if deleting:
        state, running = "deleting", False
    elif power:
        state, running = power.lower(), power.lower() == "running"
    elif ip:
        state, running = "running", True
    else:
        state, running = "provisioning", False
    port = record.get("ssh_port")  # simulator only: the real API always means port 22
    has_port = isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536
    cents = record.get("price_cents_per_hour")
    return InstanceStatus(
        provider=PROVIDER,
        instance_id=str(record["uuid"]),
        label=text_of(record.get("name")),
        state=state,
        running=running,
        stopped=state == "stopped",
        ssh_host=None if deleting else ip,
        ssh_port=None if deleting or not ip else (port if has_port else SSH_PORT),
        price_per_hour=cents / 100 if isinstance(cents, int | float) and cents >= 0 else None,
        started_at=timestamp_of(record.get("created_at")),
        raw=record,
    )


def ssh_user(record: dict[str, Any]) -> str:
    """The login user of an instance object: `vm_username`, else the provider default."""
    return text_of(record.get("vm_username")) or USERNAME


def instance_records(body: Any) -> list[dict[str, Any]]:
    """The instance objects of a `GET /instances` answer: a plain array (live), or one inside
    `data` or `instances`. Raises ValueError on any other shape."""
    items = body.get("data", body.get("instances")) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ValueError("the instance list is not a list of objects")
    return items


def _first(value: Any) -> str | None:
    return text_of(value[0]) if isinstance(value, list) and value else None


def _unwrap(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    return data if "status" not in body and isinstance(data, dict) else body


def _region_text(region: dict[str, Any]) -> str:
    location = region.get("location") or {}
    place = text_of(region.get("description")) or text_of(location.get("city")) or region["name"]
    state = text_of(location.get("state"))
    return f"{place}, {state}" if state and state not in place else place


def _country(value: Any) -> str:
    code = text_of(value)
    if code and len(code) == 2:
        return code.upper()
    return "US"  # the provider runs US sites only and spells it "USA"


# --------------------------------------------------------------------------- the adapter


class BlueLobster(Provider):
    """The Blue Lobster API (`X-API-Key`), base `https://api.bluelobster.ai/api/v1`."""

    INFO: ClassVar[ProviderInfo] = ProviderInfo(
        name=PROVIDER,
        display_name="Blue Lobster",
        credential_env=("BLUELOBSTER_API_KEY",),
        default_base_url="https://api.bluelobster.ai/api/v1",
        base_url_env="BLUELOBSTER_API_URL",
        provision_budget_s=2400.0,
        first_ssh_budget_s=60.0,
        capabilities=Capabilities(
            can_stop=True, provider_ttl=False, spot=False, instance_scoped_key=False
        ),
    )
    """Fixed-price VMs (no bids). The budget is long because a driver rebuild after first boot
    can hold dpkg for up to 30 min (§3.6)."""
    name: ClassVar[ProviderName] = PROVIDER
    readiness: ClassVar[Readiness] = Readiness(
        ssh_user=USERNAME, initial_delay_s=INFO.first_ssh_budget_s, probe_dpkg_and_smi=True
    )
    rate: ClassVar[RateLimit] = RateLimit(per_second=2.0, burst=3)
    can_stop: ClassVar[bool] = INFO.capabilities.can_stop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deleting: set[str] = set()
        """Uuids we asked to delete: their lingering IP must not read as running."""

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"X-API-Key": key, "Accept": "application/json"}

    async def list_offers(self, query: OfferQuery | None = None) -> OfferList:
        """Every GPU type and region with capacity. `GET /instances/available` has no filters and
        no paging (provider-apis.md §3.2): `query` is unused and the answer is never capped."""
        response = await self.http.request(
            "GET", "/instances/available", priority=Priority.BACKGROUND
        )
        body = self._ok(response, "listing offers")
        records = body.get("data") if isinstance(body, dict) else body
        if not isinstance(records, list):
            raise ProviderBug(PROVIDER, "the offer list has no `data` array")
        fetched_at = self.http.clock.now()
        offers: list[Offer] = []
        for record in records:
            try:
                offers += normalize_offers(record, fetched_at)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                log.warning("bluelobster: skipped an offer record we cannot read: %s", err)
        return OfferList(offers)

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        """Launch the offer's type in its region, then follow the launch task to COMPLETED.

        A 409 `no_capacity` is `OfferGone`: the inventory said this type and region had
        capacity, so that listing is stale and another offer should be picked. `spec.image` and
        `spec.onstart` have no Blue Lobster equivalent (VMs boot from `TEMPLATE`) and are unused.
        """
        try:
            itype, region = parse_offer_id(offer.id)
        except ValueError as err:
            raise ProviderError(PROVIDER, str(err)) from err
        name = sanitize_name(spec.label)
        body = {
            "region": region,
            "instance_type": itype,
            "ssh_key": spec.ssh_public_key.strip(),
            "name": name,
            "username": USERNAME,
            "template_name": TEMPLATE,
        }
        response = await self.http.request(
            "POST", "/instances/launch-instance", json=body, idempotent=False
        )
        if response.status_code == 409:
            info = parse_error(json_or_none(response))
            if info.code == "no_capacity" or "capacity" in info.text.lower():
                raise OfferGone(PROVIDER, f"no capacity left for {itype} in {region}: {info.text}")
        if not response.is_success:
            raise _error(response, "launching an instance")
        try:
            launched = json_of(PROVIDER, response)
        except ProviderBug as err:  # it answered 2xx: the instance may well exist
            raise TransientError(PROVIDER, err.message, ambiguous=True) from err
        task_id, vm = parse_launch(launched)
        if vm is not None and on_instance is not None:
            await on_instance(vm)
        if task_id is None:
            if vm is None:
                raise TransientError(
                    PROVIDER, "the launch answer named no task and no instance", ambiguous=True
                )
            log.warning("bluelobster: launch of %s named no task; not waiting for it", vm)
        else:
            vm = await self._follow_launch(task_id, vm, on_instance)
        return InstanceRef(PROVIDER, vm, name)

    async def _follow_launch(
        self, task_id: str, vm: str | None, on_instance: InstanceIdSink | None
    ) -> str:
        """Poll the launch task until COMPLETED (returns the uuid); anything else raises."""
        clock = self.http.clock
        start = clock.monotonic()
        while True:
            try:
                status, message, named = await self._task(task_id)
            except ProviderError as err:
                if err.retryable and clock.monotonic() - start < TASK_TIMEOUT_S:
                    log.info("bluelobster: polling task %s failed, will retry: %s", task_id, err)
                elif isinstance(err, AuthError):
                    err.instance_id = err.instance_id or vm
                    raise
                else:
                    raise TransientError(
                        PROVIDER,
                        f"cannot follow launch task {task_id}: {err.message}",
                        ambiguous=True,
                        instance_id=vm,
                    ) from err
            else:
                if vm is None and named is not None:
                    vm = named
                    if on_instance is not None:
                        await on_instance(vm)
                if status == TASK_DONE:
                    if vm is None:
                        raise TransientError(
                            PROVIDER, f"launch task {task_id} named no instance", ambiguous=True
                        )
                    return vm
                if status in TASK_FAILED:
                    raise task_failure(task_id, status, message, vm)
            if clock.monotonic() - start >= TASK_TIMEOUT_S:
                raise TransientError(
                    PROVIDER,
                    f"launch task {task_id} did not complete within {TASK_TIMEOUT_S:.0f} s",
                    ambiguous=True,
                    instance_id=vm,
                )
            await clock.sleep(TASK_POLL_S)

    async def _task(self, task_id: str) -> tuple[str, str, str | None]:
        response = await self.http.request("GET", f"/tasks/{quote(task_id, safe='')}")
        body = self._ok(response, f"reading task {task_id}")
        try:
            return parse_task(body)
        except ValueError as err:
            raise ProviderBug(PROVIDER, f"task {task_id}: {err}") from err

    async def get(self, instance_id: str) -> InstanceStatus | None:
        response = await self.http.request(
            "GET", f"/instances/{quote(instance_id, safe='')}", priority=Priority.URGENT
        )
        if response.status_code == 404:
            self._deleting.discard(instance_id)
            return None
        body = _unwrap(self._ok(response, f"reading instance {instance_id}"))
        return self._status(body)

    async def list_labelled(self) -> list[InstanceStatus]:
        response = await self.http.request("GET", "/instances", priority=Priority.URGENT)
        body = self._ok(response, "listing instances")
        try:
            records = instance_records(body)
        except ValueError as err:
            raise ProviderBug(PROVIDER, str(err)) from err
        return [self._status(r) for r in records if parse_label(text_of(r.get("name")))]

    async def destroy(self, instance_id: str) -> None:
        """DELETE the instance; a 404 (already gone, or a delete already under way) is fine."""
        response = await self.http.request(
            "DELETE", f"/instances/{quote(instance_id, safe='')}", priority=Priority.URGENT
        )
        if response.is_success or response.status_code == 404:
            self._deleting.add(instance_id)
            return
        raise _error(response, f"deleting instance {instance_id}")

    async def stop(self, instance_id: str) -> None:
        """Shut the VM down (`POST /instances/{uuid}/shutdown`), keeping its disk."""
        await self._power(instance_id, "shutdown")

    async def start(self, instance_id: str) -> None:
        """Power a stopped VM on again (`POST /instances/{uuid}/power-on`)."""
        await self._power(instance_id, "power-on")

    async def _power(self, instance_id: str, action: str) -> None:
        response = await self.http.request(
            "POST", f"/instances/{quote(instance_id, safe='')}/{action}"
        )
        if not response.is_success:
            raise _error(response, f"{action} of instance {instance_id}")

    async def check(self) -> None:
        response = await self.http.request("GET", "/instances", priority=Priority.URGENT)
        self._ok(response, "checking the API key")

    def _ok(self, response: httpx.Response, what: str) -> Any:
        """The JSON body of a 2xx answer; any other answer raises its mapped error."""
        if not response.is_success:
            raise _error(response, what)
        return json_of(PROVIDER, response)

    def _status(self, record: Any) -> InstanceStatus:
        try:
            uuid = record.get("uuid") if isinstance(record, dict) else None
            return parse_instance(record, deleting=uuid in self._deleting)
        except ValueError as err:
            raise ProviderBug(PROVIDER, str(err)) from err


def _error(response: httpx.Response, what: str) -> ProviderError:
    """The error for a non-2xx answer (429 and 5xx never get here: the HTTP layer owns them)."""
    status = response.status_code
    info = parse_error(json_or_none(response))
    message = f"{what} failed with HTTP {status}: {info.text}"
    if status in (401, 403):
        return AuthError(PROVIDER, message, status=status)
    if status == 404:
        return NotFound(PROVIDER, message, status=status)
    if status == 409 and info.code == "no_capacity":
        return CapacityError(PROVIDER, message, status=status)
    return ProviderError(PROVIDER, message, status=status)
