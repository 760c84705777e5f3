"""The registry: one tuple of adapters, each with its descriptor, and everything derived from it.

A fake provider added to `ADAPTERS` alone must show up in settings, credentials and connections:
that is what "adding a provider is one registry line" means.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import load_settings, provider_names
from gpushop_tui.providers import registry
from gpushop_tui.providers.base import ProviderInfo
from gpushop_tui.providers.bluelobster import BlueLobster
from gpushop_tui.providers.registry import (
    ADAPTERS,
    PROVIDER_INFOS,
    PROVIDERS,
    connect_providers,
    provider_info,
)
from gpushop_tui.secrets import CREDENTIAL_ENV, SecretStore, redact


class FakeCloud(BlueLobster):
    """A provider that exists only in this test: Blue Lobster's code under a new descriptor."""

    INFO: ClassVar[ProviderInfo] = replace(
        BlueLobster.INFO,
        name="fakecloud",
        display_name="Fake Cloud",
        credential_env=("FAKECLOUD_TOKEN", "FAKECLOUD_KEY"),
        default_base_url="https://api.fakecloud.test/v1",
        base_url_env="FAKECLOUD_API_URL",
        provision_budget_s=321.0,
    )


@pytest.fixture
def with_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry tuple with FakeCloud added, and nothing else changed."""
    monkeypatch.setattr(registry, "ADAPTERS", (*ADAPTERS, FakeCloud))


def test_every_adapter_declares_a_descriptor_that_agrees_with_it() -> None:
    for adapter in ADAPTERS:
        info = adapter.__dict__["INFO"]
        assert isinstance(info, ProviderInfo), adapter
        assert adapter.name == info.name
        assert provider_info(info.name) is info
        assert adapter.readiness.initial_delay_s == info.first_ssh_budget_s
        assert adapter.can_stop is info.capabilities.can_stop
    with pytest.raises(KeyError):
        provider_info("paperspace")


def test_providers_come_from_the_registry_in_menu_order() -> None:
    assert PROVIDERS == ("vastai", "tensordock", "bluelobster", "runpod", "lambda")
    assert tuple(adapter.INFO.name for adapter in ADAPTERS) == PROVIDERS
    assert tuple(adapter.INFO for adapter in ADAPTERS) == PROVIDER_INFOS
    assert provider_names() == PROVIDERS  # what the query language accepts


def test_descriptors_state_the_known_facts() -> None:
    vast, tensordock, bluelobster, runpod, lambda_ = PROVIDER_INFOS
    assert vast.capabilities.instance_scoped_key
    assert not any(i.capabilities.instance_scoped_key for i in PROVIDER_INFOS[1:])
    assert all(i.capabilities.can_stop for i in (vast, tensordock, bluelobster, runpod))
    assert not lambda_.capabilities.can_stop
    assert [i.name for i in PROVIDER_INFOS if i.capabilities.provider_ttl] == ["runpod"]
    assert [i.name for i in PROVIDER_INFOS if i.capabilities.spot] == ["runpod"]
    assert [i.name for i in PROVIDER_INFOS if i.capabilities.runs_images] == ["vastai", "runpod"]
    assert [i.name for i in PROVIDER_INFOS if not i.capabilities.node_watchdog] == [
        "runpod",
        "lambda",
    ]
    assert [info.provision_budget_s for info in PROVIDER_INFOS] == [900, 900, 2400, 1200, 1800]
    assert (runpod.display_name, lambda_.display_name) == ("RunPod", "Lambda Cloud")


def test_url_and_credential_env_vars_come_from_the_descriptors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n, info in enumerate(PROVIDER_INFOS):
        monkeypatch.setenv(info.base_url_env, f"http://127.0.0.1:{9000 + n}/api")
        monkeypatch.setenv(info.credential_env[0], f"key-for-{info.name}")
    assert [info.base_url_env for info in PROVIDER_INFOS] == [
        "VASTAI_API_URL",
        "TENSORDOCK_API_URL",
        "BLUELOBSTER_API_URL",
        "RUNPOD_API_URL",
        "LAMBDA_API_URL",
    ]
    settings = load_settings()
    secrets = SecretStore()
    for n, info in enumerate(PROVIDER_INFOS):
        assert settings.provider(info.name).api_url == f"http://127.0.0.1:{9000 + n}/api"
        assert settings.source(f"{info.name}_api_url") == "env"
        assert CREDENTIAL_ENV[info.name] == info.credential_env[0]
        assert secrets.get(info.name) == f"key-for-{info.name}"
    assert CREDENTIAL_ENV["vastai"] == "VASTAI_API_KEY"
    assert CREDENTIAL_ENV["tensordock"] == "TENSORDOCK_API_TOKEN"
    assert CREDENTIAL_ENV["runpod"] == "RUNPOD_API_KEY"
    assert CREDENTIAL_ENV["lambda"] == "LAMBDA_API_KEY"


@pytest.mark.usefixtures("with_fake")
def test_a_provider_added_to_the_tuple_gets_settings() -> None:
    defaults = load_settings({})
    assert defaults.provider("fakecloud").api_url == "https://api.fakecloud.test/v1"
    assert defaults.provider("fakecloud").provision_budget_s == 321
    settings = load_settings(
        {
            "FAKECLOUD_API_URL": "http://127.0.0.1:9/v1",
            "GPUSHOP_FAKECLOUD_PROVISION_BUDGET_S": "42",
        }
    )
    assert settings.provider("fakecloud").api_url == "http://127.0.0.1:9/v1"
    assert settings.provider("fakecloud").provision_budget_s == 42
    rows = {row.name: row for row in settings.describe()}
    assert (rows["fakecloud_api_url"].env, rows["fakecloud_api_url"].source) == (
        "FAKECLOUD_API_URL",
        "env",
    )
    assert rows["fakecloud_provision_budget_s"].env == "GPUSHOP_FAKECLOUD_PROVISION_BUDGET_S"
    assert "Fake Cloud" in rows["fakecloud_provision_budget_s"].meaning
    assert provider_info("fakecloud") is FakeCloud.INFO


@pytest.mark.usefixtures("with_fake")
def test_a_provider_added_to_the_tuple_gets_a_credential(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = SecretStore({"FAKECLOUD_KEY": "fake-alias-secret"})
    assert store.get("fakecloud") == "fake-alias-secret"
    rows, _ = store.status()
    fake = next(row for row in rows if row.provider == "fakecloud")
    assert (fake.env_var, fake.source) == ("FAKECLOUD_TOKEN", "env")
    assert [row.provider for row in rows][-2:] == ["fakecloud", "webhook"]
    monkeypatch.setenv("FAKECLOUD_TOKEN", "fake-token-never-seen")
    assert redact("sent fake-token-never-seen") == "sent ***"


@pytest.mark.usefixtures("with_fake")
async def test_a_provider_added_to_the_tuple_is_connected() -> None:
    settings = load_settings({"FAKECLOUD_API_URL": "http://127.0.0.1:9/v1"})
    adapters = connect_providers(settings, {"fakecloud": "k"}, "ab12cd34", FakeClock())
    try:
        assert list(adapters) == [*PROVIDERS, "fakecloud"]
        fake = adapters["fakecloud"]
        assert isinstance(fake, FakeCloud)
        assert fake.http.base_url == "http://127.0.0.1:9/v1"
        assert all(adapters[name] is None for name in PROVIDERS)
    finally:
        for adapter in adapters.values():
            if adapter is not None:
                await adapter.aclose()


def test_a_descriptor_name_must_make_env_var_names() -> None:
    with pytest.raises(ValueError, match="lowercase letters and digits"):
        replace(BlueLobster.INFO, name="Blue-Lobster")
    with pytest.raises(ValueError, match="names no credential env var"):
        replace(BlueLobster.INFO, credential_env=())
