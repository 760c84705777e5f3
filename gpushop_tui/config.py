"""Every knob of gpushop in one typed table: its name, env var, default and meaning.

Values come from, in order of precedence: the environment, the TOML config file, the default.
`gpushop config` prints each effective value with where it came from, so docs and behaviour can
never drift apart (the earlier implementation's README named env vars that did not exist).

Each provider has the same few knobs (`<name>_api_url`, `<name>_provision_budget_s`), made from
its descriptor: this base module cannot import the providers, so `load_settings` is handed their
`ProviderSpec`s, or uses the ones the provider registry declared when it was imported.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from pydantic.fields import FieldInfo

from gpushop_tui.errors import ConfigError, DataDirError
from gpushop_tui.models import Severity

APP_NAME = "gpushop"
Source = Literal["default", "env", "file"]
PROVIDERS_FIELD = "providers"
"""The one field of `Settings` that is not a knob but the per-provider knobs' map."""


class ProviderSpec(Protocol):
    """What settings need of a provider's descriptor (`providers.base.ProviderInfo` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def default_base_url(self) -> str: ...
    @property
    def base_url_env(self) -> str: ...
    @property
    def provision_budget_s(self) -> float: ...


class ProviderSettings(BaseModel):
    """One provider's knobs, their defaults from its descriptor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_url: str
    provision_budget_s: float = Field(gt=0)


@dataclass(frozen=True)
class _ProviderKnob:
    """One per-provider knob: its row name, env var, meaning, `ProviderSettings` field and the
    default its descriptor gives."""

    name: str
    env: str
    meaning: str
    provider: str
    key: str
    default: Any


def _provider_knobs(spec: ProviderSpec) -> tuple[_ProviderKnob, ...]:
    """The knobs of one provider, their env var names made from its descriptor."""
    return (
        _ProviderKnob(
            f"{spec.name}_api_url",
            spec.base_url_env,
            f"{spec.display_name} API base (default {spec.default_base_url}).",
            spec.name,
            "api_url",
            spec.default_base_url,
        ),
        _ProviderKnob(
            f"{spec.name}_provision_budget_s",
            f"GPUSHOP_{spec.name.upper()}_PROVISION_BUDGET_S",
            f"Longest a {spec.display_name} session may take to become ready before it is "
            "failed and destroyed, seconds.",
            spec.name,
            "provision_budget_s",
            spec.provision_budget_s,
        ),
    )


_declared_providers: Callable[[], Sequence[ProviderSpec]] = tuple


def declare_providers(specs: Callable[[], Sequence[ProviderSpec]]) -> None:
    """Have `load_settings` read, by default, the knobs of the providers `specs()` lists.

    The provider registry calls this when it is imported, so the list stays its own.
    """
    global _declared_providers
    _declared_providers = specs


def provider_names() -> tuple[str, ...]:
    """The names of the providers the registry declared, in menu order."""
    return tuple(spec.name for spec in _declared_providers())


def url_without_password(url: str) -> str:
    """A URL as it may be shown or logged: any password in it (`user:password@`, or a
    `password=` parameter, which PostgreSQL URLs accept) replaced by ***."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[1]
        parts = parts._replace(netloc=f"{parts.username}:***@{host}")
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return parts._replace(query=query).geturl()


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _knob(default: Any, env: str, meaning: str, *, in_file: bool = True, **constraints: Any) -> Any:
    """A setting: its default, the env var that overrides it, and one line saying what it does."""
    return Field(
        default,
        description=meaning,
        json_schema_extra={"env": env, "in_file": in_file},
        **constraints,
    )


class Settings(BaseModel):
    """The effective configuration of one gpushop process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path | None = _knob(
        None,
        "GPUSHOP_HOME",
        "Data directory (sessions DB, SSH keys, logs); default is the platform's user data dir.",
        in_file=False,
    )
    config_file: Path | None = _knob(
        None,
        "GPUSHOP_CONFIG",
        "TOML config file; default is config.toml in GPUSHOP_HOME or the user config dir.",
        in_file=False,
    )
    database_url: str | None = _knob(
        None,
        "GPUSHOP_DATABASE_URL",
        "PostgreSQL store (postgresql://user@host:port/db) for a team server; unset means the "
        "SQLite file in the data dir.",
    )
    remote: str | None = _knob(
        None,
        "GPUSHOP_REMOTE",
        "URL of a 'gpushop --serve' the TUI and one-shot commands use instead of the local "
        "database; unset means local.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _knob(
        "INFO", "GPUSHOP_LOG_LEVEL", "Level of the log file."
    )
    http_timeout_s: float = _knob(
        30.0, "GPUSHOP_HTTP_TIMEOUT_S", "Timeout of one provider HTTP call, seconds.", gt=0
    )
    ssh_connect_timeout_s: float = _knob(
        15.0,
        "GPUSHOP_SSH_CONNECT_TIMEOUT_S",
        "Timeout of one SSH connection attempt, seconds.",
        gt=0,
    )
    inventory_refresh_s: float = _knob(
        60.0,
        "GPUSHOP_INVENTORY_REFRESH_S",
        "How often the offer menu is refreshed, seconds.",
        gt=0,
    )
    supervisor_tick_s: float = _knob(
        15.0,
        "GPUSHOP_SUPERVISOR_TICK_S",
        "How often the supervisor re-reads sessions and enforces deadlines, seconds.",
        gt=0,
    )
    reconcile_interval_s: float = _knob(
        120.0,
        "GPUSHOP_RECONCILE_INTERVAL_S",
        "How often each provider's instance list is compared with our sessions, seconds.",
        gt=0,
    )
    lease_ttl_s: float = _knob(
        60.0,
        "GPUSHOP_LEASE_TTL_S",
        "How long the supervisor lease lasts unless renewed; a dead holder frees it after this.",
        gt=0,
    )
    destroy_backoff_max_s: float = _knob(
        300.0,
        "GPUSHOP_DESTROY_BACKOFF_MAX_S",
        "Longest wait between retries of a failing destroy (retries never stop).",
        gt=0,
    )
    hard_max_hours: float = _knob(
        12.0,
        "GPUSHOP_HARD_MAX_HOURS",
        "Hard limit on an instance's running time from its create call (or its latest start); "
        "needs an audited override.",
        gt=0,
    )
    default_reservation_hours: float = _knob(
        1.0,
        "GPUSHOP_DEFAULT_RESERVATION_HOURS",
        "Reservation when a rental names none, hours.",
        gt=0,
    )
    default_idle_timeout_min: float = _knob(
        30.0,
        "GPUSHOP_DEFAULT_IDLE_TIMEOUT_MIN",
        "Minutes of every signal idle before a session is stopped; 0 disables idle stops.",
        ge=0,
    )
    reconcile_bound_s: float = _knob(
        45.0,
        "GPUSHOP_RECONCILE_BOUND_S",
        "The longest a one-shot `gpushop reconcile` runs, seconds, even when every provider "
        "hangs (a provider not checked in time is named, and the exit is non-zero).",
        gt=0,
    )
    node_watchdog: bool = _knob(
        True,
        "GPUSHOP_NODE_WATCHDOG",
        "Arm each node's own deadline watchdog (a kill path that needs no gpushop process); off "
        "only for a node that must not end itself.",
    )
    watchdog_grace_min: float = _knob(
        10.0,
        "GPUSHOP_WATCHDOG_GRACE_MIN",
        "Minutes past a reservation's end at which the node's own watchdog destroys the instance "
        "(or powers the VM off) if no gpushop ended it; never past the hard max.",
        ge=0,
        le=720,
    )
    keep_days: float = _knob(
        7.0,
        "GPUSHOP_KEEP_DAYS",
        "Days a stopped session's disk is kept (billing storage) before it is destroyed.",
        gt=0,
        le=90,
    )
    idle_gpu_util_pct: float = _knob(
        5.0,
        "GPUSHOP_IDLE_GPU_UTIL_PCT",
        "GPU utilization below which a GPU counts as idle, %.",
        ge=0,
        le=100,
    )
    boot_delay_scale: float = _knob(
        1.0,
        "GPUSHOP_BOOT_DELAY_SCALE",
        "Scale of each provider's longest boot wait, while SSH is tried (the demo "
        "marketplace boots in seconds and uses a small one).",
        ge=0,
        le=1,
    )
    budget_monthly_usd: float = _knob(
        0.0, "GPUSHOP_BUDGET_MONTHLY_USD", "Global monthly spend limit, USD; 0 means none.", ge=0
    )
    budget_max_concurrent: int = _knob(
        0, "GPUSHOP_BUDGET_MAX_CONCURRENT", "Most sessions open at once; 0 means no limit.", ge=0
    )
    budget_max_burn_usd_per_h: float = _knob(
        0.0,
        "GPUSHOP_BUDGET_MAX_BURN_USD_PER_H",
        "Most USD per hour of everything running; 0 means no limit.",
        ge=0,
    )
    low_balance_usd: float = _knob(
        5.0, "GPUSHOP_LOW_BALANCE_USD", "Provider balance below which a rental warns, USD.", ge=0
    )
    webhook_url: str | None = _knob(
        None, "GPUSHOP_WEBHOOK_URL", "Where alerts are POSTed (signed JSON); unset means none."
    )
    webhook_min_severity: Severity = _knob(
        Severity.INFO,
        "GPUSHOP_WEBHOOK_MIN_SEVERITY",
        "Least severe alert the webhook is sent: info, warning, error or critical.",
    )
    webhook_timeout_s: float = _knob(
        10.0, "GPUSHOP_WEBHOOK_TIMEOUT_S", "Timeout of one webhook POST, seconds.", gt=0
    )
    webhook_max_attempts: int = _knob(
        5,
        "GPUSHOP_WEBHOOK_MAX_ATTEMPTS",
        "Tries per alert (network error, timeout, 5xx, 429) before it is given up and audited.",
        ge=1,
    )

    providers: dict[str, ProviderSettings] = Field(
        default_factory=dict,
        description="Each provider's knobs, by provider name (rows `<name>_api_url`, ...).",
    )

    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)
    _provider_knobs: tuple[_ProviderKnob, ...] = PrivateAttr(default=())

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        """Only PostgreSQL is a server store; a typo would otherwise show at the first query."""
        if value is not None and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError(
                "the database URL must be postgresql://user@host:port/db (SQLite needs none)"
            )
        return value

    @field_validator("remote")
    @classmethod
    def _remote_url(cls, value: str | None) -> str | None:
        parts = urlsplit(value) if value is not None else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError("the remote must be an http:// or https:// URL of a 'gpushop --serve'")
        return value.rstrip("/") if value is not None else None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """A typo here would only show when the first alert fails; refuse it at start instead."""
        parts = urlsplit(value) if value is not None else None
        if parts is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError("the webhook URL must be http:// or https:// and name a host")
        return value

    def source(self, name: str) -> Source:
        """Where the value of setting `name` came from."""
        return self._sources.get(name, "default")

    def provider(self, name: str) -> ProviderSettings:
        """The knobs of provider `name`."""
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(self.providers) or "none"
            raise ConfigError(f"no settings for provider '{name}' (known: {known})") from None

    @property
    def paths(self) -> Paths:
        """Where this process keeps its files."""
        return Paths.resolve(self.home, self.config_file)

    def describe(self) -> list[SettingRow]:
        """Every setting with its env var, effective value, source and meaning; each provider's
        knobs come last."""
        rows = [
            SettingRow(
                name=name,
                env=_env_of(field),
                value=getattr(self, name),
                source=self.source(name),
                meaning=field.description or "",
            )
            for name, field in _knob_fields()
        ]
        rows += [
            SettingRow(
                name=knob.name,
                env=knob.env,
                value=getattr(self.provider(knob.provider), knob.key),
                source=self.source(knob.name),
                meaning=knob.meaning,
            )
            for knob in self._provider_knobs
        ]
        return rows


def _knob_fields() -> list[tuple[str, FieldInfo]]:
    """The fields of `Settings` that are knobs of their own (all but the providers' map)."""
    return [(n, f) for n, f in Settings.model_fields.items() if n != PROVIDERS_FIELD]


def _extra(field: FieldInfo) -> dict[str, Any]:
    """What `_knob` recorded of a field: its env var and whether the config file may set it."""
    extra = field.json_schema_extra
    assert isinstance(extra, dict)
    return extra


def _env_of(field: FieldInfo) -> str:
    return str(_extra(field)["env"])


@dataclass(frozen=True)
class SettingRow:
    """One line of `gpushop config`."""

    name: str
    env: str
    value: Any
    source: Source
    meaning: str


@dataclass(frozen=True)
class Paths:
    """The files and directories of one installation."""

    data_dir: Path
    keys_dir: Path
    db_file: Path
    log_dir: Path
    log_file: Path
    config_file: Path

    @classmethod
    def resolve(cls, home: Path | None, config_file: Path | None) -> Paths:
        """`home` (GPUSHOP_HOME) holds everything when set; otherwise the platform's dirs."""
        if home is not None:
            data_dir = home.expanduser()
            log_dir = data_dir / "logs"
            default_config = data_dir / "config.toml"
        else:
            data_dir = Path(platformdirs.user_data_dir(APP_NAME))
            log_dir = Path(platformdirs.user_log_dir(APP_NAME))
            default_config = Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml"
        return cls(
            data_dir=data_dir,
            keys_dir=data_dir / "keys",
            db_file=data_dir / "gpushop.db",
            log_dir=log_dir,
            log_file=log_dir / "gpushop.log",
            config_file=config_file.expanduser() if config_file else default_config,
        )

    def prepare(self) -> None:
        """Create the private directories (0700), or say in one sentence why we cannot."""
        for directory in (self.data_dir, self.keys_dir, self.log_dir):
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
                    raise PermissionError(13, "Permission denied")
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise DataDirError(
                    f"data directory {directory} cannot be used: {reason} "
                    "(set GPUSHOP_HOME to a writable directory)"
                ) from None
        for directory in (self.data_dir, self.keys_dir):
            directory.chmod(0o700)


def load_settings(
    environ: Mapping[str, str] | None = None, providers: Sequence[ProviderSpec] | None = None
) -> Settings:
    """Read settings from `environ` (default: the process environment) and the config file.

    `providers` are the providers whose knobs are read; by default, those declared by the
    provider registry (`declare_providers`).
    """
    env = os.environ if environ is None else environ
    specs = _declared_providers() if providers is None else providers
    provider_knobs = tuple(knob for spec in specs for knob in _provider_knobs(spec))
    envs = {name: _env_of(field) for name, field in _knob_fields()}
    envs |= {knob.name: knob.env for knob in provider_knobs}
    in_file = {name for name, f in _knob_fields() if _extra(f)["in_file"]}
    in_file |= {knob.name for knob in provider_knobs}
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    origin: dict[str, str] = {}

    for name, env_name in envs.items():
        if env.get(env_name, "") != "":
            values[name], sources[name], origin[name] = env[env_name], "env", env_name

    paths = Paths.resolve(
        Path(values["home"]) if "home" in values else None,
        Path(values["config_file"]) if "config_file" in values else None,
    )
    for name, value in _read_config_file(paths.config_file).items():
        if name not in in_file:
            raise ConfigError(f"{paths.config_file}: unknown setting '{name}'")
        if name not in values:
            values[name], sources[name], origin[name] = value, "file", str(paths.config_file)

    per_provider: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
    for knob in provider_knobs:
        per_provider[knob.provider][knob.key] = values.pop(knob.name, knob.default)
    try:
        settings = Settings.model_validate({**values, PROVIDERS_FIELD: per_provider})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        name = f"{loc[1]}_{loc[2]}" if loc[0] == PROVIDERS_FIELD else str(loc[0])
        raise ConfigError(
            f"setting {name} from {origin.get(name, 'defaults')} = {first.get('input')!r}: "
            f"{first['msg']}"
        ) from None
    settings._sources.update(sources)
    settings._provider_knobs = provider_knobs
    return settings


def _read_config_file(path: Path) -> dict[str, Any]:
    """The TOML config file as a dict; absent means empty, unreadable or invalid is an error."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
