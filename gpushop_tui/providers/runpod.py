"""RunPod: GPU pods (containers) in secure and community clouds, on demand or on a spot bid.

provider-apis.md §5. Offers come from GraphQL only (two requests: the catalogue, then one
aliased query with a `lowestPrice` per data centre, GPU count and cloud); pods are created,
read, stopped, started, moved and deleted over REST v1, except a spot pod, which only GraphQL
`podRentInterruptable` rents (with a bid per GPU: bidding the total is SkyPilot's 8x bug).
Quirks handled here: GraphQL answers client errors with HTTP 200 and `errors`, which is always an
error, never an empty answer; GPU ids contain spaces, so offer ids carry a squashed form and
the create reads the real id from `Offer.raw`; a stale offer answers "There are no longer any
instances available…" (`OfferGone`); a TERMINATED pod is gone; the SSH address is `publicIp`
and the public port mapped to 22 in `portMappings`.

[INFER] marks what the reference does not state: `lowestPrice` prices are per GPU; REST takes
`terminateAfter` (runpodctl's `--terminate-after`, peers.md §0 item 2) at create and in PATCH;
a start without a free GPU on the pod's host answers "There are not enough free GPUs on the
host machine to start this pod"; the stopped-volume rate; the rate limit we keep to.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from gpushop_tui.clock import utc
from gpushop_tui.models import InstanceStatus, Offer, OfferQuery, ProviderName
from gpushop_tui.providers.base import (
    DEFAULT_DISK_GB,
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
    number_of,
    parse_label,
    text_of,
    timestamp_of,
)
from gpushop_tui.providers.gpus import lookup_gpu

log = logging.getLogger(__name__)

PROVIDER: ProviderName = "runpod"
REST_HOST = "rest.runpod.io"
GRAPHQL_URL = "https://api.runpod.io/graphql"
DEFAULT_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
"""The image a pod runs unless the spec names one: RunPod's PyTorch image, which installs
`PUBLIC_KEY` as root's authorized key and starts sshd."""
CONTAINER_DISK_GB = 20
VOLUME_MOUNT = "/workspace"
SSH_USER = "root"
GPU_COUNTS = (1, 2, 4, 8)
"""The pod sizes listed, each up to the GPU type's `maxGpuCount`."""
CLOUDS = {True: "SECURE", False: "COMMUNITY"}
STOPPED_VOLUME_USD_PER_GB_MONTH = 0.20
"""What a stopped pod's volume bills ([INFER] from RunPod's published storage pricing: $0.10
per GB-month running, $0.20 stopped); the container disk does not bill while stopped."""
HOURS_PER_MONTH = 730.0
NO_INSTANCES = "no longer any instances available"
"""RunPod's words for a stale offer (dstackai/dstack#1740)."""
NO_FREE_GPUS = "not enough free gpus"
"""[INFER] RunPod's words for a start whose host has no free GPU for the pod any more."""
AUTH_WORDS = ("unauthorized", "unauthenticated", "api key", "forbidden", "not authorized")
_OFFER_ID = re.compile(r"^(?P<gpu>[A-Za-z0-9_-]+)\.(?P<dc>[A-Za-z0-9_-]+)\.(?P<count>\d+)\.")
_NOT_ID = re.compile(r"[^A-Za-z0-9]+")
_CONTINENTS = frozenset({"EU", "EUR", "AP", "AS", "OC", "SA", "AF", "ME", "NA"})

CATALOGUE_QUERY = (
    "query GpuCatalogue { dataCenters { id name listed } gpuTypes { id displayName "
    "manufacturer memoryInGb secureCloud communityCloud maxGpuCount } }"
)
PRICE_FIELDS = "minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus countryCode"
RENT_MUTATION = (
    "mutation RentInterruptable($input: PodRentInterruptableInput!) "
    "{ podRentInterruptable(input: $input) { id desiredStatus costPerHr } }"
)
"""Spot pods: the input as variables, the type name other clients use (peers' code)."""


# --------------------------------------------------------------------------- pure parsing


def graphql_url(rest_base: str) -> str:
    """The GraphQL endpoint that goes with a REST base URL (gpushop is only told the latter).

    The real REST host (`https://rest.runpod.io/v1`) pairs with `https://api.runpod.io/graphql`;
    any other base ending in `/v1` (the simulator) has `/graphql` in place of that `/v1`.
    """
    base = rest_base.rstrip("/")
    if httpx.URL(base).host == REST_HOST:
        return GRAPHQL_URL
    return f"{base.removesuffix('/v1')}/graphql"


def country_of(dc_id: str) -> str | None:
    """The ISO country of a data centre id: `US-KS-2` -> US, `EU-RO-1` -> RO, `CA-MTL-1` -> CA
    ([INFER] from RunPod's naming: a country code, or a continent then a country code)."""
    parts = dc_id.upper().split("-")
    if len(parts) >= 2 and parts[0] in _CONTINENTS and len(parts[1]) == 2:
        return parts[1]
    return parts[0] if len(parts[0]) == 2 and parts[0].isalpha() else None


def squash(gpu_type_id: str) -> str:
    """A GPU type id made fit for an offer id: each run of other characters becomes one '-'."""
    return _NOT_ID.sub("-", gpu_type_id).strip("-")


@dataclass(frozen=True)
class GpuType:
    """One `gpuTypes` entry of the catalogue."""

    id: str
    display_name: str
    memory_gb: float | None
    secure: bool
    community: bool
    max_count: int

    def clouds(self) -> list[bool]:
        """The clouds (True: secure) this type is offered in."""
        return [
            cloud for cloud, offered in ((True, self.secure), (False, self.community)) if offered
        ]


@dataclass(frozen=True)
class PriceKey:
    """What one aliased `lowestPrice` asks about."""

    gpu: GpuType
    dc: str
    count: int
    secure: bool


@dataclass(frozen=True)
class OfferKey:
    """What a create needs of an offer."""

    gpu_type_id: str | None
    """None when only the offer id was left to read (its squashed form is `gpu`)."""
    gpu: str
    dc: str
    count: int
    secure: bool
    spot: bool


def parse_catalogue(data: Any) -> tuple[list[GpuType], list[str]]:
    """(GPU types, listed data centre ids) of the catalogue query's `data`.

    Raises ValueError when either list is missing; a single entry we cannot read is skipped.
    """
    types, centres = _get(data, "gpuTypes"), _get(data, "dataCenters")
    if not isinstance(types, list) or not isinstance(centres, list):
        raise ValueError("the catalogue has no gpuTypes or dataCenters list")
    dcs = [
        dc["id"]
        for dc in centres
        if isinstance(dc, dict) and text_of(dc.get("id")) and dc.get("listed") is not False
    ]
    gpus: list[GpuType] = []
    for entry in types:
        gpu_id = text_of(entry.get("id")) if isinstance(entry, dict) else None
        if gpu_id is None or not isinstance(entry, dict):
            log.warning("runpod: skipped a GPU type without an id")
            continue
        gpus.append(
            GpuType(
                id=gpu_id,
                display_name=text_of(entry.get("displayName")) or gpu_id,
                memory_gb=number_of(entry.get("memoryInGb")),
                secure=entry.get("secureCloud") is True,
                community=entry.get("communityCloud") is True,
                max_count=int(number_of(entry.get("maxGpuCount")) or 1),
            )
        )
    return gpus, dcs


def price_query(gpus: list[GpuType], dcs: list[str]) -> tuple[str, dict[tuple[str, str], PriceKey]]:
    """One query asking every (data centre, GPU count, cloud) of every GPU type, by aliases:
    `t<i>: gpuTypes(input: {id})` per type, `p<j>: lowestPrice(input: {...})` inside it.
    Returns the query and what each (type alias, price alias) pair asks about.

    Both clouds are asked by `dataCenterId` [INFER]: gpuhunt asks the community cloud by
    `countryCode` instead; if RunPod ignores the data centre there, a community offer that
    is not in its centre fails its create with `OfferGone`, which is safe."""
    keys: dict[tuple[str, str], PriceKey] = {}
    parts: list[str] = []
    for i, gpu in enumerate(gpus):
        prices: list[str] = []
        for dc in dcs:
            for count in (n for n in GPU_COUNTS if n <= gpu.max_count):
                for secure in gpu.clouds():
                    alias = f"p{len(prices)}"
                    keys[(f"t{i}", alias)] = PriceKey(gpu, dc, count, secure)
                    literal = (
                        f"{{gpuCount: {count}, dataCenterId: {json.dumps(dc)}, "
                        f"secureCloud: {'true' if secure else 'false'}}}"
                    )
                    prices.append(f"{alias}: lowestPrice(input: {literal}) {{ {PRICE_FIELDS} }}")
        if prices:
            parts.append(
                f"t{i}: gpuTypes(input: {{id: {json.dumps(gpu.id)}}}) {{ id {' '.join(prices)} }}"
            )
    return f"query GpuPrices {{ {' '.join(parts)} }}", keys


def offer_id(key: PriceKey, spot: bool) -> str:
    """`runpod:<squashed GPU id>.<data centre>.<count>.<secure|community>[.spot]`."""
    cloud = "secure" if key.secure else "community"
    return f"{PROVIDER}:{squash(key.gpu.id)}.{key.dc}.{key.count}.{cloud}{'.spot' if spot else ''}"


def parse_offer_id(value: str) -> OfferKey:
    """What an offer id says (the GPU in its squashed form only). Raises ValueError."""
    provider, _, rest = value.partition(":")
    match = _OFFER_ID.match(rest)
    tail = rest[match.end() :].split(".") if match else []
    clouds = ("secure", "community")
    if (
        provider != PROVIDER
        or match is None
        or tail[0] not in clouds
        or tail[1:] not in ([], ["spot"])
    ):
        raise ValueError(f"{value!r} is not a RunPod offer id")
    return OfferKey(
        None, match["gpu"], match["dc"], int(match["count"]), tail[0] == "secure", len(tail) == 2
    )


def normalize_offers(
    data: Any, keys: dict[tuple[str, str], PriceKey], fetched_at: datetime
) -> list[Offer]:
    """The offers in the price query's `data`: for each answer in stock (`stockStatus` set),
    one on-demand offer at `uninterruptablePrice` and, where `minimumBidPrice` is set, one
    interruptible offer at that bid, both per GPU [INFER] times the count. `minVcpu` and
    `minMemory` are the pod's, as gpuhunt reads them.

    Raises ValueError when an asked type is missing from the answer; a price we cannot read
    is skipped.
    """
    offers: list[Offer] = []
    skipped = 0
    for (type_alias, price_alias), key in keys.items():
        listed = _get(data, type_alias)
        if not isinstance(listed, list) or len(listed) != 1 or not isinstance(listed[0], dict):
            raise ValueError(f"the prices of {key.gpu.id} did not come back")
        price = listed[0].get(price_alias)
        if not isinstance(price, dict) or not price.get("stockStatus"):
            continue
        for spot, per_gpu in (
            (False, number_of(price.get("uninterruptablePrice"))),
            (True, number_of(price.get("minimumBidPrice"))),
        ):
            if per_gpu is None or per_gpu <= 0:
                continue
            try:
                offers.append(_offer(key, price, per_gpu, spot, fetched_at))
            except ValidationError as err:
                log.warning("runpod: skipped an offer we cannot read: %s", err)
                skipped += 1
    if skipped and not offers:
        raise ValueError(f"none of the {skipped} priced offers could be read")
    return offers


def _offer(
    key: PriceKey, price: dict[str, Any], per_gpu: float, spot: bool, fetched_at: datetime
) -> Offer:
    gpu = lookup_gpu([key.gpu.id, key.gpu.display_name], key.gpu.memory_gb)
    country = text_of(price.get("countryCode"))
    cloud = CLOUDS[key.secure]
    return Offer(
        id=offer_id(key, spot),
        provider=PROVIDER,
        gpu_name=gpu.name,
        gpu_count=key.count,
        vram_gb=gpu.vram_gb or key.gpu.memory_gb or 0,
        price_per_hour=round(per_gpu * key.count, 6),
        vcpus=number_of(price.get("minVcpu")),
        ram_gb=number_of(price.get("minMemory")),
        region=key.dc,
        country=country.upper() if country and len(country) == 2 else country_of(key.dc),
        interruptible=spot,
        fetched_at=fetched_at,
        raw={
            "gpuTypeId": key.gpu.id,
            "displayName": key.gpu.display_name,
            "dataCenterId": key.dc,
            "gpuCount": key.count,
            "cloudType": cloud,
            "bidPerGpu": per_gpu if spot else None,
            "lowestPrice": price,
        },
    )


def offer_key(offer: Offer) -> OfferKey:
    """What a create needs: from `offer.raw` as listed, else from the offer id. Raises
    ValueError."""
    raw = offer.raw
    gpu_type_id, dc, cloud = (
        text_of(raw.get("gpuTypeId")),
        text_of(raw.get("dataCenterId")),
        raw.get("cloudType"),
    )
    if gpu_type_id and dc and cloud in CLOUDS.values():
        return OfferKey(
            gpu_type_id,
            squash(gpu_type_id),
            dc,
            offer.gpu_count,
            cloud == "SECURE",
            offer.interruptible,
        )
    parsed = parse_offer_id(offer.id)
    return OfferKey(None, parsed.gpu, parsed.dc, parsed.count, parsed.secure, parsed.spot)


def iso(at: datetime) -> str:
    """A time as RunPod is sent it: ISO-8601 UTC with a Z."""
    return utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def port_list(spec: CreateSpec) -> list[str]:
    """The ports a pod publishes: SSH, then each port the spec asks for, as `<port>/tcp`."""
    return [f"{p}/tcp" for p in dict.fromkeys((22, *spec.ports))]


def pod_body(key: OfferKey, gpu_type_id: str, spec: CreateSpec) -> dict[str, Any]:
    """The REST `POST /pods` body of an on-demand pod. `terminateAfter` is [INFER] (runpodctl's
    `--terminate-after`); `spec.onstart` has no equivalent that keeps the image's SSH start."""
    body: dict[str, Any] = {
        "name": spec.label,
        "imageName": spec.image or DEFAULT_IMAGE,
        "gpuTypeIds": [gpu_type_id],
        "gpuCount": key.count,
        "cloudType": CLOUDS[key.secure],
        "dataCenterIds": [key.dc],
        "containerDiskInGb": CONTAINER_DISK_GB,
        "volumeInGb": math.ceil(spec.disk_gb),
        "volumeMountPath": VOLUME_MOUNT,
        "ports": port_list(spec),
        "supportPublicIp": True,
        "env": {"PUBLIC_KEY": spec.ssh_public_key.strip()},
    }
    if spec.terminate_at is not None:
        body["terminateAfter"] = iso(spec.terminate_at)
    return body


def rent_input(
    key: OfferKey, gpu_type_id: str, spec: CreateSpec, bid_per_gpu: float
) -> dict[str, Any]:
    """The `podRentInterruptable` input of a spot pod: the bid is per GPU, never the total."""
    body = pod_body(key, gpu_type_id, spec)
    rent: dict[str, Any] = {
        "bidPerGpu": bid_per_gpu,
        "gpuTypeId": gpu_type_id,
        "gpuCount": key.count,
        "cloudType": body["cloudType"],
        "dataCenterId": key.dc,
        "name": body["name"],
        "imageName": body["imageName"],
        "containerDiskInGb": body["containerDiskInGb"],
        "volumeInGb": body["volumeInGb"],
        "volumeMountPath": body["volumeMountPath"],
        "ports": ",".join(body["ports"]),
        "env": [{"key": k, "value": v} for k, v in body["env"].items()],
        "supportPublicIp": True,
        "startSsh": True,
    }
    if "terminateAfter" in body:
        rent["terminateAfter"] = body["terminateAfter"]
    return rent


def graphql_messages(body: Any) -> list[str]:
    """The messages of a GraphQL answer's `errors` (empty when there are none)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return []
    if not isinstance(errors, list):
        return [str(errors)]
    return [
        (text_of(e.get("message")) if isinstance(e, dict) else text_of(e)) or "unnamed error"
        for e in errors
    ]


def error_text(body: Any) -> str:
    """The reason in a REST error body (`{"error": …}`, `{"message": …}`, or plain text)."""
    if isinstance(body, dict):
        for field in ("error", "message", "detail"):
            if text := text_of(body.get(field)):
                return text
        if messages := graphql_messages(body):
            return "; ".join(messages)
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return "no reason given"


def classify(text: str, message: str, *, status: int | None = None) -> ProviderError:
    """The error `text` (RunPod's words) stands for, with `message` as ours."""
    low = text.lower()
    if NO_INSTANCES in low:
        return OfferGone(PROVIDER, message, status=status)
    if NO_FREE_GPUS in low:
        return CapacityError(PROVIDER, message, status=status)
    if status in (401, 403) or any(word in low for word in AUTH_WORDS):
        return AuthError(PROVIDER, message, status=status)
    if status == 404:
        return NotFound(PROVIDER, message, status=status)
    return ProviderError(PROVIDER, message, status=status)


def parse_pod(record: Any, *, terminating: bool = False) -> InstanceStatus | None:
    """A REST pod object as an `InstanceStatus`; None for a TERMINATED pod (gone for good).

    RUNNING with `publicIp` and `portMappings["22"]` is running (SSH there; every mapping is a
    published port); RUNNING without them is "starting"; EXITED is stopped with its volume
    kept. `terminating` (we asked for a delete and it is still listed) wins over all of these.
    Raises ValueError on a record without an id.
    """
    if not isinstance(record, dict) or not text_of(record.get("id")):
        raise ValueError("a pod record without an id")
    desired = (text_of(record.get("desiredStatus")) or "").upper()
    if desired == "TERMINATED":
        return None
    ip = text_of(record.get("publicIp"))
    ports = _mappings(record.get("portMappings"))
    ssh_port = ports.get(22)
    if terminating:
        state, running = "terminating", False
    elif desired == "RUNNING":
        running = ip is not None and ssh_port is not None
        state = "running" if running else "starting"
    else:
        state, running = (desired or "unknown").lower(), False
    up = running and not terminating
    cost = number_of(record.get("costPerHr"))
    return InstanceStatus(
        provider=PROVIDER,
        instance_id=str(record["id"]),
        label=text_of(record.get("name")),
        state=state,
        running=running,
        stopped=desired == "EXITED" and not terminating,
        ssh_host=ip if up else None,
        ssh_port=ssh_port if up else None,
        price_per_hour=cost if cost is not None and cost >= 0 else None,
        started_at=timestamp_of(record.get("lastStartedAt")),
        public_ip=ip if up else None,
        ports=ports if up else {},
        terminate_at=timestamp_of(record.get("terminateAfter")),
        raw=record,
    )


def _mappings(value: Any) -> dict[int, int]:
    """`portMappings` ({"22": 22130}) as node port -> public port; odd entries are dropped."""
    if not isinstance(value, dict):
        return {}
    mapped: dict[int, int] = {}
    for inner, outer in value.items():
        port = number_of(outer)
        if str(inner).isdigit() and port is not None and 0 < port < 65536 and port == int(port):
            mapped[int(inner)] = int(port)
    return mapped


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


# --------------------------------------------------------------------------- the adapter


class RunPod(Provider):
    """RunPod's REST v1 API and its GraphQL API, with `Authorization: Bearer <key>`."""

    INFO: ClassVar[ProviderInfo] = ProviderInfo(
        name=PROVIDER,
        display_name="RunPod",
        credential_env=("RUNPOD_API_KEY",),
        default_base_url="https://rest.runpod.io/v1",
        base_url_env="RUNPOD_API_URL",
        provision_budget_s=1200.0,
        first_ssh_budget_s=120.0,
        capabilities=Capabilities(
            can_stop=True,
            provider_ttl=True,
            spot=True,
            instance_scoped_key=False,
            runs_images=True,
            node_watchdog=False,
        ),
    )
    """Pods are containers: a watchdog inside cannot power its host off, and we give the pod
    no key, so RunPod's own `terminateAfter` is the dead-man switch. 20 min to provision, as
    peers allow (an image pull and a public IP can take ~10 min, dstackai/dstack#1145)."""
    name: ClassVar[ProviderName] = PROVIDER
    readiness: ClassVar[Readiness] = Readiness(
        ssh_user=SSH_USER, initial_delay_s=INFO.first_ssh_budget_s, probe_dpkg_and_smi=False
    )
    rate: ClassVar[RateLimit] = RateLimit(per_second=4.0, burst=4)
    """[INFER] RunPod publishes no limit for these APIs; 4/s, burst 4, is well inside what
    its clients send. (Not 5/s: on a FakeClock, `RateLimiter` then waits for a float residue
    of 4e-17 s that never passes, so tests that pace calls hang.)"""
    can_stop: ClassVar[bool] = INFO.capabilities.can_stop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.graphql_url = graphql_url(self.http.base_url)
        self._terminating: set[str] = set()
        """Pods we asked to delete that may still be listed: never read as running or stopped."""

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    # ------------------------------------------------------------------ GraphQL

    async def _graphql(
        self,
        query: str,
        what: str,
        *,
        variables: dict[str, Any] | None = None,
        priority: Priority = Priority.NORMAL,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """The `data` of a GraphQL answer; `errors` in it (HTTP 200 or not) always raise."""
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        response = await self.http.request(
            "POST", self.graphql_url, json=payload, priority=priority, idempotent=idempotent
        )
        if not response.is_success:
            raise self._error(response, what)
        try:
            body = json_of(PROVIDER, response)
        except ProviderBug as err:
            if idempotent:
                raise
            raise TransientError(PROVIDER, err.message, ambiguous=True) from err
        if messages := graphql_messages(body):
            text = "; ".join(messages)
            error = classify(text, f"{what} failed: {text}")
            if not idempotent and type(error) is ProviderError:  # not a refusal we know
                raise TransientError(PROVIDER, error.message, ambiguous=True)
            raise error
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            if idempotent:
                raise ProviderBug(PROVIDER, f"{what}: a GraphQL answer without data")
            raise TransientError(PROVIDER, f"{what}: a GraphQL answer without data", ambiguous=True)
        return data

    # ------------------------------------------------------------------ offers

    async def list_offers(self, query: OfferQuery | None = None) -> OfferList:
        """Every GPU type, listed data centre, count and cloud in stock, on demand and spot.

        Two GraphQL requests: the catalogue, then every price in one aliased query. `query`
        is unused (the whole menu is two requests) and the answer is never capped.
        """
        catalogue = await self._graphql(
            CATALOGUE_QUERY, "reading the GPU catalogue", priority=Priority.BACKGROUND
        )
        try:
            gpus, dcs = parse_catalogue(catalogue)
        except ValueError as err:
            raise ProviderBug(PROVIDER, str(err)) from err
        text, keys = price_query(gpus, dcs)
        if not keys:
            return OfferList()
        prices = await self._graphql(text, "reading GPU prices", priority=Priority.BACKGROUND)
        try:
            return OfferList(normalize_offers(prices, keys, self.http.clock.now()))
        except ValueError as err:
            raise ProviderBug(PROVIDER, str(err)) from err

    # ------------------------------------------------------------------ create

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        """Rent the offer: an on-demand pod through REST `POST /pods`, a spot one (and only a
        spot one) through GraphQL `podRentInterruptable`, bidding the offer's price per GPU.
        `spec.terminate_at` goes with either as `terminateAfter` ([INFER] field name)."""
        try:
            key = offer_key(offer)
        except ValueError as err:
            raise ProviderError(PROVIDER, str(err)) from err
        gpu_type_id = key.gpu_type_id or await self._gpu_type_id(key.gpu)
        if key.spot:
            listed = number_of(offer.raw.get("bidPerGpu"))  # the minimum bid, exactly as listed
            bid = listed if listed is not None else offer.price_per_hour / offer.gpu_count
            pod_id = await self._rent(rent_input(key, gpu_type_id, spec, bid))
        else:
            pod_id = await self._deploy(pod_body(key, gpu_type_id, spec))
        if on_instance is not None:
            await on_instance(pod_id)
        return InstanceRef(PROVIDER, pod_id, spec.label)

    async def _gpu_type_id(self, squashed: str) -> str:
        """The GPU type id whose squashed form an offer id carries (an offer without `raw`)."""
        catalogue = await self._graphql(CATALOGUE_QUERY, "reading the GPU catalogue")
        try:
            gpus, _ = parse_catalogue(catalogue)
        except ValueError as err:
            raise ProviderBug(PROVIDER, str(err)) from err
        for gpu in gpus:
            if squash(gpu.id) == squashed:
                return gpu.id
        raise OfferGone(PROVIDER, f"RunPod no longer lists GPU type {squashed}")

    async def _deploy(self, body: dict[str, Any]) -> str:
        response = await self.http.request("POST", "/pods", json=body, idempotent=False)
        if not response.is_success:
            raise self._error(response, "creating a pod")
        try:
            pod = json_of(PROVIDER, response)
        except ProviderBug as err:  # it answered 2xx: the pod may well exist
            raise TransientError(PROVIDER, err.message, ambiguous=True) from err
        pod_id = text_of(pod.get("id")) if isinstance(pod, dict) else None
        if pod_id is None:
            raise TransientError(PROVIDER, "creating a pod answered without an id", ambiguous=True)
        return pod_id

    async def _rent(self, rent: dict[str, Any]) -> str:
        data = await self._graphql(
            RENT_MUTATION, "renting a spot pod", variables={"input": rent}, idempotent=False
        )
        pod = data.get("podRentInterruptable")
        pod_id = text_of(pod.get("id")) if isinstance(pod, dict) else None
        if pod_id is None:
            raise TransientError(
                PROVIDER, "renting a spot pod answered without an id", ambiguous=True
            )
        return pod_id

    # ------------------------------------------------------------------ pods

    async def get(self, instance_id: str) -> InstanceStatus | None:
        response = await self.http.request(
            "GET",
            self._pod(instance_id),
            params={"includeMachine": "true"},
            priority=Priority.URGENT,
        )
        if response.status_code == 404:
            reason = error_text(_json_or_text(response))
            if "not found" not in reason.lower():  # a wrong address, not RunPod's word
                raise ProviderBug(PROVIDER, f"reading pod {instance_id}: HTTP 404 ({reason})")
            self._terminating.discard(instance_id)
            return None
        status = self._status(self._ok(response, f"reading pod {instance_id}"))
        if status is None:
            self._terminating.discard(instance_id)
        return status

    async def list_labelled(self) -> list[InstanceStatus]:
        response = await self.http.request("GET", "/pods", priority=Priority.URGENT)
        records = self._ok(response, "listing pods")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ProviderBug(PROVIDER, "the pod list is not an array of objects")
        statuses = [self._status(r) for r in records if parse_label(text_of(r.get("name")))]
        return [s for s in statuses if s is not None]

    async def destroy(self, instance_id: str) -> None:
        """DELETE the pod; a 404 (already gone) is fine."""
        response = await self.http.request(
            "DELETE", self._pod(instance_id), priority=Priority.URGENT
        )
        if not response.is_success and response.status_code != 404:
            raise self._error(response, f"deleting pod {instance_id}")
        self._terminating.add(instance_id)

    async def stop(self, instance_id: str) -> None:
        """Stop the pod (`POST /pods/{id}/stop`): its volume stays and bills, its GPU may go."""
        await self._post(instance_id, "stop")

    async def start(self, instance_id: str) -> None:
        """Start a stopped pod again; no free GPU left on its host is a `CapacityError`."""
        await self._post(instance_id, "start")

    async def move_ttl(self, instance_id: str, at: datetime) -> None:
        """Move the pod's `terminateAfter` (`PATCH /pods/{id}`, [INFER] field)."""
        response = await self.http.request(
            "PATCH",
            self._pod(instance_id),
            json={"terminateAfter": iso(at)},
            priority=Priority.URGENT,
        )
        if not response.is_success:
            raise self._error(response, f"moving the time limit of pod {instance_id}")

    def stopped_price_per_hour(self, offer: Offer) -> float:
        """The volume only (`DEFAULT_DISK_GB` at `STOPPED_VOLUME_USD_PER_GB_MONTH`, [INFER])."""
        return round(DEFAULT_DISK_GB * STOPPED_VOLUME_USD_PER_GB_MONTH / HOURS_PER_MONTH, 6)

    async def check(self) -> None:
        response = await self.http.request("GET", "/pods", priority=Priority.URGENT)
        self._ok(response, "checking the API key")

    async def _post(self, instance_id: str, action: str) -> None:
        response = await self.http.request("POST", f"{self._pod(instance_id)}/{action}")
        if not response.is_success:
            raise self._error(response, f"{action} of pod {instance_id}")

    @staticmethod
    def _pod(instance_id: str) -> str:
        return f"/pods/{quote(instance_id, safe='')}"

    def _ok(self, response: httpx.Response, what: str) -> Any:
        """The JSON body of a 2xx answer; any other answer raises its mapped error."""
        if not response.is_success:
            raise self._error(response, what)
        return json_of(PROVIDER, response)

    def _status(self, record: Any) -> InstanceStatus | None:
        try:
            pod_id = record.get("id") if isinstance(record, dict) else None
            return parse_pod(record, terminating=pod_id in self._terminating)
        except (ValueError, ValidationError) as err:
            raise ProviderBug(PROVIDER, f"a pod we cannot read: {err}") from err

    @staticmethod
    def _error(response: httpx.Response, what: str) -> ProviderError:
        """The error for a non-2xx answer (429 and 5xx never get here: the HTTP layer owns
        them)."""
        status = response.status_code
        text = error_text(_json_or_text(response))
        return classify(text, f"{what} failed with HTTP {status}: {text}", status=status)
