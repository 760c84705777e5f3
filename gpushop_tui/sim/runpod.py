"""Simulated RunPod: REST v1 under `/v1` and GraphQL at `/graphql`, on one server.

provider-apis.md §5; [INFER] marks what the reference does not state.

- Auth: `Authorization: Bearer <key>` or `?api_key=<key>` (both APIs); missing or wrong is HTTP
  401 (`{"error": "Unauthorized"}` on REST, `{"errors": [...]}` on GraphQL, [INFER] bodies).
- Rate: more than `RATE_PER_S` requests within one second of world time (both APIs together)
  are refused with 429 and `Retry-After: 1` ([INFER]: RunPod publishes no limit;
  `World.rate_limited = False` turns it off).
- GraphQL is a real schema (`SDL`, executed by graphql-core): queries parse, and an unknown field,
  argument or input field is refused as a GraphQL server refuses it, with HTTP 200 and `errors`
  (as is every other GraphQL failure, e.g. RunPod's capacity message).
- The market: `KINDS` (8 GPU types with secure and community prices per GPU, spot minimum bids
  per GPU, `maxGpuCount`) in `DATA_CENTERS` (EU-SE-1 is unlisted), with `SUPPLY` GPUs per
  (type, data centre, cloud), used up by live pods; a stopped pod keeps its GPUs until its
  `release_s` has passed. `lowestPrice(input: {gpuCount, dataCenterId, countryCode,
  secureCloud, minCudaVersion, ...})` answers the cheapest match in stock with `stockStatus`
  High, Medium or Low, or null (with null `minVcpu`/`minMemory`) when none is.
- Create: REST `POST /pods` (201, the pod object) and GraphQL `podFindAndDeployOnDemand` rent
  on demand; `podRentInterruptable` rents spot at `bidPerGpu` per GPU (below the minimum bid is
  refused). Nothing in stock is RunPod's `NO_INSTANCES` (REST 400 `{"error"}`, [INFER] status).
  REST body fields outside `REST_FIELDS` are a 400 `{"error": "unknown field(s): ..."}`
  [INFER]. The pod's root authorized keys are its `PUBLIC_KEY` env (RunPod's images install
  it); each `<port>/tcp` other than 22 is published by its node (`extra["publish"]`).
  `terminateAfter` (ISO-8601, REST create and PATCH, GraphQL inputs; [INFER] from runpodctl's
  `--terminate-after`) is honoured on the world clock, running or stopped: the pod is ended at
  that time (`World.expire_limits`, lazily at each request to the simulator).
- Pods: `GET /pods` (an array), `GET /pods/{id}` (404 `{"error"}` when unknown or gone),
  `desiredStatus` RUNNING (booting: `publicIp` and `portMappings` null; up: `publicIp`
  127.0.0.1 and `portMappings` {"22": the SSH node's loopback port, "<p>": each published
  port's}), EXITED (stopped), TERMINATED (`DELETE`d, or ended by its `terminateAfter`: its bill
  ends at once, and it is listed for `TERMINATED_LINGER_S`, then 404). A destroy hit by
  `NodeFaults.destroy_stuck` stays listed for ever as EXITED with no
  runtime ([INFER]). Without SSH nodes, ports are made up (nothing listens there).
- `POST /pods/{id}/stop` stops at once (EXITED), keeping the volume; `POST /pods/{id}/start`
  boots it again, or, when its GPU was released and none is free, or with
  `NodeFaults.start_no_capacity`, answers 400 `NO_FREE_GPUS` ([INFER] words and status);
  with `start_never_completes` it stays RUNNING without an address. `PATCH /pods/{id}` takes
  `name` and `terminateAfter` only (the twin models no others). GraphQL `podStop`,
  `podResume`, `podTerminate` do the same.

What the official client (`runpod` 1.12.0) sends, always as inline arguments in
`{"query": ...}` POSTed to `$RUNPOD_API_BASE_URL/graphql` with a Bearer key; it raises on HTTP
401 and on any `errors` in the answer (the first message), and reads:
- `get_gpus()`: `gpuTypes { id displayName memoryInGb }` -> `data.gpuTypes`.
- `get_gpu(id, n)`: `gpuTypes(input: {id: "<id>"}) { maxGpuCount id displayName manufacturer
  memoryInGb cudaCores secureCloud communityCloud securePrice communityPrice oneMonthPrice
  threeMonthPrice oneWeekPrice communitySpotPrice secureSpotPrice lowestPrice(input:
  {gpuCount: n}) { minimumBidPrice uninterruptablePrice } }` -> the first entry (an empty list
  is its ValueError).
- `create_pod(name, image, gpu_type_id, ...)`: `get_gpu` first, then `podFindAndDeployOnDemand(
  input: {name, imageName, cloudType: ALL (an enum), startSsh: true, gpuTypeId,
  supportPublicIp: true, gpuCount: 1, volumeInGb: 0, minVcpuCount: 1, minMemoryInGb: 1,
  dataCenterId: null, dockerArgs: "", containerDiskInGb: 10, volumeMountPath: "/runpod-volume"}
  [+ ports: "8888/http,22/tcp", env: [{key, value}], countryCode, templateId, networkVolumeId,
  allowedCudaVersions, minDownload, minUpload]) { id imageName env machineId machine {
  podHostId } }` -> `data.podFindAndDeployOnDemand`.
- `get_pods()`: `myself { pods { id containerDiskInGb costPerHr desiredStatus dockerArgs dockerId
  env gpuCount imageName lastStatusChange machineId memoryInGb name podType port ports
  uptimeSeconds vcpuCount volumeInGb volumeMountPath runtime { ports { ip isIpPublic
  privatePort publicPort type } } machine { gpuDisplayName } } }`; `get_pod(id)`: the same
  fields of `pod(input: {podId: "<id>"})` -> `data.pod` (null when unknown or gone). `env` is
  a list of "KEY=value" strings here, `ports` one comma-separated string.
- `stop_pod(id)`: `podStop(input: {podId}) { id desiredStatus }`; `resume_pod(id, n)`:
  `podResume(input: {podId, gpuCount: n}) { id desiredStatus imageName env machineId machine {
  podHostId } }`; `terminate_pod(id)`: `podTerminate(input: {podId})`, no selection (a scalar).
"""

from __future__ import annotations

import math
import re
import string
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graphql import build_schema, graphql
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gpushop_tui.sim.http import endpoint, json_body, json_response, sim_app
from gpushop_tui.sim.world import TERMINATE_AFTER, SimInstance, World

PROVIDER = "runpod"
RATE_PER_S = 10.0
TERMINATED_LINGER_S = 30.0
"""How long a deleted pod stays listed as TERMINATED before it is 404 ([INFER])."""
CUDA = 12.8
DRIVER = "570.124.06"
PUBLIC_IP = "127.0.0.1"
NO_INSTANCES = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
NO_FREE_GPUS = "There are not enough free GPUs on the host machine to start this pod."
BID_TOO_LOW = "Your bid price is below the minimum bid price for this GPU type."
_POD_ID = string.ascii_lowercase + string.digits
_PORT = re.compile(r"^(\d{1,5})/(tcp|http|udp)$")


@dataclass(frozen=True)
class Kind:
    """One GPU type: its id (RunPod's, spaces and all), prices and bids per GPU per hour (None:
    not in that cloud, or no spot there), and what one GPU of it comes with."""

    id: str
    display: str
    memory_gb: int
    cuda_cores: int
    secure_price: float | None
    community_price: float | None
    secure_bid: float | None
    community_bid: float | None
    max_count: int
    vcpus: int
    ram_gb: int

    def price(self, secure: bool) -> float | None:
        return self.secure_price if secure else self.community_price

    def bid(self, secure: bool) -> float | None:
        return self.secure_bid if secure else self.community_bid


KINDS = {
    k.id: k
    for k in (
        Kind("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 16384, 0.69, 0.34, 0.35, 0.20, 8, 6, 41),
        Kind("NVIDIA GeForce RTX 3090", "RTX 3090", 24, 10496, None, 0.22, None, 0.11, 4, 4, 24),
        Kind("NVIDIA RTX A6000", "RTX A6000", 48, 10752, 0.49, 0.33, 0.25, 0.17, 8, 8, 50),
        Kind("NVIDIA L40S", "L40S", 48, 18176, 0.86, 0.79, 0.40, None, 8, 12, 62),
        Kind("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 6912, 1.64, 1.19, 0.82, 0.60, 8, 8, 117),
        Kind("NVIDIA A100-SXM4-80GB", "A100 SXM", 80, 6912, 1.74, None, 0.87, None, 8, 16, 125),
        Kind("NVIDIA H100 PCIe", "H100 PCIe", 80, 14592, 2.39, 1.99, 1.25, None, 8, 16, 188),
        Kind("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 16896, 2.99, None, None, None, 8, 20, 125),
    )
}
DATA_CENTERS = {
    "US-KS-2": ("Kansas City, US", "US", True),
    "US-TX-3": ("Dallas, US", "US", True),
    "EU-RO-1": ("Bucharest, RO", "RO", True),
    "CA-MTL-1": ("Montreal, CA", "CA", True),
    "EU-SE-1": ("Stockholm, SE", "SE", False),
}
"""Data centre id -> (name, country, listed)."""
_SUPPLY_TABLE: dict[str, dict[str, tuple[int, int]]] = {
    "NVIDIA GeForce RTX 4090": {"US-KS-2": (16, 8), "EU-RO-1": (8, 4), "CA-MTL-1": (0, 2)},
    "NVIDIA GeForce RTX 3090": {"US-TX-3": (0, 6), "EU-RO-1": (0, 1)},
    "NVIDIA RTX A6000": {"US-KS-2": (8, 0), "CA-MTL-1": (4, 4)},
    "NVIDIA L40S": {"US-TX-3": (8, 2), "EU-RO-1": (4, 0)},
    "NVIDIA A100 80GB PCIe": {"US-KS-2": (8, 2), "CA-MTL-1": (2, 0)},
    "NVIDIA A100-SXM4-80GB": {"US-TX-3": (8, 0)},
    "NVIDIA H100 PCIe": {"EU-RO-1": (1, 0)},
    "NVIDIA H100 80GB HBM3": {"US-KS-2": (8, 0), "US-TX-3": (0, 0)},
}
SUPPLY = {
    (gpu, dc, secure): gpus
    for gpu, sites in _SUPPLY_TABLE.items()
    for dc, pair in sites.items()
    for secure, gpus in zip((True, False), pair, strict=True)
    if gpus
}
"""GPUs in the whole market per (GPU type, data centre, secure cloud)."""
REST_FIELDS = frozenset(
    {
        "name", "imageName", "gpuTypeIds", "gpuCount", "containerDiskInGb", "volumeInGb",
        "volumeMountPath", "ports", "env", "cloudType", "dataCenterIds", "countryCodes",
        "supportPublicIp", "minCudaVersion", "dockerArgs", "templateId", "networkVolumeId",
        "computeType", "terminateAfter",
    }
)  # fmt: skip
"""The `POST /pods` body fields the twin knows: the reference's list, `countryCodes`, and
`terminateAfter` ([INFER])."""
PATCH_FIELDS = frozenset({"name", "terminateAfter"})

SDL = """
schema { query: Query mutation: Mutation }
scalar Void
enum CloudTypeEnum { ALL SECURE COMMUNITY }

type Query {
  countryCodes: [String]
  dataCenters: [DataCenter]
  gpuTypes(input: GpuTypeFilter): [GpuType]
  myself: User
  pod(input: PodFilter!): Pod
}

type Mutation {
  podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput!): Pod
  podRentInterruptable(input: PodRentInterruptableInput!): Pod
  podStop(input: PodStopInput!): Pod
  podResume(input: PodResumeInput!): Pod
  podTerminate(input: PodTerminateInput!): Void
}

type DataCenter { id: String! name: String listed: Boolean }

input GpuTypeFilter { id: String ids: [String] cluster: Boolean }

input GpuLowestPriceInput {
  gpuCount: Int dataCenterId: String countryCode: String secureCloud: Boolean
  minCudaVersion: String minDisk: Int minMemoryInGb: Int minVcpuCount: Int
}

type GpuType {
  id: String! displayName: String manufacturer: String memoryInGb: Int cudaCores: Int
  secureCloud: Boolean communityCloud: Boolean securePrice: Float communityPrice: Float
  secureSpotPrice: Float communitySpotPrice: Float oneMonthPrice: Float
  threeMonthPrice: Float oneWeekPrice: Float maxGpuCount: Int maxGpuCountSecureCloud: Int
  maxGpuCountCommunityCloud: Int minPodGpuCount: Int
  lowestPrice(input: GpuLowestPriceInput): LowestPrice
}

type LowestPrice {
  gpuName: String gpuTypeId: String minimumBidPrice: Float uninterruptablePrice: Float
  minVcpu: Float minMemory: Float stockStatus: String countryCode: String
  maxUnreservedGpuCount: Int
}

type User { id: String pubKey: String pods: [Pod] networkVolumes: [NetworkVolume] }
type NetworkVolume { id: String name: String size: Int dataCenterId: String }

type Pod {
  id: String! name: String containerDiskInGb: Int costPerHr: Float desiredStatus: String
  dockerArgs: String dockerId: String env: [String] gpuCount: Int imageName: String
  lastStatusChange: String machineId: String memoryInGb: Float podType: String port: Int
  ports: String uptimeSeconds: Int vcpuCount: Float volumeInGb: Float
  volumeMountPath: String runtime: PodRuntime machine: Machine
}
type PodRuntime { uptimeInSeconds: Int ports: [PodRuntimePort] }
type PodRuntimePort {
  ip: String isIpPublic: Boolean privatePort: Int publicPort: Int type: String
}
type Machine { podHostId: String gpuDisplayName: String location: String }

input PodFilter { podId: String! }
input PodStopInput { podId: String! incrementVersion: Boolean }
input PodResumeInput { podId: String! gpuCount: Int }
input PodTerminateInput { podId: String! }
input EnvironmentVariableInput { key: String! value: String }

input PodFindAndDeployOnDemandInput {
  name: String imageName: String cloudType: CloudTypeEnum startSsh: Boolean gpuTypeId: String
  supportPublicIp: Boolean gpuCount: Int volumeInGb: Int containerDiskInGb: Int
  minVcpuCount: Int minMemoryInGb: Int allowedCudaVersions: [String] dataCenterId: String
  countryCode: String dockerArgs: String ports: String volumeMountPath: String
  env: [EnvironmentVariableInput] templateId: String networkVolumeId: String
  minDownload: Int minUpload: Int terminateAfter: String
}

input PodRentInterruptableInput {
  bidPerGpu: Float! name: String imageName: String cloudType: CloudTypeEnum
  startSsh: Boolean gpuTypeId: String supportPublicIp: Boolean gpuCount: Int
  volumeInGb: Int containerDiskInGb: Int minVcpuCount: Int minMemoryInGb: Int
  allowedCudaVersions: [String] dataCenterId: String countryCode: String dockerArgs: String
  ports: String volumeMountPath: String env: [EnvironmentVariableInput] templateId: String
  networkVolumeId: String minDownload: Int minUpload: Int terminateAfter: String
}
"""
"""The slice of RunPod's GraphQL schema the twin serves: what gpuhunt, dstack and the official
client ask (type names as other clients use them; `terminateAfter` is [INFER])."""
SCHEMA = build_schema(SDL)


class Refused(Exception):
    """A request the provider turns down: `message` in its words, `status` on REST."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class Deploy:
    """A pod asked for, by REST or GraphQL."""

    name: str
    image: str
    gpu_ids: list[str]
    count: int
    cloud: str
    dcs: list[str] | None
    countries: list[str] | None
    ports: list[str]
    env: dict[str, str]
    container_disk_gb: int
    volume_gb: int
    mount: str
    terminate_after: float | None
    bid: float | None = None
    min_cuda: str | None = None
    min_vcpus: int = 0
    min_ram_gb: int = 0
    docker_args: str = ""


# --------------------------------------------------------------------------- the market


def _used(world: World, kind: Kind, dc: str, secure: bool) -> int:
    """GPUs of (kind, dc, cloud) held by pods: a stopped one until its GPU is released, a
    terminated one not at all."""
    now = world.now()
    key = _offer_key(kind, dc, secure)
    return sum(
        i.gpu_count
        for i in world.live(PROVIDER)
        if i.offer_id == key and not i.released(now) and i.destroyed_at is None
    )


def _offer_key(kind: Kind, dc: str, secure: bool) -> str:
    return f"{kind.id}|{dc}|{'SECURE' if secure else 'COMMUNITY'}"


def _free(world: World, kind: Kind, dc: str, secure: bool) -> int:
    return SUPPLY.get((kind.id, dc, secure), 0) - _used(world, kind, dc, secure)


def _stock(free: int, count: int) -> str | None:
    """`stockStatus` of `count` GPUs where `free` are left."""
    if free < count:
        return None
    return "High" if free >= 4 * count else "Medium" if free >= 2 * count else "Low"


def _places(
    kind: Kind,
    secure: bool | None,
    dcs: list[str] | None,
    countries: list[str] | None,
) -> list[tuple[str, bool]]:
    """(data centre, secure) pairs a request may land in, cheapest cloud first."""
    clouds = [c for c in (False, True) if secure in (None, c) and kind.price(c) is not None]
    clouds.sort(key=lambda c: kind.price(c) or 0.0)
    return [
        (dc, cloud)
        for cloud in clouds
        for dc, (_, country, listed) in DATA_CENTERS.items()
        if ((dcs is None and listed) or (dcs is not None and dc in dcs))
        and (countries is None or country in countries)
    ]


def _lowest_price(world: World, kind: Kind, given: dict[str, Any] | None) -> dict[str, Any]:
    """`lowestPrice(input)`: the cheapest place in stock for the GPU count asked, else nulls."""
    given = given or {}
    count = given.get("gpuCount") or 1
    dc, country = given.get("dataCenterId"), given.get("countryCode")
    secure = given.get("secureCloud")
    places = _places(kind, secure, [dc] if dc else None, [country] if country else None)
    cuda_ok = _cuda_ok(given.get("minCudaVersion"))
    stocked = [
        (p, status)
        for p in places
        if count <= kind.max_count
        and cuda_ok
        and (status := _stock(_free(world, kind, *p), count)) is not None
    ]
    if stocked:
        (where, cloud), status = stocked[0]
        return {
            "gpuName": kind.display,
            "gpuTypeId": kind.id,
            "minimumBidPrice": kind.bid(cloud),
            "uninterruptablePrice": kind.price(cloud),
            "minVcpu": float(kind.vcpus * count),
            "minMemory": float(kind.ram_gb * count),
            "stockStatus": status,
            "countryCode": DATA_CENTERS[where][1],
            "maxUnreservedGpuCount": _free(world, kind, where, cloud),
        }
    cheapest = places[0][1] if places else bool(secure)
    return {
        "gpuName": kind.display,
        "gpuTypeId": kind.id,
        "minimumBidPrice": kind.bid(cheapest),
        "uninterruptablePrice": kind.price(cheapest),
        "minVcpu": None,
        "minMemory": None,
        "stockStatus": None,
        "countryCode": None,
        "maxUnreservedGpuCount": 0,
    }


def _cuda_ok(wanted: Any) -> bool:
    """Whether the hosts' CUDA is at least `wanted` (a version string; None: anything)."""
    minimum = _cuda(wanted)
    return minimum is None or minimum <= CUDA


def _gpu_type(world: World, kind: Kind) -> dict[str, Any]:
    """A `GpuType` object; `lowestPrice` is resolved per call."""
    return {
        "id": kind.id,
        "displayName": kind.display,
        "manufacturer": "Nvidia",
        "memoryInGb": kind.memory_gb,
        "cudaCores": kind.cuda_cores,
        "secureCloud": kind.secure_price is not None,
        "communityCloud": kind.community_price is not None,
        "securePrice": kind.secure_price,
        "communityPrice": kind.community_price,
        "secureSpotPrice": kind.secure_bid,
        "communitySpotPrice": kind.community_bid,
        "oneMonthPrice": None,
        "threeMonthPrice": None,
        "oneWeekPrice": None,
        "maxGpuCount": kind.max_count,
        "maxGpuCountSecureCloud": kind.max_count if kind.secure_price is not None else 0,
        "maxGpuCountCommunityCloud": kind.max_count if kind.community_price is not None else 0,
        "minPodGpuCount": 1,
        "lowestPrice": lambda _info, input=None: _lowest_price(world, kind, input),
    }


# --------------------------------------------------------------------------- pods


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(ts: float) -> str:
    """A time as RunPod's `lastStatusChange` writes it (a JavaScript date string)."""
    return datetime.fromtimestamp(ts, UTC).strftime(
        "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)"
    )


def _parse_time(value: Any, field: str) -> float | None:
    """An ISO-8601 time as epoch seconds (None stays None); anything else is refused."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise Refused(f"{field}: invalid date-time {value!r}") from None
    if parsed.tzinfo is None:
        raise Refused(f"{field}: a date-time needs a timezone")
    return parsed.timestamp()


def _desired(instance: SimInstance, now: float) -> str:
    if instance.destroyed_at is not None:
        return "EXITED" if math.isinf(instance.destroyed_at) else "TERMINATED"
    return "EXITED" if instance.phase(now) == "stopped" else "RUNNING"


def _up(instance: SimInstance, now: float) -> bool:
    return instance.destroyed_at is None and instance.phase(now) == "running"


def _made_up_port(instance: SimInstance, port: int) -> int:
    return 10_000 + zlib.crc32(f"{instance.id}:{port}".encode()) % 50_000


def _mappings(instance: SimInstance) -> dict[str, int]:
    """`portMappings`: 22 on the SSH node's port, each published TCP port on its listener."""
    published: dict[str, int] = instance.extra.get("published", {})
    mapped = {"22": instance.ssh_port or _made_up_port(instance, 22)}
    for port in instance.extra.get("publish", []):
        mapped[str(port)] = published.get(str(port)) or _made_up_port(instance, port)
    return mapped


def rest_view(instance: SimInstance, now: float) -> dict[str, Any]:
    """A pod as REST `GET /pods/{id}` answers it."""
    x = instance.extra
    kind = KINDS[x["gpu_type_id"]]
    desired = _desired(instance, now)
    up = _up(instance, now)
    started = instance.powered_on_at or instance.created_at
    change = {"RUNNING": "Rented by User", "EXITED": "Exited by User"}.get(
        desired, "Terminated by User"
    )
    changed = instance.stopped_at if desired == "EXITED" and instance.stopped_at else started
    ttl = x.get(TERMINATE_AFTER)
    return {
        "id": instance.id,
        "name": instance.label,
        "desiredStatus": desired,
        "imageName": x["image"],
        "gpuCount": instance.gpu_count,
        "costPerHr": instance.price_per_hour,
        "containerDiskInGb": x["container_disk_gb"],
        "volumeInGb": x["volume_gb"],
        "volumeMountPath": x["mount"],
        "memoryInGb": kind.ram_gb * instance.gpu_count,
        "vcpuCount": kind.vcpus * instance.gpu_count,
        "ports": x["ports"],
        "env": x["env"],
        "dockerArgs": x["docker_args"],
        "machineId": x["machine_id"],
        "machine": {
            "podHostId": f"{instance.id}-{x['host_serial']}",
            "gpuDisplayName": kind.display,
            "location": DATA_CENTERS[x["dc"]][1],
            "dataCenterId": x["dc"],
        },
        "publicIp": PUBLIC_IP if up else None,
        "portMappings": _mappings(instance) if up else None,
        "lastStatusChange": f"{change}: {_when(changed)}",
        "lastStartedAt": _iso(started),
        "uptimeSeconds": int(now - started) if up else 0,
        "interruptible": x["bid"] is not None,
        "terminateAfter": _iso(ttl) if ttl is not None else None,
    }


def graphql_view(instance: SimInstance, now: float) -> dict[str, Any]:
    """A pod as GraphQL's `Pod` type reads it: `env` "KEY=value" strings, `ports` one string,
    `runtime` null until the container is up."""
    view = rest_view(instance, now)
    up = _up(instance, now)
    mapped = _mappings(instance) if up else {}
    runtime = {
        "uptimeInSeconds": view["uptimeSeconds"],
        "ports": [
            {
                "ip": PUBLIC_IP,
                "isIpPublic": True,
                "privatePort": int(inner),
                "publicPort": outer,
                "type": "tcp",
            }
            for inner, outer in mapped.items()
        ],
    }
    view.update(
        env=[f"{k}={v}" for k, v in view["env"].items()],
        ports=",".join(view["ports"]),
        dockerId=None,
        port=None,
        podType="INTERRUPTABLE" if view["interruptible"] else "RESERVED",
        runtime=runtime if up else None,
    )
    return view


def _choose(world: World, ask: Deploy) -> tuple[Kind, str, bool]:
    """Where a pod goes: the first GPU type asked with stock, cheapest place first."""
    if ask.count < 1:
        raise Refused("gpuCount must be at least 1")
    if not _cuda_ok(ask.min_cuda):
        raise Refused(NO_INSTANCES)
    secure = None if ask.cloud == "ALL" else ask.cloud == "SECURE"
    bid_too_low = False
    for gpu_id in ask.gpu_ids:
        kind = KINDS[gpu_id]
        if ask.count > kind.max_count or ask.min_vcpus > kind.vcpus * ask.count:
            continue
        if ask.min_ram_gb > kind.ram_gb * ask.count:
            continue
        for dc, cloud in _places(kind, secure, ask.dcs, ask.countries):
            if _free(world, kind, dc, cloud) < ask.count:
                continue
            if ask.bid is None:
                return kind, dc, cloud
            floor = kind.bid(cloud)
            if floor is not None and ask.bid >= floor:
                return kind, dc, cloud
            bid_too_low = bid_too_low or floor is not None
    raise Refused(BID_TOO_LOW if bid_too_low else NO_INSTANCES)


async def deploy(world: World, ask: Deploy) -> SimInstance:
    """Rent a pod as asked, or raise `Refused`."""
    unknown = [g for g in ask.gpu_ids if g not in KINDS]
    if unknown or not ask.gpu_ids:
        raise Refused(f"unknown GPU type: {', '.join(unknown) or 'none given'}")
    if not ask.image:
        raise Refused("imageName is required")
    kind, dc, secure = _choose(world, ask)
    per_gpu = ask.bid if ask.bid is not None else kind.price(secure)
    assert per_gpu is not None
    serial = world.next_id(PROVIDER)
    rng = world.rng(PROVIDER, f"pod:{serial}")
    pod_id = "".join(rng.choice(_POD_ID) for _ in range(14))
    keys = [line.strip() for line in ask.env.get("PUBLIC_KEY", "").splitlines() if line.strip()]
    publish = [
        int(m[1]) for p in ask.ports if (m := _PORT.match(p)) and m[2] == "tcp" and m[1] != "22"
    ]
    instance = await world.create_instance(
        PROVIDER,
        instance_id=pod_id,
        offer_id=_offer_key(kind, dc, secure),
        label=ask.name or f"pod-{pod_id}",
        gpu_name=kind.id,
        gpu_count=ask.count,
        vram_mb=kind.memory_gb * 1024,
        cuda=CUDA,
        price_per_hour=round(per_gpu * ask.count, 6),
        authorized_keys=keys,
        extra={
            "gpu_type_id": kind.id,
            "dc": dc,
            "cloud": "SECURE" if secure else "COMMUNITY",
            "image": ask.image,
            "env": ask.env,
            "ports": ask.ports,
            "publish": publish,
            "container_disk_gb": ask.container_disk_gb,
            "volume_gb": ask.volume_gb,
            "mount": ask.mount,
            "docker_args": ask.docker_args,
            TERMINATE_AFTER: ask.terminate_after,
            "bid": ask.bid,
            "machine_id": f"m{rng.getrandbits(40):010x}",
            "host_serial": 64_410_000 + serial,
        },
    )
    instance.driver = DRIVER
    world.save()
    return instance


def start(world: World, instance: SimInstance) -> None:
    """Start a stopped pod, or raise `Refused` (no free GPU on its host for it any more)."""
    now = world.now()
    if not instance.stopped:
        raise Refused("pod is already running")
    if instance.stopping(now):
        raise Refused("pod is still stopping")
    if world.faults.node(PROVIDER).start_no_capacity:
        instance.released_at = min(now, instance.released_at or now)
        world.save()
        raise Refused(NO_FREE_GPUS)
    x = instance.extra
    kind, secure = KINDS[x["gpu_type_id"]], x["cloud"] == "SECURE"
    if instance.released(now) and _free(world, kind, x["dc"], secure) < instance.gpu_count:
        raise Refused(NO_FREE_GPUS)
    world.power_on(PROVIDER, instance.id)


# --------------------------------------------------------------------------- REST bodies


def _rest_deploy(body: Any) -> Deploy:
    """A `POST /pods` body as a `Deploy`, or `Refused` (400) naming what is wrong."""
    if not isinstance(body, dict):
        raise Refused("request body must be a JSON object")
    if unknown := sorted(set(body) - REST_FIELDS):
        raise Refused(f"unknown field(s): {', '.join(unknown)}")
    for field in ("templateId", "networkVolumeId"):
        if body.get(field) is not None:
            raise Refused(f"{field}: not simulated")
    if body.get("computeType", "GPU") != "GPU":
        raise Refused("computeType: only GPU pods are simulated")
    cloud = body.get("cloudType", "SECURE")
    if cloud not in ("SECURE", "COMMUNITY"):
        raise Refused("cloudType must be SECURE or COMMUNITY")
    dcs, countries = body.get("dataCenterIds"), body.get("countryCodes")
    for field, value in (("dataCenterIds", dcs), ("countryCodes", countries)):
        if value is not None and not _strings(value):
            raise Refused(f"{field} must be a list of strings")
    if dcs is not None and (bad := [d for d in dcs if d not in DATA_CENTERS]):
        raise Refused(f"unknown data center(s): {', '.join(bad)}")
    env = body.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise Refused("env must be an object of strings")
    ports = body.get("ports", [])
    if not _strings(ports):
        raise Refused("ports must be a list of strings")
    gpu_ids = body.get("gpuTypeIds")
    if not _strings(gpu_ids) or not gpu_ids:
        raise Refused("gpuTypeIds must be a non-empty list of strings")
    return Deploy(
        name=_string(body, "name", ""),
        image=_string(body, "imageName", ""),
        gpu_ids=gpu_ids,
        count=_int(body, "gpuCount", 1),
        cloud=cloud,
        dcs=dcs,
        countries=countries,
        ports=_port_list(ports),
        env=env,
        container_disk_gb=_int(body, "containerDiskInGb", 50),
        volume_gb=_int(body, "volumeInGb", 20),
        mount=_string(body, "volumeMountPath", "/workspace"),
        terminate_after=_parse_time(body.get("terminateAfter"), "terminateAfter"),
        min_cuda=body.get("minCudaVersion"),
        docker_args=_string(body, "dockerArgs", ""),
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _string(body: dict[str, Any], field: str, default: str) -> str:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, str):
        raise Refused(f"{field} must be a string")
    return value


def _int(body: dict[str, Any], field: str, default: int) -> int:
    value = body.get(field)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Refused(f"{field} must be a non-negative integer")
    return value


def _cuda(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Refused(f"invalid minCudaVersion: {value!r}") from None


def _port_list(ports: list[str]) -> list[str]:
    for port in ports:
        match = _PORT.match(port)
        if match is None or not 0 < int(match[1]) < 65536:
            raise Refused(f"invalid port {port!r}: expected <port>/<tcp|http|udp>")
    return ports


def _graphql_deploy(given: dict[str, Any], bid: float | None) -> Deploy:
    """A GraphQL deploy input as a `Deploy` (the schema has checked the types)."""
    if not given.get("gpuTypeId"):
        raise Refused("gpuTypeId is required")
    for field in ("templateId", "networkVolumeId"):
        if given.get(field) is not None:
            raise Refused(f"{field}: not simulated")
    ports = [p for p in (given.get("ports") or "").split(",") if p]
    env = {e["key"]: e.get("value") or "" for e in given.get("env") or []}
    dc, country = given.get("dataCenterId"), given.get("countryCode")
    if dc is not None and dc not in DATA_CENTERS:
        raise Refused(f"unknown data center: {dc}")
    allowed = given.get("allowedCudaVersions")
    if allowed and not any(_cuda(v) == CUDA for v in allowed):
        raise Refused(NO_INSTANCES)
    return Deploy(
        name=given.get("name") or "",
        image=given.get("imageName") or "",
        gpu_ids=[given["gpuTypeId"]],
        count=given.get("gpuCount") or 1,
        cloud=given.get("cloudType") or "ALL",
        dcs=[dc] if dc else None,
        countries=[country] if country else None,
        ports=_port_list(ports),
        env=env,
        container_disk_gb=given.get("containerDiskInGb") or 0,
        volume_gb=given.get("volumeInGb") or 0,
        mount=given.get("volumeMountPath") or "/runpod-volume",
        terminate_after=_parse_time(given.get("terminateAfter"), "terminateAfter"),
        bid=bid,
        min_vcpus=given.get("minVcpuCount") or 0,
        min_ram_gb=given.get("minMemoryInGb") or 0,
        docker_args=given.get("dockerArgs") or "",
    )


# --------------------------------------------------------------------------- the app


class _Window:
    """Requests in the last second of world time, refused above `per_s` while the world
    enforces rate limits."""

    def __init__(self, world: World, per_s: float) -> None:
        self.world = world
        self.per_s = per_s
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        if not self.world.rate_limited:
            return True
        while self._times and self._times[0] <= now - 1.0:
            self._times.popleft()
        if len(self._times) >= self.per_s:
            return False
        self._times.append(now)
        return True


def _authorized(world: World, request: Request) -> bool:
    key = world.keys[PROVIDER]
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip() == key:
        return True
    return request.query_params.get("api_key") == key


def _error(message: str, status: int = 400) -> Response:
    return json_response({"error": message}, status)


def build_app(world: World) -> Starlette:
    """RunPod over `world`: REST v1 under `/v1`, GraphQL at `/graphql`."""
    window = _Window(world, RATE_PER_S)

    def route(name: str) -> Callable[[Any], Any]:
        def wrap(handler: Callable[[Request], Any]) -> Any:
            async def guarded(request: Request) -> Response:
                if not window.allow(world.now()):
                    refused = _error("Too Many Requests", 429)
                    refused.headers["Retry-After"] = "1"
                    return refused
                if not _authorized(world, request):
                    if name == "graphql":
                        return json_response({"errors": [{"message": "Unauthorized"}]}, 401)
                    return _error("Unauthorized", 401)
                response: Response = await handler(request)
                return response

            return endpoint(world, PROVIDER, name)(guarded)

        return wrap

    def listed(instance: SimInstance, now: float) -> bool:
        """Whether RunPod still shows the pod: not ended, or ended (`TERMINATED`, its bill
        over) less than `TERMINATED_LINGER_S` ago."""
        gone = instance.destroyed_at
        return gone is None or now < gone + TERMINATED_LINGER_S

    def pods_listed() -> list[SimInstance]:
        now = world.now()
        return [i for i in world.instances[PROVIDER].values() if listed(i, now)]

    def find(pod_id: str) -> SimInstance | None:
        instance = world.get(PROVIDER, pod_id)
        if instance is None or not listed(instance, world.now()):
            return None
        return instance

    def active(pod_id: str) -> SimInstance:
        """A pod that is neither gone nor being terminated, or `Refused` 404."""
        instance = find(pod_id)
        if instance is None or instance.destroyed_at is not None:
            raise Refused("pod not found", 404)
        return instance

    async def do_stop(instance: SimInstance) -> None:
        if instance.stopped:
            raise Refused("pod is not running")
        await world.power_off(PROVIDER, instance.id)

    @route("list")
    async def list_pods(request: Request) -> Response:
        now = world.now()
        return json_response([rest_view(i, now) for i in pods_listed()])

    @route("create")
    async def create(request: Request) -> Response:
        try:
            instance = await deploy(world, _rest_deploy(await json_body(request)))
        except Refused as refused:
            return _error(refused.message, refused.status)
        return json_response(rest_view(instance, world.now()), 201)

    @route("get")
    async def get(request: Request) -> Response:
        instance = find(request.path_params["id"])
        if instance is None:
            return _error("pod not found", 404)
        return json_response(rest_view(instance, world.now()))

    @route("update")
    async def update(request: Request) -> Response:
        body = await json_body(request)
        try:
            instance = active(request.path_params["id"])
            if not isinstance(body, dict):
                raise Refused("request body must be a JSON object")
            if unknown := sorted(set(body) - PATCH_FIELDS):
                raise Refused(f"unknown field(s): {', '.join(unknown)}")
            if "terminateAfter" in body:
                ttl = _parse_time(body["terminateAfter"], "terminateAfter")
                instance.extra[TERMINATE_AFTER] = ttl
            if "name" in body:
                instance.label = _string(body, "name", instance.label)
        except Refused as refused:
            return _error(refused.message, refused.status)
        world.save()
        return json_response(rest_view(instance, world.now()))

    @route("destroy")
    async def destroy(request: Request) -> Response:
        instance = find(request.path_params["id"])
        if instance is None:
            return _error("pod not found", 404)
        await world.destroy(PROVIDER, instance.id)
        return Response(status_code=204)

    @route("stop")
    async def stop_pod(request: Request) -> Response:
        try:
            instance = active(request.path_params["id"])
            await do_stop(instance)
        except Refused as refused:
            return _error(refused.message, refused.status)
        return json_response(rest_view(instance, world.now()))

    @route("start")
    async def start_pod(request: Request) -> Response:
        try:
            instance = active(request.path_params["id"])
            start(world, instance)
        except Refused as refused:
            return _error(refused.message, refused.status)
        return json_response(rest_view(instance, world.now()))

    def root() -> dict[str, Any]:
        """The GraphQL root: each field a resolver `(info, **arguments)`."""
        now = world.now()

        def pods(_info: Any) -> list[dict[str, Any]]:
            return [graphql_view(i, now) for i in pods_listed()]

        def pod(_info: Any, input: dict[str, Any]) -> dict[str, Any] | None:
            instance = find(input["podId"])
            return None if instance is None else graphql_view(instance, now)

        def gpu_types(_info: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            wanted = input or {}
            ids = set(wanted.get("ids") or []) | ({wanted["id"]} if wanted.get("id") else set())
            return [_gpu_type(world, k) for k in KINDS.values() if not ids or k.id in ids]

        async def on_demand(_info: Any, input: dict[str, Any]) -> dict[str, Any]:
            instance = await deploy(world, _graphql_deploy(input, None))
            return graphql_view(instance, world.now())

        async def interruptable(_info: Any, input: dict[str, Any]) -> dict[str, Any]:
            instance = await deploy(world, _graphql_deploy(input, input["bidPerGpu"]))
            return graphql_view(instance, world.now())

        async def pod_stop(_info: Any, input: dict[str, Any]) -> dict[str, Any]:
            instance = active(input["podId"])
            await do_stop(instance)
            return graphql_view(instance, world.now())

        def pod_resume(_info: Any, input: dict[str, Any]) -> dict[str, Any]:
            instance = active(input["podId"])
            start(world, instance)
            return graphql_view(instance, world.now())

        async def pod_terminate(_info: Any, input: dict[str, Any]) -> None:
            instance = find(input["podId"])
            if instance is None:
                raise Refused("pod not found", 404)
            await world.destroy(PROVIDER, instance.id)

        listed = sorted({c for _, c, shown in DATA_CENTERS.values() if shown})
        return {
            "countryCodes": listed,
            "dataCenters": [
                {"id": dc, "name": name, "listed": shown}
                for dc, (name, _, shown) in DATA_CENTERS.items()
            ],
            "gpuTypes": gpu_types,
            "myself": {"id": "user-sim", "pubKey": "", "pods": pods, "networkVolumes": []},
            "pod": pod,
            "podFindAndDeployOnDemand": on_demand,
            "podRentInterruptable": interruptable,
            "podStop": pod_stop,
            "podResume": pod_resume,
            "podTerminate": pod_terminate,
        }

    @route("graphql")
    async def graphql_endpoint(request: Request) -> Response:
        body = await json_body(request)
        query = body.get("query") if isinstance(body, dict) else None
        variables = body.get("variables") if isinstance(body, dict) else None
        if not isinstance(query, str) or not isinstance(variables, dict | None):
            return json_response({"errors": [{"message": "Must provide query string."}]}, 400)
        result = await graphql(
            SCHEMA,
            query,
            root_value=root(),
            variable_values=variables,
            operation_name=body.get("operationName"),
        )
        return json_response(result.formatted)

    return sim_app(
        world,
        [
            Route("/v1/pods", list_pods, methods=["GET"]),
            Route("/v1/pods", create, methods=["POST"]),
            Route("/v1/pods/{id}", get, methods=["GET"]),
            Route("/v1/pods/{id}", update, methods=["PATCH"]),
            Route("/v1/pods/{id}", destroy, methods=["DELETE"]),
            Route("/v1/pods/{id}/stop", stop_pod, methods=["POST"]),
            Route("/v1/pods/{id}/start", start_pod, methods=["POST"]),
            Route("/graphql", graphql_endpoint, methods=["POST"]),
        ],
    )
