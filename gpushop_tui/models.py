"""The domain, as pydantic v2 models validated wherever data crosses an edge.

DESIGN.md §2: an `Offer` is one rentable configuration normalized across providers; a `Session`
is one rental with two state fields that are never folded into one: `status` (what the user
sees) and `instance` (what exists at the provider, and so what bills).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gpushop_tui.clock import utc
from gpushop_tui.errors import UserError

UtcDatetime = Annotated[datetime, AfterValidator(utc)]
"""A timezone-aware instant, normalized to UTC; naive datetimes are rejected."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _consumer_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


ConsumerId = Annotated[str, AfterValidator(_consumer_name)]
"""Who a session is for (a person, a pipeline, a service): a short safe name."""

ProviderName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,31}$")]
"""A provider's name as its descriptor gives it (`providers/registry.py` lists them)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SessionStatus(StrEnum):
    """What the user sees of a rental.

    `stopping` heads for a destroy, or for a stop that keeps the disk (`Session.keep_disk`).
    `stopped` is an instance powered off with its disk kept (billing the disk only) until it is
    started again (`starting`, which waits like provisioning) or its keep time ends. `ended`
    and `failed` are the ends of a session.
    """

    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    STARTING = "starting"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (SessionStatus.ENDED, SessionStatus.FAILED)


class InstanceState(StrEnum):
    """What exists at the provider (and so what may be billing)."""

    NONE = "none"
    CREATING = "creating"
    LIVE = "live"
    DESTROYING = "destroying"
    GONE = "gone"
    UNKNOWN = "unknown"

    @property
    def absent(self) -> bool:
        """True only when we know nothing exists: never created, or confirmed gone."""
        return self in (InstanceState.NONE, InstanceState.GONE)


class StoragePolicy(StrEnum):
    """What `done` does to the instance: destroy it, or stop it and keep its disk."""

    DESTROY = "destroy"
    KEEP = "keep"


class IdleAction(StrEnum):
    """What the idle policy does to an idle session: destroy it, or stop it and keep its disk."""

    DESTROY = "destroy"
    STOP = "stop"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Offer(_Model):
    """One rentable configuration, normalized across providers."""

    id: str = Field(description="'<provider>:<provider offer id>'")
    provider: ProviderName
    gpu_name: str = Field(min_length=1, description="Canonical name, e.g. 'RTX 4090'.")
    gpu_count: int = Field(ge=1)
    vram_gb: float = Field(gt=0, description="Per GPU, the card's real size.")
    price_per_hour: float = Field(ge=0, description="Total USD/h, storage included.")
    vcpus: float | None = Field(default=None, ge=0)
    ram_gb: float | None = Field(default=None, ge=0)
    disk_gb: float | None = Field(default=None, ge=0)
    region: str | None = None
    country: str | None = Field(default=None, description="ISO 3166 alpha-2 where known.")
    reliability: float | None = Field(default=None, ge=0, le=1)
    cuda: float | None = Field(default=None, ge=0, description="Highest CUDA the host supports.")
    inet_down_mbps: float | None = Field(default=None, ge=0)
    interruptible: bool = False
    fetched_at: UtcDatetime
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)

    @property
    def price_per_gpu_hour(self) -> float:
        return self.price_per_hour / self.gpu_count

    @model_validator(mode="after")
    def _id_names_provider(self) -> Offer:
        prefix = f"{self.provider}:"
        if not self.id.startswith(prefix) or len(self.id) == len(prefix):
            raise ValueError(f"offer id {self.id!r} must look like '{prefix}<provider offer id>'")
        return self

    @property
    def provider_offer_id(self) -> str:
        return self.id.split(":", 1)[1]


OfferSort = Literal["price", "gpu_price", "vram_price", "vram", "reliability", "usd_per_mtok"]
QueryBound = Literal[
    "min_gpus", "max_gpus", "min_vram_gb", "max_vram_gb", "min_price", "max_price",
    "max_gpu_price", "min_reliability", "min_cuda",
]  # fmt: skip


class OfferQuery(_Model):
    """A filter over the offer menu (what the query language of `query.py` parses into).

    Bounds are inclusive unless named in `strict`. `gpu` and `region` may list alternatives
    separated by commas; `gpu` matches any part of the canonical name ("4090", "h100 sxm").
    """

    gpu: str | None = Field(default=None, description="GPU name or part of it, e.g. '4090'.")
    gpu_exact: bool = Field(
        default=False, description="`gpu` names whole GPU models ('L40' is not 'L40S')."
    )
    providers: tuple[ProviderName, ...] = ()
    min_gpus: int | None = Field(default=None, ge=1)
    max_gpus: int | None = Field(default=None, ge=1)
    min_vram_gb: float | None = Field(default=None, ge=0)
    max_vram_gb: float | None = Field(default=None, ge=0)
    min_price: float | None = Field(default=None, ge=0, description="USD/h for the whole offer.")
    max_price: float | None = Field(default=None, ge=0, description="USD/h for the whole offer.")
    max_gpu_price: float | None = Field(default=None, ge=0, description="USD per GPU-hour.")
    region: str | None = Field(default=None, description="Country code or part of the region.")
    model: str | None = Field(
        default=None,
        min_length=1,
        description="LLM whose measured tokens/s price each offer per million tokens, "
        "e.g. 'llama3.1:8b'.",
    )
    min_reliability: float | None = Field(default=None, ge=0, le=1)
    min_cuda: float | None = Field(default=None, ge=0)
    spot: bool | None = Field(
        default=None,
        description="True: interruptible (spot) offers only; False: on-demand offers only.",
    )
    strict: tuple[QueryBound, ...] = Field(default=(), description="Bounds that exclude equality.")
    sort: OfferSort = "price"
    descending: bool = False
    limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> OfferQuery:
        for low, high in (
            ("min_gpus", "max_gpus"),
            ("min_vram_gb", "max_vram_gb"),
            ("min_price", "max_price"),
        ):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} {a:g} is above {high} {b:g}")
        return self

    @model_validator(mode="after")
    def _sort_has_its_model(self) -> OfferQuery:
        if self.sort == "usd_per_mtok" and self.model is None:
            raise ValueError("sort=usd_per_mtok needs model=NAME, whose tokens/s price the offers")
        return self


MAX_KEEP_DAYS = 90.0
KeepDays = Annotated[float, Field(gt=0, le=MAX_KEEP_DAYS, allow_inf_nan=False)]
"""Days a stopped session's disk is kept before it is destroyed."""


class CostKind(StrEnum):
    COMPUTE = "compute"
    STORAGE = "storage"


class BilledStretch(_Model):
    """A closed stretch of one session's billing at one rate: running (compute) or stopped with
    its disk kept (storage)."""

    kind: CostKind
    rate_per_hour: float = Field(ge=0)
    started_at: UtcDatetime
    ended_at: UtcDatetime


class Session(_Model):
    """One rental, from the pending row to the provider's word that the instance is gone."""

    id: str = Field(pattern=r"^[a-z0-9]{6,32}$")
    consumer: ConsumerId
    provider: ProviderName
    offer_id: str
    offer: Offer = Field(description="The offer as it was when rented.")
    label: str = Field(description="'gpushop-<install id>-<session id>', set on the instance.")
    instance_id: str | None = None
    status: SessionStatus = SessionStatus.PENDING
    instance: InstanceState = InstanceState.NONE
    ssh_host: str | None = None
    ssh_port: int | None = Field(default=None, ge=1, le=65535)
    ssh_user: str | None = None
    key_path: str | None = None
    host_key: str | None = Field(default=None, description="Pinned on first contact.")
    workload: str = "interactive"
    workload_spec: WorkloadSpec | None = Field(
        default=None, description="What runs on the node (None: SSH only, as before workloads)."
    )
    workload_phase: str | None = Field(
        default=None,
        description="Where the workload stands: starting, installing, pulling model, loading, "
        "healthy, or failed: why.",
    )
    workload_started_at: UtcDatetime | None = Field(
        default=None, description="When the workload was launched on the node."
    )
    endpoint: str | None = Field(
        default=None,
        description="Base URL of the OpenAI-compatible API on the node (reached by a tunnel).",
    )
    endpoint_public: str | None = Field(
        default=None,
        description="Base URL of the same API on the provider's public address, where the "
        "provider publishes the port and the server checks the token (vLLM on Vast.ai).",
    )
    reservation_hours: float = Field(gt=0)
    expires_at: UtcDatetime
    hard_max_at: UtcDatetime
    hard_max_override: str | None = Field(default=None, description="Audited reason, if any.")
    idle_timeout_min: float = Field(default=30.0, ge=0, description="0 disables idle stops.")
    storage_policy: StoragePolicy = StoragePolicy.DESTROY
    price_per_hour: float | None = Field(default=None, ge=0, description="Rate actually charged.")
    created_at: UtcDatetime
    state_entered_at: UtcDatetime
    instance_created_at: UtcDatetime | None = None
    instance_gone_at: UtcDatetime | None = None
    error: str | None = None
    request_id: str | None = Field(default=None, max_length=128)
    destroy_attempts: int = Field(default=0, ge=0, description="Failed teardown tries so far.")
    next_destroy_at: UtcDatetime | None = Field(
        default=None, description="When the destroy queue tries again."
    )
    last_busy_at: UtcDatetime | None = Field(
        default=None, description="Last time any idle signal read busy (or could not be read)."
    )
    idle_reason: str | None = Field(default=None, description="Why it counts as idle or busy.")
    stopped_at: UtcDatetime | None = Field(
        default=None,
        description="When a kept instance stopped: compute billing ends, storage's begins.",
    )
    stopped_price_per_hour: float | None = Field(
        default=None, ge=0, description="What the stopped instance still costs (its disk)."
    )
    keep_disk: bool = Field(
        default=False, description="The stop under way keeps the disk (False: it destroys)."
    )
    keep_days: KeepDays | None = Field(
        default=None, description="Days a stopped disk is kept (None: the keep_days setting)."
    )
    keep_until: UtcDatetime | None = Field(
        default=None, description="While stopped: when the kept disk is destroyed."
    )
    idle_action: IdleAction = IdleAction.DESTROY
    power_requested_at: UtcDatetime | None = Field(
        default=None, description="When the provider last accepted a start call for it."
    )
    watchdog_deadline: UtcDatetime | None = Field(
        default=None,
        description="When the watchdog armed on the node ends the instance by itself (None: "
        "not armed in this power cycle).",
    )
    watchdog_error: str | None = Field(
        default=None, description="Why the node's watchdog could not be armed or moved."
    )
    provider_ttl_at: UtcDatetime | None = Field(
        default=None,
        description="When the provider's own time limit ends the instance (None: none set).",
    )
    cycles: list[BilledStretch] = Field(
        default_factory=list,
        description="Closed stretches of running (compute) and stopped (storage) billing, in "
        "order; the open one is derived from `stopped_at` and `instance_gone_at`.",
    )
    version: int = Field(default=0, ge=0, description="Bumped by every stored change.")

    @property
    def meant_to_keep_disk(self) -> bool:
        """Whether its ends (`done`, a deadline, the idle policy) stop it and keep its disk:
        rented with the keep storage policy, or to be stopped when idle."""
        return self.storage_policy == StoragePolicy.KEEP or self.idle_action == IdleAction.STOP

    def kept_days(self, default: float) -> float:
        """Days a stop keeps its disk: its own, else `default` (the keep_days setting)."""
        return self.keep_days if self.keep_days is not None else default

    @property
    def closed(self) -> bool:
        """Closed only when terminal and nothing exists at the provider; else supervised."""
        return self.status.terminal and self.instance.absent

    @model_validator(mode="after")
    def _deadlines_ordered(self) -> Session:
        if self.expires_at > self.hard_max_at and self.hard_max_override is None:
            raise ValueError("expires_at is past hard_max_at without an override reason")
        return self


Workload = Literal["interactive", "llm", "vllm", "custom"]
"""What runs on the node: nothing but SSH, an Ollama model server, a vLLM OpenAI-compatible
server, or the user's own command (and image, where the provider runs images)."""
SERVES_MODEL: frozenset[str] = frozenset({"llm", "vllm"})
"""The presets that serve a named model behind an OpenAI-compatible API."""
MAX_ENV_VARS = 50
MAX_PORTS = 10
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
"""An environment variable's name, as a POSIX shell takes it."""
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$")
]
"""A model as the server names it: `llama3.1:8b` (Ollama), `Qwen/Qwen2.5-0.5B-Instruct` (vLLM)."""
Port = Annotated[int, Field(ge=1, le=65535)]


def parse_env(words: Iterable[str]) -> dict[str, str]:
    """`NAME=VALUE` words as an environment, the same in every face; a word without a name
    and `=` raises ValueError naming it (it is never dropped, nor read as an empty value)."""
    env: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep or not name:
            raise ValueError(f"{word!r} is not NAME=VALUE")
        env[name] = value
    return env


class WorkloadSpec(_Model):
    """What a session runs on its node once the node is checked, and how it is reached.

    The one rule set for every face: a preset that serves a model needs the model, a custom
    workload needs its command, and nothing a kind does not use may be given (a field is used
    or refused, never dropped).
    """

    kind: Workload = "interactive"
    model: ModelName | None = Field(default=None, validate_default=True)
    image: str | None = Field(default=None, min_length=1, max_length=500)
    command: str | None = Field(default=None, min_length=1, max_length=4000, validate_default=True)
    env: dict[EnvName, Annotated[str, Field(max_length=4000)]] = Field(
        default_factory=dict, max_length=MAX_ENV_VARS
    )
    ports: tuple[Port, ...] = Field(default=(), max_length=MAX_PORTS)
    benchmark: bool = Field(
        default=True, description="Measure tokens/s on the node once the model server answers."
    )

    @field_validator("model")
    @classmethod
    def _model_fits_the_kind(cls, model: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind in SERVES_MODEL and model is None:
            raise ValueError(f"the {kind} workload needs a model")
        if kind not in SERVES_MODEL and model is not None:
            raise ValueError("a model needs the llm or vllm workload")
        return model

    @field_validator("command")
    @classmethod
    def _command_fits_the_kind(cls, command: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "custom" and command is None:
            raise ValueError("the custom workload needs a command")
        if kind != "custom" and command is not None:
            raise ValueError("a command needs the custom workload")
        return command

    @field_validator("env")
    @classmethod
    def _env_for_a_server(cls, env: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if env and info.data.get("kind") == "interactive":
            raise ValueError("an environment needs a workload that runs something")
        return env

    @field_validator("ports")
    @classmethod
    def _ports_for_custom(cls, ports: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if ports and info.data.get("kind") != "custom":
            raise ValueError("ports need the custom workload (the presets' ports are known)")
        return ports

    @field_validator("benchmark")
    @classmethod
    def _benchmark_for_a_model(cls, benchmark: bool, info: ValidationInfo) -> bool:
        if not benchmark and info.data.get("kind") not in SERVES_MODEL:
            raise ValueError("only the llm and vllm workloads are measured: nothing to turn off")
        return benchmark

    @field_validator("ports")
    @classmethod
    def _ports_once(cls, ports: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(ports)) != len(ports):
            raise ValueError("each port once")
        return ports

    @model_validator(mode="after")
    def _no_nul(self) -> WorkloadSpec:
        texts = [self.model or "", self.image or "", self.command or "", *self.env.values()]
        if any("\0" in text for text in texts):
            raise ValueError("no setting of a workload may hold a NUL character")
        return self

    @property
    def serves(self) -> bool:
        """Something on the node must be started and answer before the session is ready."""
        return self.kind != "interactive"


MIN_RESERVATION_HOURS = 0.25
"""A reservation (and an extension) is at least a quarter of an hour: fractions are fine."""
MAX_RESERVATION_HOURS = 12.0
"""The brief's longest reservation; the hard max bounds a session's whole life anyway."""
MAX_IDLE_MINUTES = 10_000.0
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
MAX_OVERRIDE_REASON = 500

ReservationHours = Annotated[
    float, Field(ge=MIN_RESERVATION_HOURS, le=MAX_RESERVATION_HOURS, allow_inf_nan=False)
]
"""Hours of a reservation or an extension, the same bounds in every face."""
IdleMinutes = Annotated[float, Field(ge=0, le=MAX_IDLE_MINUTES, allow_inf_nan=False)]
"""Idle minutes before an idle stop; 0 disables it."""
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=REQUEST_ID_PATTERN)]
"""A client's idempotency key: the same key always answers with the same session."""
OverrideReason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_OVERRIDE_REASON)
]
"""Why a reservation may run past the hard max; written to the audit log."""


class ProvisionRequest(_Model):
    """What a rental asks for: one offer (or a query whose best match is taken) and its limits.

    The one validator of a rental's inputs: the API's body model and the CLI's flags read their
    bounds from the fields here, and every face turns its `ValidationError` into one sentence
    with `validation_problem`. The same `request_id` always answers with the same session: a
    client that lost the answer may ask again without renting a second instance.
    """

    consumer: ConsumerId
    offer_id: str | None = Field(
        default=None, min_length=1, max_length=300, description="'<provider>:<id>' from the menu."
    )
    query: str | None = Field(
        default=None, min_length=1, max_length=2000, description="Query language; best match."
    )
    hours: ReservationHours = 1.0
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    idle_timeout_min: IdleMinutes | None = Field(default=None, description="0 disables.")
    storage: StoragePolicy = StoragePolicy.DESTROY
    idle_action: IdleAction = Field(
        default=IdleAction.DESTROY, description="What an idle stop does: destroy, or stop."
    )
    keep_days: KeepDays | None = Field(
        default=None, description="Days a stopped disk is kept (None: the setting)."
    )
    request_id: RequestId | None = None
    disk_gb: float | None = Field(default=None, gt=0, le=100_000, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_target(self) -> ProvisionRequest:
        if (self.offer_id is None) == (self.query is None):
            raise ValueError("name exactly one of an offer id or a query")
        return self


class ExtendRequest(_Model):
    """More hours for a session, past the hard max only with a reason (audited)."""

    hours: ReservationHours
    override_reason: OverrideReason | None = None


class StopRequest(_Model):
    """Power a running session off, keeping its disk, for `keep_days` (None: as it was)."""

    keep_days: KeepDays | None = None


class StartRequest(_Model):
    """Power a stopped session on for a new reservation of `hours` (None: its own length)."""

    hours: ReservationHours | None = None


def validation_problem(err: ValidationError, names: Mapping[str, str] | None = None) -> str:
    """One sentence for a validation error: the first problem, naming its input.

    `names` maps a model's field names to the face's own words for them (a CLI flag, an API
    body field, a dialog field); a nested field may be named by its dotted path
    (`workload.model`), the deepest named one wins; unmapped fields keep their model name.
    """
    message = str(err.errors()[0]["msg"]).removeprefix("Value error, ")
    where = problem_field(err, names)
    return message if where is None else f"{where}: {message}"


M = TypeVar("M", bound=BaseModel)


def checked(model: type[M], values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> M:
    """`values` validated as `model`, or one `UserError` sentence naming the field at fault
    (in the face's words, with `names` as for `validation_problem`)."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise UserError(validation_problem(err, names), field=problem_field(err)) from None


def problem_field(err: ValidationError, names: Mapping[str, str] | None = None) -> str | None:
    """The field the first problem of a validation error is about, if any: in the face's words
    when `names` (as for `validation_problem`) names it, else the model's top-level field."""
    location = [str(part) for part in err.errors()[0]["loc"] if not isinstance(part, int)]
    if not location:
        return None
    for depth in range(len(location), 0, -1):
        path = ".".join(location[:depth])
        if names and path in names:
            return names[path]
    return location[0]


class InstanceStatus(_Model):
    """An instance as its provider reports it right now."""

    provider: ProviderName
    instance_id: str
    label: str | None = None
    state: str = Field(description="The provider's own status word, kept verbatim.")
    running: bool
    stopped: bool = Field(
        default=False,
        description="Powered off with its disk kept, and not on its way up: billing the disk "
        "only (a start waiting for GPUs is neither running nor stopped).",
    )
    ssh_host: str | None = None
    ssh_port: int | None = Field(default=None, ge=1, le=65535)
    price_per_hour: float | None = Field(default=None, ge=0)
    started_at: UtcDatetime | None = None
    public_ip: str | None = Field(default=None, description="Where published ports answer.")
    ports: dict[int, int] = Field(
        default_factory=dict,
        description="Published TCP ports: the node's port -> the port on `public_ip`.",
    )
    terminate_at: UtcDatetime | None = Field(
        default=None,
        description="When the provider itself ends the instance (its own time limit), as it "
        "reports it; None: it reports none.",
    )
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)


class AuditEvent(_Model):
    """One line of the audit log: what happened, to which session, how bad."""

    id: int | None = None
    at: UtcDatetime
    kind: str = Field(min_length=1, max_length=64)
    severity: Severity = Severity.INFO
    session_id: str | None = None
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class CostEntry(_Model):
    """A stretch of time billed at one rate; open (`ended_at` None) while it is still billing."""

    session_id: str
    consumer: ConsumerId
    provider: ProviderName
    gpu_name: str
    kind: CostKind = CostKind.COMPUTE
    rate_per_hour: float = Field(ge=0)
    started_at: UtcDatetime
    ended_at: UtcDatetime | None = None

    def amount(self, until: datetime) -> float:
        """USD accrued up to `until` (or the entry's end), per second, never negative."""
        end = self.ended_at if self.ended_at is not None else utc(until)
        return max(0.0, (end - self.started_at).total_seconds()) * self.rate_per_hour / 3600


class BudgetKind(StrEnum):
    MONTHLY_SPEND = "monthly_spend"
    CONCURRENT_SESSIONS = "concurrent_sessions"
    BURN_RATE = "burn_rate"
    DISK_PER_DAY = "disk_per_day"
    """USD a day billed by stopped sessions' kept disks."""


class BudgetAction(StrEnum):
    WARN = "warn"
    BLOCK = "block"
    STOP = "stop"


class Budget(_Model):
    """A limit that acts: per consumer, or global when `consumer` is None."""

    id: int | None = None
    consumer: ConsumerId | None = None
    kind: BudgetKind
    limit: float = Field(
        gt=0, description="USD/month, sessions, USD/h, or USD/day of kept disks, by kind."
    )
    action: BudgetAction = BudgetAction.WARN


class Benchmark(_Model):
    """Measured LLM inference throughput of one GPU configuration on one model."""

    id: int | None = None
    gpu_name: str = Field(min_length=1)
    gpu_count: int = Field(default=1, ge=1)
    model: str = Field(min_length=1)
    tokens_per_second: float = Field(gt=0)
    runtime: str | None = None
    provider: str | None = None
    price_per_hour: float | None = Field(default=None, ge=0)
    measured_at: UtcDatetime | None = None
    source: str = "measured"
    session_id: str | None = Field(
        default=None, description="The session whose node was measured, for rows gpushop made."
    )
    time_to_first_token_s: float | None = Field(default=None, ge=0)
