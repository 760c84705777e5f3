"""TensorDock v2 (`dashboard.tensordock.com/api/v2`, provider-apis.md §2.1).

What this adapter knows that the API does not say:

- `GET /locations` prices the GPU alone; a VM also pays for its vCPUs, RAM and storage. One
  pure sizing rule (`size_vm`) picks those for N GPUs, and both the offer price and the create
  request use it, so the price shown is the price charged.
- An offer is one location, GPU model and GPU count; its id carries what create needs
  (`tensordock:<location id>:<v0Name>:<count>`).
- Create boots `ubuntu2204` (2404 ships no working NVIDIA driver, prior-art BUG-009) on a
  dedicated IP (`port_forwards` are silently ignored at some locations, BUG-008), and installs the
  key with cloud-init `runcmd` echo lines for `root` and `user`: the `ssh_key` field is required
  but installs nothing, and base64 `write_files` fail (BUG-002).
- Capacity problems come back as HTTP 200 with `{"status": 400, "error": "…"}`.
- `GET /instances/{id}` is not wrapped in `data`; `GET /instances` comes in two shapes; a list we
  cannot read raises, never reads as "no instances" (prior-art §9: it once ghosted sessions).
- Stop keeps the disk; a stopped VM may release its GPU (`StoppedDisassociated`), and a start
  that cannot get one back is a CapacityError ("no capacity to start …").
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

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
    number_of,
    parse_label,
    timestamp_of,
)
from gpushop_tui.providers.gpus import lookup_gpu

log = logging.getLogger(__name__)

PROVIDER: ProviderName = "tensordock"
IMAGE = "ubuntu2204"
"""Not ubuntu2404: that image has no working NVIDIA driver (prior-art BUG-009)."""
LOGIN_USER = "user"
SSH_PORT = 22

VCPUS_PER_GPU = 8
RAM_GB_PER_GPU = 32
VCPU_STEP = 2
RAM_STEP_GB = 8
MIN_STORAGE_GB = 100
STORAGE_STEP_GB = 50

GONE_STATES = frozenset({"deleted", "terminated"})
"""States in which the instance no longer exists (and no longer bills)."""
STOPPED_STATES = frozenset({"stopped", "stoppeddisassociated"})
"""States (lowercased) of a VM powered off with its disk kept; `StoppedDisassociated` has also
released its GPU, which a start must find again."""

STALE_PHRASES = (
    "no available nodes",
    "out of stock",
    "no available public ip",
)
"""Create errors meaning this offer is not really there (stale `max_count`, the GPU gone from the
location, the location's public IPs used up, BUG-010): OfferGone, pick another offer."""
CAPACITY_PHRASES = ("insufficient capacity",)
"""Create errors meaning the GPU is there but no node fits the vCPU/RAM/storage asked for:
CapacityError (a smaller configuration, or later, may fit)."""
START_CAPACITY_PHRASES = ("not enough gpu", "no available gpu", "insufficient gpu")
"""Start errors meaning the stopped VM's GPU is gone and none is free to take its place (its
state was `StoppedDisassociated`; the words are [INFER]): CapacityError, as are the create
phrases above (`STALE_PHRASES`, `CAPACITY_PHRASES`) when a start answers them."""

DRIVER_FIX = (
    "systemctl stop unattended-upgrades apt-daily.service apt-daily-upgrade.service || true",
    "for i in $(seq 60); do fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break;"
    " sleep 5; done",
    "dpkg --configure -a >> /var/log/cloud-init-nvidia.log 2>&1 || true",
    "nvidia-smi >/dev/null 2>&1 || { v=$(ls /usr/src | sed -n 's/^nvidia-\\([0-9.]*\\)$/\\1/p'"
    ' | head -n 1); if [ -n "$v" ]; then dkms build nvidia/$v && dkms install nvidia/$v;'
    " else apt-get -o DPkg::Lock::Timeout=120 install -y nvidia-driver-550; fi;"
    " modprobe nvidia; } >> /var/log/cloud-init-nvidia.log 2>&1 || true",
)
"""cloud-init lines run after the key lines: free the dpkg lock held by unattended-upgrades, finish
half-configured NVIDIA packages and build the DKMS module if `nvidia-smi` fails (prior-art
BUG-013/014); the readiness probe then waits for the lock and for `nvidia-smi`."""

_COUNTRIES = {
    "united states": "US", "united states of america": "US", "usa": "US", "canada": "CA",
    "mexico": "MX", "brazil": "BR", "chile": "CL", "argentina": "AR", "united kingdom": "GB",
    "uk": "GB", "great britain": "GB", "ireland": "IE", "france": "FR", "germany": "DE",
    "netherlands": "NL", "the netherlands": "NL", "belgium": "BE", "luxembourg": "LU",
    "switzerland": "CH", "austria": "AT", "italy": "IT", "spain": "ES", "portugal": "PT",
    "denmark": "DK", "norway": "NO", "sweden": "SE", "finland": "FI", "iceland": "IS",
    "estonia": "EE", "latvia": "LV", "lithuania": "LT", "poland": "PL", "czech republic": "CZ",
    "czechia": "CZ", "slovakia": "SK", "hungary": "HU", "romania": "RO", "bulgaria": "BG",
    "greece": "GR", "ukraine": "UA", "turkey": "TR", "israel": "IL",
    "united arab emirates": "AE", "saudi arabia": "SA", "india": "IN", "singapore": "SG",
    "japan": "JP", "south korea": "KR", "korea": "KR", "taiwan": "TW", "hong kong": "HK",
    "china": "CN", "thailand": "TH", "vietnam": "VN", "malaysia": "MY", "indonesia": "ID",
    "australia": "AU", "new zealand": "NZ", "south africa": "ZA",
}  # fmt: skip
_MEMORY = re.compile(r"(\d+)\s*gb", re.I)
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# --------------------------------------------------------------------------- sizing and offers


@dataclass(frozen=True)
class VmSize:
    """The non-GPU resources of a VM, in the steps TensorDock accepts."""

    vcpus: int
    ram_gb: int
    storage_gb: int


def _capped(want: int, limit: Any, step: int) -> int:
    """`want`, lowered to the location's limit rounded down to `step` (never below one step)."""
    top = number_of(limit)
    if top is None:
        return want
    return max(step, min(want, int(top) // step * step))


def size_vm(gpu_count: int, resources: Mapping[str, Any] | None, disk_gb: float | None) -> VmSize:
    """The VM for `gpu_count` GPUs: the one rule both the offer price and create use.

    8 vCPUs and 32 GB RAM per GPU, capped by the location's `max_vcpus`/`max_ram_gb` (vCPUs in
    steps of 2, RAM in steps of 8 GB); storage is `disk_gb` rounded up to 50 GB steps, at least
    100 GB. Offers are priced with the 100 GB minimum.
    """
    limits = resources or {}
    vcpus = _capped(VCPUS_PER_GPU * gpu_count, limits.get("max_vcpus"), VCPU_STEP)
    ram = _capped(RAM_GB_PER_GPU * gpu_count, limits.get("max_ram_gb"), RAM_STEP_GB)
    steps = math.ceil(max(0.0, disk_gb or 0.0) / STORAGE_STEP_GB)
    return VmSize(vcpus, ram, max(MIN_STORAGE_GB, steps * STORAGE_STEP_GB))


def vm_price(gpu: Mapping[str, Any], gpu_count: int, size: VmSize) -> float | None:
    """Total USD/h of a VM: GPUs plus vCPUs, RAM and storage at the location's unit prices."""
    gpu_price = number_of(gpu.get("price_per_hr"))
    if gpu_price is None:
        return None
    pricing = gpu.get("pricing")
    if not isinstance(pricing, Mapping):
        pricing = {}
    per_vcpu = number_of(pricing.get("per_vcpu_hr")) or 0.0
    per_ram = number_of(pricing.get("per_gb_ram_hr")) or 0.0
    per_storage = number_of(pricing.get("per_gb_storage_hr")) or 0.0
    total = (
        gpu_count * gpu_price
        + size.vcpus * per_vcpu
        + size.ram_gb * per_ram
        + size.storage_gb * per_storage
    )
    return round(total, 6)


def country_code(name: Any) -> str | None:
    """ISO 3166 alpha-2 for a country name ("United States" → "US"); None when unknown."""
    if not isinstance(name, str) or not name.strip():
        return None
    text = name.strip()
    if len(text) == 2 and text.isalpha():
        return text.upper()
    return _COUNTRIES.get(" ".join(text.lower().split()))


@dataclass(frozen=True)
class OfferKey:
    """What a TensorDock offer id encodes: where, which GPU model, how many."""

    location_id: str
    gpu: str
    count: int

    @property
    def offer_id(self) -> str:
        return f"{PROVIDER}:{self.location_id}:{self.gpu}:{self.count}"


def parse_offer_id(offer_id: str) -> OfferKey:
    """The key of `tensordock:<location id>:<v0Name>:<count>`; ValueError for anything else."""
    provider, _, rest = offer_id.partition(":")
    location, _, tail = rest.partition(":")
    gpu, _, count = tail.rpartition(":")
    if provider != PROVIDER or not location or not gpu or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{offer_id!r} is not a TensorDock offer id")
    return OfferKey(location, gpu, int(count))


def normalize_offer(
    location: Mapping[str, Any], gpu: Mapping[str, Any], count: int, fetched_at: datetime
) -> Offer | None:
    """One offer: `count` GPUs of one model at one location, priced as create will size it.

    None when the record lacks what an offer needs (ids, a price, any idea of the VRAM).
    """
    location_id, v0_name = location.get("id"), gpu.get("v0Name")
    if not isinstance(location_id, str) or not location_id or ":" in location_id:
        return None
    if not isinstance(v0_name, str) or not v0_name:
        return None
    display = gpu.get("displayName")
    spellings = [s for s in (display, v0_name) if isinstance(s, str) and s.strip()]
    stated = next((m for s in spellings if (m := _MEMORY.search(s))), None)
    model = lookup_gpu(spellings, float(stated.group(1)) if stated else None)
    resources = gpu.get("resources") if isinstance(gpu.get("resources"), Mapping) else None
    size = size_vm(count, resources, None)
    price = vm_price(gpu, count, size)
    if price is None or model.vram_gb <= 0:
        return None
    tier = number_of(location.get("tier"))
    region = ", ".join(
        str(part).strip()
        for part in (location.get("city"), location.get("stateprovince"))
        if isinstance(part, str) and part.strip()
    )
    return Offer(
        id=OfferKey(location_id, v0_name, count).offer_id,
        provider=PROVIDER,
        gpu_name=model.name,
        gpu_count=count,
        vram_gb=model.vram_gb,
        price_per_hour=price,
        vcpus=size.vcpus,
        ram_gb=size.ram_gb,
        disk_gb=size.storage_gb,
        region=region or None,
        country=country_code(location.get("country")),
        reliability=min(1.0, max(0.0, tier / 3)) if tier is not None else None,
        fetched_at=fetched_at,
        raw={"location": {k: v for k, v in location.items() if k != "gpus"}, "gpu": dict(gpu)},
    )


def normalize_location(location: Mapping[str, Any], fetched_at: datetime) -> list[Offer]:
    """Every offer of one location: each GPU model at each count from 1 to `max_count`.

    GPUs without a dedicated IP are left out: create always asks for one (port forwards are
    ignored at some locations), so TensorDock would refuse those with "no available public ips".
    """
    offers: list[Offer] = []
    gpus = location.get("gpus")
    for gpu in gpus if isinstance(gpus, list) else []:
        if not isinstance(gpu, Mapping):
            continue
        network = gpu.get("network_features")
        if isinstance(network, Mapping) and network.get("dedicated_ip_available") is False:
            continue
        most = number_of(gpu.get("max_count"))
        for count in range(1, int(most or 0) + 1):
            offer = normalize_offer(location, gpu, count, fetched_at)
            if offer is None:
                log.warning("tensordock: skipped an unreadable GPU record %r", gpu.get("v0Name"))
                break
            offers.append(offer)
    return offers


def locations_of(body: Any) -> list[Mapping[str, Any]]:
    """The locations of a `GET /locations` answer; ValueError for any other shape."""
    data = body.get("data") if isinstance(body, Mapping) else None
    locations = data.get("locations") if isinstance(data, Mapping) else None
    if not isinstance(locations, list):
        raise ValueError("expected {'data': {'locations': [...]}}")
    return [loc for loc in locations if isinstance(loc, Mapping)]


# --------------------------------------------------------------------------- create request


def _single_quoted(text: str) -> str:
    """`text` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def runcmd(public_key: str, onstart: str | None = None) -> list[str]:
    """cloud-init `runcmd`: install the key for `root` and `user`, fix drivers, run `onstart`.

    The key lines come first so that SSH works even if a later line hangs.
    """
    key = _single_quoted(public_key)
    lines: list[str] = []
    for home, owner in (
        ("/root", "root:root"),
        (f"/home/{LOGIN_USER}", f"{LOGIN_USER}:{LOGIN_USER}"),
    ):
        lines += [
            f"mkdir -p {home}/.ssh",
            f"echo {key} >> {home}/.ssh/authorized_keys",
            f"chmod 700 {home}/.ssh",
            f"chmod 600 {home}/.ssh/authorized_keys",
            f"chown -R {owner} {home}/.ssh",
        ]
    lines += DRIVER_FIX
    if onstart and onstart.strip():
        lines.append(onstart)
    return lines


def create_body(
    key: OfferKey, size: VmSize, label: str, public_key: str, onstart: str | None
) -> dict[str, Any]:
    """The JSON:API body of a location-based `POST /instances`."""
    return {
        "data": {
            "type": "virtualmachine",
            "attributes": {
                "name": label,
                "type": "virtualmachine",
                "image": IMAGE,
                "location_id": key.location_id,
                "resources": {
                    "vcpu_count": size.vcpus,
                    "ram_gb": size.ram_gb,
                    "storage_gb": size.storage_gb,
                    "gpus": {key.gpu: {"count": key.count}},
                },
                "useDedicatedIp": True,
                "ssh_key": public_key,
                "cloud_init": {"runcmd": runcmd(public_key, onstart)},
            },
        }
    }


def created_id(body: Any) -> str | None:
    """The new instance's id from a create answer (`{"data": {"id": …}}`, or flat)."""
    if not isinstance(body, Mapping):
        return None
    data = body.get("data")
    value = (data if isinstance(data, Mapping) else body).get("id")
    return str(value) if isinstance(value, str | int) and str(value) else None


# --------------------------------------------------------------------------- errors


def error_text(body: Any) -> str:
    """The provider's words from an error body: `{"error": …}` or a validation array."""
    if isinstance(body, list):
        parts = []
        for issue in body:
            if isinstance(issue, Mapping) and issue.get("message"):
                path = issue.get("path")
                where = ".".join(map(str, path)) if isinstance(path, list) and path else ""
                parts.append(f"{issue['message']} ({where})" if where else str(issue["message"]))
        return "; ".join(parts)
    if isinstance(body, Mapping):
        for field in ("error", "message", "detail"):
            value = body.get(field)
            if isinstance(value, Mapping):
                value = value.get("message")
            if isinstance(value, str) and value.strip():
                return value.strip()
    return ""


def classify_error(
    http_status: int, body: Any, what: str, *, instance_id: str | None = None
) -> ProviderError:
    """The error for a failed call: an HTTP error, or an HTTP-200 body carrying an error.

    Stale-inventory phrases → OfferGone, capacity phrases → CapacityError (see the constants),
    401/403 → AuthError, low balance (402) → ProviderError, 404 → NotFound.
    """
    text = error_text(body)
    said = text or "no error message"
    lowered = text.lower()
    status = http_status
    if http_status < 400 and isinstance(body, Mapping) and isinstance(body.get("status"), int):
        status = body["status"]
    if http_status == 401 or status == 401:
        return AuthError(
            PROVIDER, f"{what}: the API token was refused (HTTP 401: {said})", status=401
        )
    if http_status == 403 or status == 403:
        return AuthError(
            PROVIDER,
            f"{what}: access denied (HTTP 403: {said}); TensorDock answers this when the "
            "Authorization ID (a UUID) is used in place of the API token",
            status=403,
        )
    if status == 402 or "balance" in lowered:
        return ProviderError(
            PROVIDER,
            f"{what}: the account balance is too low; TensorDock needs at least $1 ({said})",
            status=status,
            instance_id=instance_id,
        )
    if any(phrase in lowered for phrase in STALE_PHRASES):
        return OfferGone(PROVIDER, f"{what}: {text}", status=status, instance_id=instance_id)
    if any(phrase in lowered for phrase in CAPACITY_PHRASES):
        return CapacityError(PROVIDER, f"{what}: {text}", status=status, instance_id=instance_id)
    if status == 404:
        return NotFound(PROVIDER, f"{what}: not found ({said})", status=404)
    if isinstance(body, list):
        return ProviderError(
            PROVIDER, f"{what} was rejected: {said}", status=status, instance_id=instance_id
        )
    return ProviderError(
        PROVIDER, f"{what} failed (HTTP {status}: {said})", status=status, instance_id=instance_id
    )


def _soft_error(body: Any) -> bool:
    """Whether an HTTP-200 body is really an error (`{"status": 400, "error": "…"}`)."""
    return isinstance(body, Mapping) and bool(body.get("error")) and "data" not in body


# --------------------------------------------------------------------------- instances


def _unwrap(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The instance's fields, whether flat, in `data`, or JSON:API `attributes`."""
    item: Mapping[str, Any] = obj
    if isinstance(item.get("data"), Mapping):
        item = item["data"]
    attributes = item.get("attributes")
    if isinstance(attributes, Mapping):
        return {**{k: v for k, v in item.items() if k != "attributes"}, **attributes}
    return dict(item)


def _ssh_port(forwards: Any) -> int:
    """The external port forwarded to 22, else 22 itself (a dedicated IP has every port)."""
    for forward in forwards if isinstance(forwards, list) else []:
        if isinstance(forward, Mapping) and number_of(forward.get("internal_port")) == SSH_PORT:
            port = number_of(forward.get("external_port"))
            if port is not None and 1 <= port <= 65535 and port == int(port):
                return int(port)
    return SSH_PORT


def parse_instance(obj: Any, fallback_id: str | None = None) -> InstanceStatus | None:
    """An instance record (get or list item, any of the observed shapes) as an InstanceStatus.

    The state is TensorDock's word, verbatim (casing varies: "stopped", "Stopped",
    "StoppedDisassociated"); only "running" with an IP is running, only `STOPPED_STATES` are
    stopped ("stopping" and "starting" are neither). None when its state says it
    is gone (`deleted`, `terminated`). ValueError when the record has no id or no status: a
    record we cannot read is never taken for "gone".
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"an instance record is a {type(obj).__name__}, not an object")
    item = _unwrap(obj)
    raw_id = item.get("id", fallback_id)
    status = item.get("status")
    if not isinstance(raw_id, str | int) or not str(raw_id) or not isinstance(status, str):
        raise ValueError("an instance record without an id or a status")
    state = status.strip()
    if state.lower() in GONE_STATES:
        return None
    ip = item.get("ipAddress") or item.get("ip_address")
    host = ip.strip() if isinstance(ip, str) and ip.strip() else None
    forwards = item.get("portForwards", item.get("port_forwards"))
    price = number_of(item.get("rateHourly", item.get("price_per_hour")))
    name = item.get("name")
    return InstanceStatus(
        provider=PROVIDER,
        instance_id=str(raw_id),
        label=name if isinstance(name, str) else None,
        state=state,
        running=state.lower() == "running" and host is not None,
        stopped=state.lower() in STOPPED_STATES,
        ssh_host=host,
        ssh_port=_ssh_port(forwards) if host is not None else None,
        price_per_hour=price if price is not None and price >= 0 else None,
        started_at=timestamp_of(item.get("created_at")),
        raw=dict(obj),
    )


def instance_items(body: Any) -> list[Any]:
    """The items of a `GET /instances` answer, in either observed shape.

    `{"data": {"instances": [...]}}` (SPEC) or `{"data": [...]}` (seen live); ValueError for
    anything else, including a null list: never read an unexpected answer as "no instances".
    """
    data = body.get("data") if isinstance(body, Mapping) else None
    if isinstance(data, list):
        return data
    instances = data.get("instances") if isinstance(data, Mapping) else None
    if isinstance(instances, list):
        return instances
    raise ValueError("expected {'data': {'instances': [...]}} or {'data': [...]}")


# --------------------------------------------------------------------------- the adapter


class TensorDock(Provider):
    """TensorDock v2: location-based VMs on a dedicated IP, logged into as `user`."""

    INFO: ClassVar[ProviderInfo] = ProviderInfo(
        name=PROVIDER,
        display_name="TensorDock",
        credential_env=("TENSORDOCK_API_TOKEN",),
        default_base_url="https://dashboard.tensordock.com/api/v2",
        base_url_env="TENSORDOCK_API_URL",
        provision_budget_s=900.0,
        first_ssh_budget_s=90.0,
        capabilities=Capabilities(
            can_stop=True, provider_ttl=False, spot=False, instance_scoped_key=False
        ),
    )
    """cloud-init alone takes about 90 s after the VM says running. Stop keeps the disk (the
    v2 `POST /instances/{id}/stop` and `/start`); a start may find the GPU gone."""
    name: ClassVar[ProviderName] = PROVIDER
    readiness: ClassVar[Readiness] = Readiness(
        ssh_user=LOGIN_USER, initial_delay_s=INFO.first_ssh_budget_s, probe_dpkg_and_smi=True
    )
    can_stop: ClassVar[bool] = INFO.capabilities.can_stop
    rate: ClassVar[RateLimit] = RateLimit(per_second=1.5, burst=5)
    """100 requests per minute per organization, with a little headroom."""

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    async def _get_json(self, path: str, what: str, priority: Priority) -> Any:
        """GET `path` and its JSON body; an error status or a 200-with-error body raises."""
        response = await self.http.request("GET", path, priority=priority)
        if response.status_code >= 400:
            raise classify_error(response.status_code, json_or_none(response), what)
        body = json_of(self.name, response)
        if _soft_error(body):
            raise classify_error(response.status_code, body, what)
        return body

    def _path(self, instance_id: str) -> str:
        """`/instances/<id>`, refusing ids that could reach another path."""
        if not _INSTANCE_ID.match(instance_id):
            raise ProviderError(self.name, f"{instance_id!r} is not a TensorDock instance id")
        return f"/instances/{instance_id}"

    async def list_offers(self, query: OfferQuery | None = None) -> OfferList:
        """One offer per location, GPU model and count. `GET /locations` has no filters and no
        limit (provider-apis.md §2.1): `query` is unused and the answer is never capped."""
        body = await self._get_json("/locations", "listing locations", Priority.BACKGROUND)
        try:
            locations = locations_of(body)
        except ValueError as err:
            raise ProviderBug(self.name, f"GET /locations: {err}") from err
        fetched_at = self.http.clock.now()
        return OfferList(
            offer for loc in locations for offer in normalize_location(loc, fetched_at)
        )

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        """Rent `count` GPUs at the offer's location, sized and priced as the offer was.

        `spec.image` is not used: TensorDock boots OS images, and only ubuntu2204 has working
        drivers; `spec.onstart` runs as the last cloud-init command.
        """
        try:
            key = parse_offer_id(offer.id)
        except ValueError as err:
            raise ProviderError(self.name, f"cannot rent: {err}") from err
        public_key = spec.ssh_public_key.strip()
        if not public_key or "\n" in public_key or "\r" in public_key:
            raise ProviderError(self.name, "cannot rent: the SSH public key must be one line")
        gpu = offer.raw.get("gpu")
        resources = gpu.get("resources") if isinstance(gpu, Mapping) else None
        size = size_vm(
            key.count, resources if isinstance(resources, Mapping) else None, spec.disk_gb
        )
        body = create_body(key, size, spec.label, public_key, spec.onstart)
        response = await self.http.request(
            "POST", "/instances", json=body, priority=Priority.NORMAL, idempotent=False
        )
        payload = json_or_none(response)
        instance_id = created_id(payload)
        if response.status_code >= 400 or _soft_error(payload):
            raise classify_error(response.status_code, payload, "create", instance_id=instance_id)
        if instance_id is None:
            raise TransientError(
                self.name,
                f"create answered HTTP {response.status_code} without an instance id; "
                "the instance may exist",
                status=response.status_code,
                ambiguous=True,
            )
        if on_instance is not None:
            await on_instance(instance_id)
        return InstanceRef(self.name, instance_id, spec.label)

    async def get(self, instance_id: str) -> InstanceStatus | None:
        """The instance now; None on TensorDock's 404 or a deleted/terminated state."""
        response = await self.http.request("GET", self._path(instance_id), priority=Priority.URGENT)
        body = json_or_none(response)
        if response.status_code == 404 or (_soft_error(body) and body.get("status") == 404):
            if not isinstance(body, Mapping):
                raise ProviderBug(
                    self.name,
                    "GET /instances/{id} answered 404 without TensorDock's JSON error body; "
                    "is the base URL right?",
                    status=404,
                )
            return None
        if response.status_code >= 400 or _soft_error(body):
            raise classify_error(response.status_code, body, f"getting instance {instance_id}")
        if body is None:
            body = json_of(self.name, response)  # a ProviderBug unless the body is JSON null
        try:
            return parse_instance(body, fallback_id=instance_id)
        except ValueError as err:
            raise ProviderBug(self.name, f"GET /instances/{{id}}: {err}") from err

    async def list_labelled(self) -> list[InstanceStatus]:
        """Every live instance named with a gpushop label; raises on any answer it cannot read."""
        body = await self._get_json("/instances", "listing instances", Priority.URGENT)
        try:
            found = [parse_instance(item) for item in instance_items(body)]
        except ValueError as err:
            raise ProviderBug(self.name, f"GET /instances: {err}") from err
        return [status for status in found if status is not None and parse_label(status.label)]

    async def destroy(self, instance_id: str) -> None:
        """`DELETE /instances/{id}`; 200/204 is accepted, 404 means already gone."""
        response = await self.http.request(
            "DELETE", self._path(instance_id), priority=Priority.URGENT
        )
        body = json_or_none(response)
        if response.status_code == 404 or (_soft_error(body) and body.get("status") == 404):
            return
        if response.status_code >= 400 or _soft_error(body):
            raise classify_error(response.status_code, body, f"destroying instance {instance_id}")

    async def stop(self, instance_id: str) -> None:
        """`POST /instances/{id}/stop`: the VM reads `stopping`, then `stopped`, disk kept."""
        await self._power(instance_id, "stop")

    async def start(self, instance_id: str) -> None:
        """`POST /instances/{id}/start`: `starting`, then `running` with the same disk.

        A stopped VM may have released its GPU (`StoppedDisassociated`); when none is free to
        take its place the start is refused, a CapacityError ("no capacity to start …").
        """
        try:
            await self._power(instance_id, "start")
        except (CapacityError, OfferGone) as err:
            raise self._no_capacity(instance_id, err) from err
        except ProviderError as err:
            if not any(p in err.message.lower() for p in START_CAPACITY_PHRASES):
                raise
            raise self._no_capacity(instance_id, err) from err

    def _no_capacity(self, instance_id: str, err: ProviderError) -> CapacityError:
        return CapacityError(
            self.name,
            f"no capacity to start instance {instance_id}: its GPU was released while it was "
            f"stopped and none is free now ({err.message})",
            status=err.status,
        )

    async def _power(self, instance_id: str, action: str) -> None:
        """`POST /instances/{id}/<action>`; an error status or a 200-with-error body raises."""
        response = await self.http.request(
            "POST", f"{self._path(instance_id)}/{action}", priority=Priority.NORMAL
        )
        body = json_or_none(response)
        if response.status_code >= 400 or _soft_error(body):
            raise classify_error(response.status_code, body, f"{action} of instance {instance_id}")

    def stopped_price_per_hour(self, offer: Offer) -> float:
        """A stopped VM bills its storage only ([INFER]: v0 priced storage apart, as
        `storage_price`): the location's `per_gb_storage_hr` over the offer's disk. Where the
        offer does not carry it, the full price (the conservative default)."""
        gpu = offer.raw.get("gpu")
        pricing = gpu.get("pricing") if isinstance(gpu, Mapping) else None
        per_gb = (
            number_of(pricing.get("per_gb_storage_hr")) if isinstance(pricing, Mapping) else None
        )
        if per_gb is None or per_gb < 0 or not offer.disk_gb:
            return super().stopped_price_per_hour(offer)
        return round(per_gb * offer.disk_gb, 6)

    async def check(self) -> None:
        """`GET /instances` with the token: AuthError on 401/403."""
        await self._get_json("/instances", "checking the API token", Priority.NORMAL)
