"""Credentials: env beats keyring, no keyring is a clear sentence, and redaction scrubs secrets."""

from __future__ import annotations

import logging

import keyring
import pytest
from keyring.backends.fail import Keyring as NoKeyring

from gpushop_tui.secrets import (
    KeyringUnavailable,
    RedactingFilter,
    SecretStore,
    UnknownProvider,
    redact,
    remember_secret,
)
from tests.support.file_keyring import BrokenKeyring

PLANTED = "vk-test-0000-planted-value"


def test_env_var_overrides_keyring() -> None:
    store = SecretStore({"VASTAI_API_KEY": "from-env-value"})
    SecretStore({}).set("vastai", "from-keyring-value")
    assert store.get("vastai") == "from-env-value"
    assert SecretStore({}).get("vastai") == "from-keyring-value"
    rows, problem = store.status()
    assert problem is None
    assert {r.provider: r.source for r in rows} == {
        "vastai": "env",
        "tensordock": None,
        "bluelobster": None,
        "runpod": None,
        "lambda": None,
        "webhook": None,
    }


def test_keyring_set_list_delete() -> None:
    store = SecretStore({})
    store.set("bluelobster", "  bl-secret-value\n")
    assert store.get("bluelobster") == "bl-secret-value"
    rows, _ = store.status()
    assert {r.provider: r.source for r in rows}["bluelobster"] == "keyring"
    assert store.delete("bluelobster") is True
    assert store.delete("bluelobster") is False
    assert store.get("bluelobster") is None


def test_empty_and_unknown_are_refused() -> None:
    with pytest.raises(UnknownProvider, match="unknown provider 'paperspace'"):
        SecretStore({}).get("paperspace")
    with pytest.raises(Exception, match="cannot be empty"):
        SecretStore({}).set("vastai", " \n")


def test_no_keyring_says_so_and_points_to_env_vars() -> None:
    keyring.set_keyring(NoKeyring())
    store = SecretStore({"TENSORDOCK_API_TOKEN": "td-token-value"})
    with pytest.raises(KeyringUnavailable) as raised:
        store.set("vastai", "value-123456")
    assert raised.value.message == (
        "no OS keyring is available on this machine; set VASTAI_API_KEY in the environment instead"
    )
    assert store.get("vastai") is None
    assert store.get("tensordock") == "td-token-value"
    rows, problem = store.status()
    assert problem is not None
    assert "no OS keyring" in problem
    assert "BLUELOBSTER_API_KEY" in problem
    assert {r.provider: r.source for r in rows}["tensordock"] == "env"


def test_failing_keyring_backend_is_one_sentence() -> None:
    keyring.set_keyring(BrokenKeyring())
    with pytest.raises(KeyringUnavailable, match=r"the OS keyring failed \(org\.freedesktop"):
        SecretStore({}).set("vastai", "value-123456")
    assert SecretStore({}).get("vastai") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer ***"),
        ('{"X-API-Key": "bl-9f8e7d"}', '{"X-API-Key": "***"}'),
        ("GET /instances/?api_key=abc123&owner=me", "GET /instances/?api_key=***&owner=me"),
        ("token=xyz987 rest", "token=*** rest"),
        (
            "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n"
            "-----END OPENSSH PRIVATE KEY-----\n",
            "key:\n***\n",
        ),
        (
            "nothing secret here: 4x RTX 4090 at $0.42/h",
            "nothing secret here: 4x RTX 4090 at $0.42/h",
        ),
        ("the bearer token is not valid.", "the bearer token is not valid."),
        ("send 'Authorization: Bearer <token>'", "send 'Authorization: Bearer <token>'"),
        ("Authorization: Bearer gps_Zm9vYmFy-YmF6", "Authorization: Bearer ***"),
        ("bearer abcdefghijklmnopqrstuvwxyz", "bearer ***"),
    ],
)
def test_redact_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_known_values_from_keyring_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    SecretStore({}).set("tensordock", "td-keyring-secret-1")
    monkeypatch.setenv("BLUELOBSTER_API_KEY", "bl-env-secret-2")
    remember_secret("abc")  # too short to redact safely: ignored
    text = "failed with td-keyring-secret-1 and bl-env-secret-2 (abc)"
    assert redact(text) == "failed with *** and *** (abc)"


def test_logging_filter_redacts_message_args_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    remember_secret(PLANTED)
    logger = logging.getLogger("gpushop.test")
    handler = caplog.handler
    handler.addFilter(RedactingFilter())
    try:
        logger.warning("calling with key %s", PLANTED)
        try:
            raise RuntimeError(f"401 for {PLANTED}")
        except RuntimeError:
            logger.exception("provider failed")
    finally:
        handler.removeFilter(handler.filters[-1])
    assert PLANTED not in caplog.text
    assert "calling with key ***" in caplog.text
    assert "401 for ***" in caplog.text


def test_a_bearer_token_is_masked_in_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    token = "gps_" + "Q1w2E3r4T5y6U7i8O9p0" * 2
    logger = logging.getLogger("gpushop.test")
    caplog.handler.addFilter(RedactingFilter())
    try:
        logger.warning("request with 'Authorization: Bearer %s' refused", token)
    finally:
        caplog.handler.removeFilter(caplog.handler.filters[-1])
    assert token not in caplog.text and "Bearer ***" in caplog.text
    assert redact(f"401: bearer {token} is not valid") == "401: bearer *** is not valid"
