"""Vast.ai (`console.vast.ai/api/v0`, plus `/api/v1/instances/`; provider-apis.md §1).

What this adapter knows that the API does not say:

- Search is `POST /bundles/` with a JSON query (`search_body`). GPU names go with spaces, numbers
  as numbers, `type` and the rentable/unrented/verified filters explicitly, a `limit` of 3000
  (the server's own default is undocumented and small), and `allocated_storage` equal to the
  disk a create asks for, so that `dph_total` is the price actually charged. The search has no
  paging, so what the query can say goes with it: Vast matches exact GPU names only, so the
  free-text GPU becomes the list of Vast's names (`GET /gpu_names/unique/`) it can match. An
  answer of exactly `limit` rows is capped (`OfferList.truncated`).
- `gpu_ram` is MB (24 GB cards report ~24564): VRAM comes from the catalogue with the MB figure
  as a hint, never from truncating division (prior-art §4.1: a 5090 showed 31 GB). `cpu_ram`
  is the whole machine's, so an offer's RAM is its share, by CPU cores (gpuhunt's rule).
- `geolocation` is free text ("Texas, US", "Norway", ", CN"); the country is its trailing code.
- Create (`PUT /asks/{id}/`) answers `new_contract`, the instance id, which is handed on at once;
  the SSH key is then attached per instance, because a create-time key is unreliable (§1.4).
  `cancel_unavail` makes a taken offer fail with 410 instead of creating a stopped instance.
  A port is published only by an `env` key `-p N:N` (§1.4); once running, the instance's
  Docker-style `ports` says where each answers on `public_ipaddr` (§1.6).
- A gone instance reads `{"instances": null}` with HTTP 200, or 404 `no_such_instance`.
- 429s come plain-text without `Retry-After` (`ProviderHttp` backs off), sometimes with one
  (honoured), and as a JSON daily search quota that only UTC midnight clears (not retried).
"""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, ClassVar, NoReturn

import httpx
from pydantic import TypeAdapter, ValidationError

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
    RateLimitCheck,
    RateLimited,
    Readiness,
    TransientError,
    json_of,
    number_of,
    parse_label,
)
from gpushop_tui.providers.gpus import lookup_gpu
from gpushop_tui.query import squash

log = logging.getLogger(__name__)

PROVIDER: ProviderName = "vastai"
SEARCH_LIMIT = 3000
"""gpuhunt's "fetch all": the server's own default would cut the market short. The search has no
paging and documents no larger limit (§1.2), so a larger market comes back capped: the query is
pushed down to keep what it asks for among these rows, and a full answer says it is capped."""
VRAM_SLACK = 0.07
"""gpuhunt's tolerance on `gpu_ram`: Vast's MB figures sit a little off the card's size."""
GPU_NAMES_TTL_S = 3600.0
"""How long Vast's list of GPU names (`GET /gpu_names/unique/`) is reused."""
SEARCH_DISK_GB = DEFAULT_DISK_GB
"""The disk priced into `dph_total` at search: the one a create asks for unless told otherwise."""
IMAGE = "vastai/base-image:@vastai-automatic-tag"
"""Vast's base image, tagged by Vast to match the host's CUDA (§1.4)."""
V1_PAGE = 25
"""The v1 list's largest page."""
MAX_PAGES = 400
"""A list longer than 10,000 instances means a cursor that never ends, not a real account."""
ATTACH_ROUNDS = 3
ATTACH_PAUSE_S = 5.0
"""After the HTTP layer's own retries, attaching the key is tried again this often, this far
apart: the instance already bills, so giving up early is the expensive choice."""

_V0_SUFFIX = re.compile(r"/api/v0/?$")
_GONE_ERRORS = frozenset({"no_such_instance", "not_found"})
_OPTIONAL = frozenset(
    {"vcpus", "ram_gb", "disk_gb", "region", "country", "reliability", "cuda", "inet_down_mbps"}
)
_OFFERS = TypeAdapter(list[Offer])
_CHUNK = 500
_GpuCache = dict[tuple[Any, Any], tuple[str, float]]

_COUNTRY_NAMES = {
    "australia": "AU", "austria": "AT", "belgium": "BE", "brazil": "BR", "bulgaria": "BG",
    "canada": "CA", "china": "CN", "croatia": "HR", "czechia": "CZ", "czech republic": "CZ",
    "denmark": "DK", "estonia": "EE", "finland": "FI", "france": "FR", "germany": "DE",
    "greece": "GR", "hong kong": "HK", "hungary": "HU", "iceland": "IS", "india": "IN",
    "ireland": "IE", "israel": "IL", "italy": "IT", "japan": "JP", "latvia": "LV",
    "lithuania": "LT", "luxembourg": "LU", "malaysia": "MY", "mexico": "MX", "netherlands": "NL",
    "new zealand": "NZ", "norway": "NO", "poland": "PL", "portugal": "PT", "romania": "RO",
    "serbia": "RS", "singapore": "SG", "slovakia": "SK", "slovenia": "SI", "south africa": "ZA",
    "south korea": "KR", "korea": "KR", "spain": "ES", "sweden": "SE", "switzerland": "CH",
    "taiwan": "TW", "thailand": "TH", "turkey": "TR", "ukraine": "UA",
    "united arab emirates": "AE", "united kingdom": "GB", "united states": "US", "vietnam": "VN",
}  # fmt: skip
"""Countries Vast sometimes names in full ("Norway") instead of ending with a code."""
_CODE_ALIASES = {"UK": "GB"}
_SIZE = re.compile(r"\d+\s*gb\b")


# --------------------------------------------------------------------------- search


def search_body(
    query: OfferQuery | None, disk_gb: float, gpu_names: Collection[str] = ()
) -> dict[str, Any]:
    """The `POST /bundles/` body for `query`, pricing `disk_gb` of storage into `dph_total`.

    What the query can say in Vast's own terms is sent, so that the cheapest `SEARCH_LIMIT` rows
    are the cheapest that match (a hint: the inventory filters every offer again, so each bound
    is inclusive and a little wide where units differ). The GPU text goes as the Vast names
    (`gpu_names`, Vast's list) it can match, VRAM as `gpu_ram` in MB and 2-letter regions as
    `geolocation` country codes; what cannot be said exactly is not sent.
    """
    body: dict[str, Any] = {
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "verified": {"eq": True},
        "type": "on-demand",
        "order": [["dph_total", "asc"]],
        "limit": SEARCH_LIMIT,
        "allocated_storage": float(disk_gb),
    }
    if query is None:
        return body
    bounds: list[tuple[str, str, float | None]] = [
        ("num_gpus", "gte", query.min_gpus),
        ("num_gpus", "lte", query.max_gpus),
        ("dph_total", "gte", query.min_price),
        ("dph_total", "lte", query.max_price),
        ("reliability2", "gte", query.min_reliability),
        ("cuda_max_good", "gte", query.min_cuda),
    ]
    if query.min_vram_gb is not None:
        low = min(query.min_vram_gb * (1 - VRAM_SLACK), query.min_vram_gb - 0.5)
        bounds.append(("gpu_ram", "gte", low * 1024))
    if query.max_vram_gb is not None:
        high = max(query.max_vram_gb * (1 + VRAM_SLACK), query.max_vram_gb + 0.5)
        bounds.append(("gpu_ram", "lte", high * 1024))
    for column, op, value in bounds:
        if value is not None:
            body.setdefault(column, {})[op] = int(value) if column == "num_gpus" else float(value)
    if query.gpu and (names := vast_gpu_names(query.gpu, gpu_names)):
        body["gpu_name"] = {"in": names}
    if query.region and (codes := _country_codes(query.region)):
        body["geolocation"] = {"in": codes}
    return body


def _unsized(text: str) -> str:
    """`squash`ed text without the memory sizes it states ("A100 80GB PCIe" → "a100pcie")."""
    return squash(_SIZE.sub(" ", text.lower()))


def vast_gpu_names(gpu: str, names: Collection[str]) -> list[str]:
    """The Vast GPU names whose offers the query's GPU text (`gpu=`) can match; empty when none
    does (then the GPU is filtered locally only).

    Each Vast name is read as the inventory reads it (the catalogue's canonical name). Memory
    sizes are left out of the comparison: Vast's "A100 PCIE" is the 40 or the 80 GB card by
    its `gpu_ram`, so "a100 80gb" must send it too.
    """
    parts = [unsized for part in gpu.split(",") if (unsized := _unsized(part))]
    canonical = {name: _unsized(_gpu_of(name, None)[0]) for name in names}
    return sorted(name for name, text in canonical.items() if any(p in text for p in parts))


def _country_codes(region: str) -> list[str]:
    """The query's regions as Vast's country codes, if every one is a 2-letter code (a longer
    region matches the free-text place locally, which Vast cannot filter on); else none."""
    wanted = [part.strip().upper() for part in region.split(",") if part.strip()]
    if not all(len(code) == 2 and code.isascii() and code.isalpha() for code in wanted):
        return []
    aliases = [alias for alias, code in _CODE_ALIASES.items() if code in wanted]
    return list(dict.fromkeys([*wanted, *aliases]))


@lru_cache(maxsize=4096)
def place_of(geolocation: str) -> tuple[str | None, str | None]:
    """(region, ISO country code) from Vast's free-text `geolocation`; None where unreadable.

    "Texas, US" → ("Texas, US", "US"); "Norway" → ("Norway", "NO"); ", CN" → ("CN", "CN").
    """
    region = geolocation.strip(" ,\t\n") or None
    if region is None:
        return None, None
    tail = region.rsplit(",", 1)[-1].strip()
    if len(tail) == 2 and tail.isascii() and tail.isalpha():
        code = tail.upper()
        return region, _CODE_ALIASES.get(code, code)
    return region, _COUNTRY_NAMES.get(tail.lower())


def _gpu_of(name: Any, ram_mb: Any) -> tuple[str, float]:
    """(canonical name, VRAM GB per card) from the catalogue, with `gpu_ram` (MB) as the hint.
    Vast abbreviates Quadro to "Q" ("Q RTX 8000"). No name at all gives an invalid blank."""
    if not isinstance(name, str) or not name.strip():
        return "", 0.0
    hint = ram_mb / 1024 if number_of(ram_mb) else None
    spelling = name.strip()
    if spelling.startswith("Q "):
        spelling = "Quadro " + spelling[2:]
    model = lookup_gpu(spelling, hint)
    return model.name, model.vram_gb


def _shape(row: dict[str, Any], fetched_at: datetime, gpus: _GpuCache) -> dict[str, Any]:
    """One search row as the fields of an `Offer` (not yet validated; `raw` is attached later).

    RAM is the offer's share: `cpu_ram` (MB) is the whole machine's, so it is pro-rated by the
    offer's share of CPU cores (gpuhunt's rule), and unknown when either core count is.
    """
    get = row.get
    key = (get("gpu_name"), get("gpu_ram"))
    try:
        gpu = gpus[key]
    except KeyError:
        gpu = gpus[key] = _gpu_of(*key)
    except TypeError:  # an unhashable value from odd JSON; not worth caching
        gpu = _gpu_of(*key)
    ram, cores, share = get("cpu_ram"), get("cpu_cores"), get("cpu_cores_effective")
    try:
        ram_gb = ram * share / cores / 1024 if ram and cores and share else None
    except TypeError:
        ram_gb = None
    reliability = get("reliability2")
    if reliability is None:
        reliability = get("reliability")
    geolocation = get("geolocation")
    region, country = place_of(geolocation) if isinstance(geolocation, str) else (None, None)
    offer_id = get("id")
    if offer_id is None:
        offer_id = get("ask_contract_id")
    return {
        "id": "" if offer_id is None else f"vastai:{offer_id}",
        "provider": PROVIDER,
        "gpu_name": gpu[0],
        "gpu_count": get("num_gpus"),
        "vram_gb": gpu[1],
        "price_per_hour": get("dph_total"),
        "vcpus": share,
        "ram_gb": ram_gb,
        "disk_gb": get("disk_space"),
        "region": region,
        "country": country,
        "reliability": reliability,
        "cuda": get("cuda_max_good"),
        "inet_down_mbps": get("inet_down"),
        "interruptible": False,
        "fetched_at": fetched_at,
        "raw": {},
    }


def _with_raw(offer: Offer, row: dict[str, Any]) -> Offer:
    """`offer` carrying `row` as `raw`, written past validation: a search row is a JSON object,
    so it already is the `dict[str, Any]` the field wants, and validating it would only copy its
    ~100 keys, which takes about as long as validating all the other fields."""
    offer.__dict__["raw"] = row
    return offer


def _validate_one(shaped: dict[str, Any]) -> Offer | None:
    """One offer, validated; a bad optional field becomes None, a bad essential one drops it."""
    try:
        return Offer.model_validate(shaped)
    except ValidationError as err:
        bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
        if not bad or not bad <= _OPTIONAL:
            log.debug("vastai: offer %s skipped: %s", shaped.get("id") or "?", err)
            return None
    try:
        return Offer.model_validate({**shaped, **dict.fromkeys(bad)})
    except ValidationError as err:
        log.debug("vastai: offer %s skipped: %s", shaped.get("id") or "?", err)
        return None


def _validate_all(shaped: list[dict[str, Any]]) -> list[Offer | None]:
    """Every shaped offer validated, `_CHUNK` at a time in one pass each; a chunk with a bad
    row is validated row by row (see `_validate_one`), so one odd row from Vast costs little."""
    offers: list[Offer | None] = []
    for start in range(0, len(shaped), _CHUNK):
        chunk = shaped[start : start + _CHUNK]
        try:
            offers += _OFFERS.validate_python(chunk)
        except ValidationError:
            offers += [_validate_one(one) for one in chunk]
    return offers


def normalize_offers(rows: Sequence[Any], fetched_at: datetime) -> list[Offer]:
    """Search rows as `Offer`s, every one validated by pydantic. A row that is not an object, or
    lacks an essential field, is left out (counted in one warning, each reason logged at debug);
    if every row is, the answer is not understood and raises ProviderBug.

    The cyclic garbage collector is paused meanwhile (first thing, before anything is
    allocated): the ~60,000 objects built for 20,000 offers form no cycles, and would otherwise
    set off repeated collections, some over the whole heap, that double the time taken.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        objects = [row for row in rows if isinstance(row, dict)]
        gpus: _GpuCache = {}
        shaped = [_shape(row, fetched_at, gpus) for row in objects]
        offers = _validate_all(shaped)
        kept = [_with_raw(offer, row) for offer, row in zip(offers, objects, strict=True) if offer]
    finally:
        if collecting:
            gc.enable()
    if len(kept) < len(rows):
        log.warning("vastai: %d of %d offers could not be read", len(rows) - len(kept), len(rows))
    if rows and not kept:
        raise ProviderBug(PROVIDER, f"none of the {len(rows)} offers could be read")
    return kept


def normalize_offer(row: dict[str, Any], fetched_at: datetime) -> Offer:
    """One search row as an `Offer` (ProviderBug if it cannot be one)."""
    return normalize_offers([row], fetched_at)[0]


def quota_exhausted(response: httpx.Response, now: datetime) -> RateLimited | None:
    """The daily search quota's 429 (`{"error": "search_quota_exceeded"}`) as an error that
    lasts until the next UTC midnight; None for the ordinary 429s, which are worth retrying."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("error") != "search_quota_exceeded":
        return None
    until = datetime.combine(
        now.astimezone(UTC).date() + timedelta(days=1), datetime.min.time(), UTC
    )
    return RateLimited(
        PROVIDER,
        f"the daily search quota is used up until {until:%Y-%m-%d %H:%M} UTC",
        until=until,
    )


# --------------------------------------------------------------------------- instances


def _ssh_address(row: dict[str, Any]) -> tuple[str | None, int | None]:
    """Direct SSH (`public_ipaddr` and the host port mapped to 22) when mapped, else the proxy
    (`ssh_host:ssh_port`, +1 for jupyter images), as the official `ssh-url` does."""
    ports = row.get("ports")
    ip = row.get("public_ipaddr")
    mapped = ports.get("22/tcp") if isinstance(ports, dict) else None
    if isinstance(ip, str) and ip.strip() and isinstance(mapped, list) and mapped:
        first = mapped[0]
        port = first.get("HostPort") if isinstance(first, dict) else None
        if port is not None and str(port).strip().isdigit():
            return ip.strip(), int(port)
    host, port = row.get("ssh_host"), number_of(row.get("ssh_port"))
    if isinstance(host, str) and host.strip() and port:
        bump = 1 if "jupyter" in str(row.get("image_runtype") or "") else 0
        return host.strip(), int(port) + bump
    return None, None


def _published(row: dict[str, Any]) -> dict[int, int]:
    """The TCP ports Docker-style `ports` publishes ({"8000/tcp": [{"HostIp", "HostPort"}]}):
    node port -> host port, the first readable entry of each (IPv6 duplicates are common)."""
    ports = row.get("ports")
    published: dict[int, int] = {}
    if not isinstance(ports, dict):
        return published
    for key, entries in ports.items():
        inner, _, proto = str(key).partition("/")
        if proto not in ("", "tcp") or not inner.isdigit() or not isinstance(entries, list):
            continue
        hosts = [str(e.get("HostPort", "")).strip() for e in entries if isinstance(e, dict)]
        host = next((int(h) for h in hosts if h.isdigit() and 0 < int(h) < 65536), None)
        if host is not None:
            published[int(inner)] = host
    return published


def _state_word(row: dict[str, Any]) -> str:
    """Vast's `actual_status`, or "creating" before it has one. A start still waiting for the
    host's GPUs (`intended_status` running, `actual_status` still stopped) is "scheduling", the
    console's word for it (provider-apis.md §1.7, §1.8): not running, and no GPU billed."""
    status = row.get("actual_status")
    if status == "stopped" and row.get("intended_status") == "running":
        return "scheduling"
    return str(status) if status else "creating"


def parse_instance(row: Any) -> InstanceStatus:
    """One instance object (`GET /instances/{id}/` or a list row) as an `InstanceStatus`:
    running once `actual_status` is "running", stopped (disk billed only) once it is "stopped"
    and meant to be, neither while "scheduling"."""
    if not isinstance(row, dict) or row.get("id") is None:
        raise ProviderBug(PROVIDER, "an instance came back without an id")
    status, state = row.get("actual_status"), _state_word(row)
    host, port = _ssh_address(row)
    started = number_of(row.get("start_date"))
    ip = row.get("public_ipaddr")
    try:
        return InstanceStatus(
            provider=PROVIDER,
            instance_id=str(row["id"]),
            label=row.get("label") or None,
            state=state,
            running=status == "running",
            stopped=state == "stopped",
            ssh_host=host,
            ssh_port=port,
            price_per_hour=number_of(row.get("dph_total")),
            started_at=datetime.fromtimestamp(started, UTC) if started else None,
            public_ip=(ip.strip() or None) if isinstance(ip, str) else None,
            ports=_published(row),
            raw=row,
        )
    except (ValidationError, ValueError, OverflowError) as err:
        raise ProviderBug(PROVIDER, f"instance {row['id']} could not be read: {err}") from err


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """(Vast's error code, its message) from an error answer; the body text when not JSON."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200].strip()
    if not isinstance(body, dict):
        return "", str(body)[:200]
    code = str(body.get("error") or "")
    text = body.get("msg") or body.get("message") or body.get("detail") or code
    return code, str(text)


def _is_auth(code: str, text: str) -> bool:
    """Whether an error names the credential (one Vast spec answers a bad key with 404)."""
    return code == "auth_error" or "user key" in text.lower()


def _is_gone(response: httpx.Response) -> bool:
    """Whether a 404 is Vast saying the instance does not exist: `no_such_instance` or
    `not_found`, or an "Instance … not found." message. A bad key, or the bare "Not Found" of a
    mistyped base URL, must never read as "the instance is gone"."""
    code, text = _error_of(response)
    if code in _GONE_ERRORS:
        return True
    lowered = text.lower()
    return not code and "instance" in lowered and "not found" in lowered


def _contract_id(value: Any) -> int | None:
    """`new_contract` as an instance id; None when absent or 0 (no instance was made)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --------------------------------------------------------------------------- the adapter


class VastAi(Provider):
    """Vast.ai's marketplace: on-demand offers, root over direct SSH or Vast's proxy."""

    INFO: ClassVar[ProviderInfo] = ProviderInfo(
        name=PROVIDER,
        display_name="Vast.ai",
        credential_env=("VASTAI_API_KEY",),
        default_base_url="https://console.vast.ai/api/v0",
        base_url_env="VASTAI_API_URL",
        provision_budget_s=900.0,
        first_ssh_budget_s=0.0,
        capabilities=Capabilities(
            can_stop=True,
            provider_ttl=False,
            spot=False,
            instance_scoped_key=True,
            runs_images=True,
        ),
    )
    """The base ends in /api/v0 (the v1 list endpoint is derived from it). Vast says running
    only once the container is up, so SSH is tried at once. Search asks for on-demand offers
    only (`type`), so no bid offers; create answers `instance_api_key` (§1.4)."""
    name: ClassVar[ProviderName] = PROVIDER
    readiness: ClassVar[Readiness] = Readiness(
        ssh_user="root", initial_delay_s=INFO.first_ssh_budget_s, probe_dpkg_and_smi=False
    )
    rate: ClassVar[RateLimit] = RateLimit(per_second=1.0, burst=2)
    final_429: ClassVar[RateLimitCheck | None] = staticmethod(quota_exhausted)
    can_stop: ClassVar[bool] = INFO.capabilities.can_stop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._names: tuple[float, tuple[str, ...]] | None = None
        """When Vast's GPU names were fetched (monotonic) and what they were."""

    @staticmethod
    def auth_headers(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    # ------------------------------------------------------------------ plumbing

    def _fail(self, response: httpx.Response, what: str) -> NoReturn:
        """Raise the error an unsuccessful answer means."""
        code, text = _error_of(response)
        status = response.status_code
        detail = f"{what} failed: HTTP {status}" + (f" {code}" if code else "")
        message = f"{detail}: {text}" if text and text != code else detail
        if status in (401, 403) or _is_auth(code, text):
            raise AuthError(self.name, message, status=status)
        if status == 404:
            raise NotFound(self.name, message, status=status)
        raise ProviderError(self.name, message, status=status)

    def _gone_or_raise(self, response: httpx.Response, what: str) -> None:
        """Return if a 404 says the instance is gone; raise if it says anything else."""
        if _is_gone(response):
            return
        code, text = _error_of(response)
        if _is_auth(code, text):
            self._fail(response, what)
        raise ProviderBug(self.name, f"{what}: HTTP 404 that names no instance: {text[:120]}")

    def _object(self, response: httpx.Response, what: str) -> dict[str, Any]:
        """The JSON object of a successful answer; raises what any other answer means."""
        if not response.is_success:
            self._fail(response, what)
        body = json_of(self.name, response)
        if not isinstance(body, dict):
            raise ProviderBug(self.name, f"{what} answered {type(body).__name__}, not an object")
        if body.get("success") is False:
            self._fail(response, what)
        return body

    # ------------------------------------------------------------------ offers

    async def list_offers(self, query: OfferQuery | None = None) -> OfferList:
        names = await self._gpu_names() if query is not None and query.gpu else ()
        response = await self.http.request(
            "POST",
            "/bundles/",
            json=search_body(query, SEARCH_DISK_GB, names),
            priority=Priority.BACKGROUND,
        )
        body = self._object(response, "search offers")
        rows = body.get("offers")
        if not isinstance(rows, list):
            raise ProviderBug(self.name, "search offers answered without an 'offers' list")
        offers = normalize_offers(rows, self.http.clock.now())
        return OfferList(offers, truncated=len(rows) >= SEARCH_LIMIT)

    async def _gpu_names(self) -> tuple[str, ...]:
        """Vast's GPU names, reused for `GPU_NAMES_TTL_S`; none if Vast will not say (then the
        GPU is not pushed down, and a capped answer says so)."""
        now = self.http.clock.monotonic()
        if self._names is not None and now - self._names[0] < GPU_NAMES_TTL_S:
            return self._names[1]
        try:
            response = await self.http.request(
                "GET", "/gpu_names/unique/", priority=Priority.BACKGROUND
            )
            listed = self._object(response, "listing GPU names").get("gpu_names")
        except ProviderError as err:
            log.warning("vastai: GPU names unavailable, the GPU is filtered locally: %s", err)
            return ()
        names = tuple(n for n in listed if isinstance(n, str)) if isinstance(listed, list) else ()
        self._names = (now, names)
        return names

    # ------------------------------------------------------------------ create

    async def create(
        self, offer: Offer, spec: CreateSpec, on_instance: InstanceIdSink | None = None
    ) -> InstanceRef:
        ask = offer.provider_offer_id
        direct = (number_of(offer.raw.get("direct_port_count")) or 0) >= 1
        body = {
            "client_id": "me",
            "image": spec.image or IMAGE,
            "disk": float(spec.disk_gb),
            "label": spec.label,
            "runtype": "ssh_direc ssh_proxy" if direct else "ssh_proxy",
            "onstart": spec.onstart,
            "env": {f"-p {port}:{port}": "1" for port in spec.ports},
            "price": None,
            "cancel_unavail": True,
            "target_state": "running",
        }
        response = await self.http.request(
            "PUT", f"/asks/{ask}/", json=body, idempotent=False, priority=Priority.NORMAL
        )
        if not response.is_success:
            self._create_failed(response, ask)
        try:
            answer = response.json()
        except ValueError as err:
            raise TransientError(
                self.name,
                f"renting offer {ask} answered HTTP {response.status_code} without JSON",
                status=response.status_code,
                ambiguous=True,
            ) from err
        contract = _contract_id(answer.get("new_contract")) if isinstance(answer, dict) else None
        if contract is None:
            if isinstance(answer, dict) and answer.get("success") is False:
                self._create_failed(response, ask)
            raise TransientError(
                self.name,
                f"renting offer {ask} answered without an instance id",
                status=response.status_code,
                ambiguous=True,
            )
        instance_id = str(contract)
        if on_instance is not None:
            await on_instance(instance_id)
        if answer.get("success") is False:
            _, text = _error_of(response)
            raise CapacityError(
                self.name,
                f"instance {instance_id} was created for offer {ask} but not started: {text}",
                instance_id=instance_id,
            )
        await self._attach_key(instance_id, spec.ssh_public_key)
        key = answer.get("instance_api_key")
        scoped = key if isinstance(key, str) and key.strip() else None
        return InstanceRef(self.name, instance_id, spec.label, instance_key=scoped)

    def _create_failed(self, response: httpx.Response, ask: str) -> NoReturn:
        """Raise what a refused rent means: the offer is gone, the key is bad, or else."""
        code, text = _error_of(response)
        status = response.status_code
        if code == "no_such_ask" or "no_such_ask" in text or status == 410:
            raise OfferGone(self.name, f"offer {ask} is no longer available: {text}", status=status)
        if status == 403 and "not your own" in text.lower():
            raise OfferGone(self.name, f"offer {ask} cannot be rented: {text}", status=status)
        if status == 404 and not _is_auth(code, text):
            raise OfferGone(self.name, f"offer {ask} is not available: {text}", status=status)
        self._fail(response, f"renting offer {ask}")

    def stopped_price_per_hour(self, offer: Offer) -> float:
        """A stopped Vast instance bills its disk only (`storage_total_cost`, USD/h, or
        `storage_cost` USD/GB/month over the disk)."""
        raw = offer.raw
        per_hour = number_of(raw.get("storage_total_cost"))
        if per_hour is not None:
            return per_hour
        per_gb_month, disk = number_of(raw.get("storage_cost")), offer.disk_gb
        if per_gb_month is not None and disk:
            return per_gb_month * disk / (30 * 24)
        return super().stopped_price_per_hour(offer)

    async def attach_key(self, instance_id: str, public_key: str) -> None:
        await self._attach_key(instance_id, public_key)

    async def _attach_key(self, instance_id: str, key: str) -> None:
        """Attach the key to the new instance, trying again while that may still work; a final
        failure carries the instance id, because the instance exists and bills."""
        for round_ in range(1, ATTACH_ROUNDS + 1):
            try:
                response = await self.http.request(
                    "POST",
                    f"/instances/{instance_id}/ssh/",
                    json={"ssh_key": key.strip()},
                    priority=Priority.NORMAL,
                )
                self._object(response, f"attaching the SSH key to instance {instance_id}")
                return
            except ProviderError as err:
                if round_ < ATTACH_ROUNDS and not isinstance(err, AuthError):
                    log.info("vastai: %s; trying again in %.0f s", err.message, ATTACH_PAUSE_S)
                    await self.http.clock.sleep(ATTACH_PAUSE_S)
                    continue
                raise ProviderError(
                    self.name,
                    f"instance {instance_id} was rented but its SSH key was not attached:"
                    f" {err.message}",
                    status=err.status,
                    instance_id=instance_id,
                ) from err

    # ------------------------------------------------------------------ instances

    async def get(self, instance_id: str) -> InstanceStatus | None:
        response = await self.http.request(
            "GET", f"/instances/{instance_id}/", priority=Priority.URGENT
        )
        if response.status_code == 404:
            self._gone_or_raise(response, f"reading instance {instance_id}")
            return None
        body = self._object(response, f"reading instance {instance_id}")
        if "instances" not in body:
            raise ProviderBug(self.name, f"instance {instance_id} answered without 'instances'")
        row = body["instances"]
        if row is None:
            return None
        status = parse_instance(row)
        if status.instance_id != str(instance_id):
            raise ProviderBug(
                self.name, f"asked for instance {instance_id}, got {status.instance_id}"
            )
        return status

    def _v1_instances_url(self) -> str:
        base = self.http.base_url.rstrip("/")
        if not _V0_SUFFIX.search(base):
            raise ProviderError(
                self.name, "the Vast API base must end in /api/v0 to list instances"
            )
        return _V0_SUFFIX.sub("/api/v1/instances/", base)

    async def list_labelled(self) -> list[InstanceStatus]:
        url = self._v1_instances_url()
        found: dict[str, InstanceStatus] = {}
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"limit": str(V1_PAGE), "order_by": '[{"col": "id", "dir": "asc"}]'}
            if token is not None:
                params["after_token"] = token
            response = await self.http.request("GET", url, params=params, priority=Priority.URGENT)
            body = self._object(response, "listing instances")
            rows, token = body.get("instances"), body.get("next_token")
            if not isinstance(rows, list):
                raise ProviderBug(self.name, "listing instances answered without a list")
            for row in rows:
                if not isinstance(row, dict):
                    raise ProviderBug(self.name, "listing instances answered a row not an object")
                if parse_label(row.get("label")):
                    status = parse_instance(row)
                    found[status.instance_id] = status
            if token is None:
                return list(found.values())
            if not isinstance(token, str) or not token or token in seen:
                raise ProviderBug(self.name, "listing instances answered a bad next_token")
            seen.add(token)
        raise ProviderBug(self.name, f"listing instances ran past {MAX_PAGES} pages")

    async def destroy(self, instance_id: str) -> None:
        response = await self.http.request(
            "DELETE", f"/instances/{instance_id}/", json={}, priority=Priority.URGENT
        )
        if response.status_code == 404:
            self._gone_or_raise(response, f"destroying instance {instance_id}")
            log.info("vastai: instance %s was already gone", instance_id)
            return
        self._object(response, f"destroying instance {instance_id}")

    async def _set_state(self, instance_id: str, state: str) -> None:
        response = await self.http.request(
            "PUT", f"/instances/{instance_id}/", json={"state": state}, priority=Priority.NORMAL
        )
        self._object(response, f"setting instance {instance_id} {state}")

    async def stop(self, instance_id: str) -> None:
        """`PUT /instances/{id}/` `{"state": "stopped"}` (§1.8): disk kept, disk billed; it
        also cancels a start still waiting for GPUs."""
        await self._set_state(instance_id, "stopped")

    async def start(self, instance_id: str) -> None:
        """`PUT /instances/{id}/` `{"state": "running"}` (§1.8). Accepted even when the host's
        GPUs are rented out: the instance then reads "scheduling" until they free up."""
        await self._set_state(instance_id, "running")

    async def _user(self) -> dict[str, Any]:
        response = await self.http.request("GET", "/users/current/", priority=Priority.NORMAL)
        return self._object(response, "reading the account")

    async def balance(self) -> float | None:
        credit = (await self._user()).get("credit")
        if credit is not None and number_of(credit) is None:
            raise ProviderBug(self.name, f"the account's credit is not a number: {credit!r}")
        return number_of(credit)

    async def check(self) -> None:
        await self._user()
