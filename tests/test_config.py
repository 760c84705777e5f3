"""Settings: one typed table, env over file over default, every value's source known."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpushop_tui.config import Settings, load_settings, url_without_password
from gpushop_tui.errors import ConfigError, DataDirError
from gpushop_tui.providers.registry import PROVIDERS


def test_defaults_and_sources(isolated_env: Path) -> None:
    settings = load_settings({})
    assert settings.hard_max_hours == 12
    assert settings.source("hard_max_hours") == "default"
    assert settings.provider("vastai").api_url.endswith("/api/v0")
    assert settings.provider("bluelobster").provision_budget_s == 2400
    assert settings.source("vastai_api_url") == "default"


def test_every_knob_has_an_env_var_and_a_meaning(isolated_env: Path) -> None:
    rows = load_settings({}).describe()
    for row in rows:
        assert row.env.isupper(), row.name
        assert row.meaning, row.name
    envs = {row.env for row in rows}
    assert len(envs) == len(rows) == len({row.name for row in rows})
    assert len(rows) == len(Settings.model_fields) - 1 + 2 * len(PROVIDERS)
    assert {
        "GPUSHOP_HOME",
        "VASTAI_API_URL",
        "TENSORDOCK_API_URL",
        "BLUELOBSTER_API_URL",
        "GPUSHOP_VASTAI_PROVISION_BUDGET_S",
        "GPUSHOP_TENSORDOCK_PROVISION_BUDGET_S",
        "GPUSHOP_BLUELOBSTER_PROVISION_BUDGET_S",
    } <= envs


def test_env_beats_file_beats_default(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text(
        'hard_max_hours = 8\nsupervisor_tick_s = 5\nvastai_api_url = "http://127.0.0.1:9/api/v0"\n'
    )
    settings = load_settings({"GPUSHOP_HOME": str(home), "GPUSHOP_HARD_MAX_HOURS": "6"})
    assert settings.hard_max_hours == 6
    assert settings.source("hard_max_hours") == "env"
    assert settings.supervisor_tick_s == 5
    assert settings.source("supervisor_tick_s") == "file"
    assert settings.source("home") == "env"
    rows = {row.name: row for row in settings.describe()}
    assert (rows["vastai_api_url"].value, rows["vastai_api_url"].source) == (
        "http://127.0.0.1:9/api/v0",
        "file",
    )
    assert rows["lease_ttl_s"].env == "GPUSHOP_LEASE_TTL_S"
    assert settings.provider("vastai").api_url == "http://127.0.0.1:9/api/v0"


def test_provider_knobs_keep_their_env_vars(isolated_env: Path) -> None:
    settings = load_settings(
        {
            "TENSORDOCK_API_URL": "http://127.0.0.1:7/api/v2",
            "GPUSHOP_BLUELOBSTER_PROVISION_BUDGET_S": "60",
        }
    )
    assert settings.provider("tensordock").api_url == "http://127.0.0.1:7/api/v2"
    assert settings.source("tensordock_api_url") == "env"
    assert settings.provider("bluelobster").provision_budget_s == 60
    assert settings.provider("vastai").provision_budget_s == 900
    with pytest.raises(ConfigError, match="no settings for provider 'paperspace'"):
        settings.provider("paperspace")


def test_config_file_can_be_named_explicitly(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text("inventory_refresh_s = 30\n")
    settings = load_settings({"GPUSHOP_HOME": str(tmp_path), "GPUSHOP_CONFIG": str(config)})
    assert settings.inventory_refresh_s == 30
    assert settings.paths.config_file == config


@pytest.mark.parametrize(
    ("environ", "file_text", "message"),
    [
        (
            {"GPUSHOP_HARD_MAX_HOURS": "twelve"},
            None,
            "setting hard_max_hours from GPUSHOP_HARD_MAX_HOURS = 'twelve': "
            "Input should be a valid number",
        ),
        ({"GPUSHOP_HTTP_TIMEOUT_S": "-1"}, None, "greater than 0"),
        ({}, "hard_max_hourz = 3\n", "unknown setting 'hard_max_hourz'"),
        ({}, "home = '/elsewhere'\n", "unknown setting 'home'"),
        ({}, "hard_max_hours = \n", "is not valid TOML"),
        ({}, "log_level = 'LOUD'\n", "setting log_level from"),
        ({}, "providers = 3\n", "unknown setting 'providers'"),
        (
            {"GPUSHOP_VASTAI_PROVISION_BUDGET_S": "0"},
            None,
            "setting vastai_provision_budget_s from GPUSHOP_VASTAI_PROVISION_BUDGET_S = '0': "
            "Input should be greater than 0",
        ),
        ({}, "tensordock_api_url = 5\n", "setting tensordock_api_url from"),
    ],
)
def test_bad_values_are_one_clear_sentence(
    tmp_path: Path, environ: dict[str, str], file_text: str | None, message: str
) -> None:
    if file_text is not None:
        (tmp_path / "config.toml").write_text(file_text)
    with pytest.raises(ConfigError) as raised:
        load_settings({"GPUSHOP_HOME": str(tmp_path), **environ})
    assert message in raised.value.message
    assert "\n" not in raised.value.message


def test_gpushop_home_holds_everything(tmp_path: Path) -> None:
    paths = load_settings({"GPUSHOP_HOME": str(tmp_path / "gh")}).paths
    for path in (paths.keys_dir, paths.db_file, paths.log_file, paths.config_file):
        assert path.is_relative_to(tmp_path / "gh")


def test_platform_dirs_without_gpushop_home() -> None:
    paths = load_settings({}).paths
    assert paths.data_dir.name == "gpushop"
    assert paths.db_file.parent == paths.data_dir


def test_prepare_creates_private_dirs(tmp_path: Path) -> None:
    paths = load_settings({"GPUSHOP_HOME": str(tmp_path / "new")}).paths
    paths.prepare()
    assert (paths.data_dir.stat().st_mode & 0o777) == 0o700
    assert (paths.keys_dir.stat().st_mode & 0o777) == 0o700


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    paths = load_settings({"GPUSHOP_HOME": str(blocker / "gpushop")}).paths
    with pytest.raises(DataDirError, match="cannot be used: Not a directory"):
        paths.prepare()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://team:pg-test-word@db:5432/g", "postgresql://team:***@db:5432/g"),
        ("postgresql://team@db/g?password=pg-test-word&sslmode=require",
         "postgresql://team@db/g?password=***&sslmode=require"),
        ("postgresql://team@db/g", "postgresql://team@db/g"),
    ],
)  # fmt: skip
def test_a_database_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert url_without_password(url) == shown
