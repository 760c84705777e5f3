"""Credentials (provider keys, the webhook secret; OS keyring, env vars override) and redaction.

Credentials never touch the database or the logs (DESIGN.md invariant 8). Every value this
module hands out is remembered, so `redact()` can scrub it from any text, alongside patterns
that catch secrets we never saw (bearer tokens, `api_key=` parameters, private keys). Which
providers have a credential, and in which env vars, comes from their descriptors.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gpushop_tui.errors import UserError
from gpushop_tui.providers import registry

SERVICE = "gpushop"
WEBHOOK = "webhook"
"""The name of the secret that signs alert webhooks (HMAC-SHA256 of each body)."""
WEBHOOK_ENV = "GPUSHOP_WEBHOOK_SECRET"
REMOTE = "remote"
"""The name of the bearer token for a remote `gpushop --serve` (`gpushop --remote URL`): kept
like a credential (`gpushop keys set remote`), though not a provider's, so not listed with them."""
REMOTE_ENV = "GPUSHOP_REMOTE_TOKEN"


def _credential_envs() -> dict[str, tuple[str, ...]]:
    """Each credential (the providers' keys, then the webhook secret) and the env vars that
    override the keyring for it, the first one named in advice; read from the provider
    descriptors when asked, so the registry's list is the only one."""
    envs = {info.name: info.credential_env for info in registry.provider_infos()}
    envs[WEBHOOK] = (WEBHOOK_ENV,)
    return envs


CREDENTIAL_ENV: dict[str, str] = {name: envs[0] for name, envs in _credential_envs().items()}
"""Each credential (the providers' keys, the webhook secret) and the env var named for it (the
first, where a descriptor accepts several); taken once at import, for other modules to read."""

MASK = "***"
_MIN_SECRET_LEN = 6
_known_secrets: set[str] = set()
_PLAIN_WORD = r"(?:[a-z]{1,19}|<[^\s<>]*>)(?=[\s\"',;)!?]|[.:](?:\s|$)|$)"
"""What follows `bearer` in prose, not a credential: a word of letters only (under 20), or a
`<placeholder>`, ending where a word ends ("the bearer token is not valid")."""
_PATTERNS = (
    re.compile(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
    ),
    re.compile(rf"(?i)(\bbearer\s+)(?!{_PLAIN_WORD})[^\s\"',;]+"),
    re.compile(
        r"(?i)(\b(?:x-api-key|authorization)\b[\"']?\s*[:=]\s*[\"']?)(?!bearer\s)[^\s\"',;]+"
    ),
    re.compile(r"(?i)(\b(?:api[_-]?key|api[_-]?token|token|secret|password)=)[^\s&\"',;]+"),
)


class KeyringUnavailable(UserError):
    """No usable OS keyring on this machine (typical of a headless Linux box)."""

    def __init__(self, reason: str, env_var: str) -> None:
        super().__init__(f"{reason}; set {env_var} in the environment instead")
        self.reason = reason


class UnknownProvider(UserError):
    """A provider name we have no credential for."""


def remember_secret(value: str) -> None:
    """Have `redact()` scrub `value` from now on (short values are ignored: too many hits)."""
    if len(value) >= _MIN_SECRET_LEN:
        _known_secrets.add(value)


def redact(text: str) -> str:
    """`text` with every known credential and anything that looks like one replaced by ***."""
    for names in _credential_envs().values():
        for name in names:
            value = os.environ.get(name, "").strip()
            if len(value) >= _MIN_SECRET_LEN:
                _known_secrets.add(value)
    for secret in sorted(_known_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that formats each record and scrubs secrets from the result."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


@dataclass(frozen=True)
class CredentialStatus:
    """Whether a provider's credential is set and where from; never the value itself."""

    provider: str
    env_var: str
    source: Literal["env", "keyring"] | None


class SecretStore:
    """Provider credentials: env var first, then the OS keyring under service 'gpushop'."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = os.environ if environ is None else environ

    def get(self, provider: str) -> str | None:
        """The credential for `provider`, or None when neither env nor keyring has one."""
        value = self._from_env(_env_vars(provider))
        if not value:
            try:
                value = (self._keyring_call("get_password", provider) or "").strip()
            except KeyringUnavailable:
                value = ""
        if not value:
            return None
        remember_secret(value)
        return value

    def set(self, provider: str, value: str) -> None:
        """Store `value` in the OS keyring (raises KeyringUnavailable with advice if none)."""
        _env_vars(provider)
        value = value.strip()
        if not value:
            raise UserError(f"the {provider} credential cannot be empty")
        remember_secret(value)
        self._keyring_call("set_password", provider, value)

    def require_keyring(self, provider: str) -> None:
        """Raise KeyringUnavailable (with advice) unless the OS keyring can be used."""
        self._keyring_call("get_password", provider)

    def delete(self, provider: str) -> bool:
        """Remove the keyring entry; False when there was none."""
        _env_vars(provider)
        if self._keyring_call("get_password", provider) is None:
            return False
        self._keyring_call("delete_password", provider)
        return True

    def status(self) -> tuple[list[CredentialStatus], str | None]:
        """Each provider's status, and why the keyring could not be read (None when it could)."""
        rows: list[CredentialStatus] = []
        problem: str | None = None
        envs = _credential_envs()
        for provider, env_vars in envs.items():
            source: Literal["env", "keyring"] | None = None
            if self._from_env(env_vars):
                source = "env"
            elif problem is None:
                try:
                    if self._keyring_call("get_password", provider):
                        source = "keyring"
                except KeyringUnavailable as exc:
                    problem = exc.reason
            rows.append(CredentialStatus(provider, env_vars[0], source))
        if problem:
            firsts = ", ".join(names[0] for names in envs.values())
            problem += f"; set {firsts} in the environment instead"
        return rows, problem

    def _from_env(self, env_vars: tuple[str, ...]) -> str:
        """The first of `env_vars` that is set, stripped; '' when none is."""
        return next((value for name in env_vars if (value := self._env.get(name, "").strip())), "")

    def _keyring_call(self, method: str, provider: str, *args: str) -> str | None:
        """Call the keyring, turning every backend failure into one clear sentence."""
        import keyring
        from keyring.backends.fail import Keyring as NoBackend

        env_var = _env_vars(provider)[0]
        backend = keyring.get_keyring()
        if isinstance(backend, NoBackend):
            raise KeyringUnavailable("no OS keyring is available on this machine", env_var)
        try:
            result = getattr(backend, method)(SERVICE, provider, *args)
        except Exception as exc:
            reason = redact(str(exc)) or type(exc).__name__
            raise KeyringUnavailable(f"the OS keyring failed ({reason})", env_var) from None
        return result if isinstance(result, str) else None


def _env_vars(provider: str) -> tuple[str, ...]:
    """The env vars of `provider`'s credential; UnknownProvider (naming the known) if none."""
    envs = _credential_envs()
    if provider == REMOTE:
        return (REMOTE_ENV,)
    try:
        return envs[provider]
    except KeyError:
        known = ", ".join(envs)
        raise UnknownProvider(f"unknown provider '{provider}' (known: {known})") from None
