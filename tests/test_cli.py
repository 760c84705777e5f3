"""The entry point as a user meets it: real child processes, real exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpushop_tui import __version__
from tests.conftest import ROOT, run_gpushop

HEAVY = (
    "textual",
    "asyncssh",
    "httpx",
    "fastapi",
    "uvicorn",
    "starlette",
    "aiosqlite",
    "pydantic",
    "keyring",
    "rich",
)


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout


def test_version() -> None:
    result = run_gpushop("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gpushop {__version__}"


def test_help_lists_modes_and_commands() -> None:
    result = run_gpushop("--help")
    assert result.returncode == 0
    for word in ("--demo", "--serve", "paths", "config", "keys"):
        assert word in result.stdout


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_nothing_heavy(flag: str) -> None:
    code = (
        "import sys\n"
        "from gpushop_tui.cli import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in sys.modules if m.split('.')[0] in {HEAVY!r}]\n"
        "print(heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stderr.strip() == "[]"


def test_inventory_path_imports_no_asyncssh() -> None:
    """`gpushop inventory` parses, loads its handler and opens the façade without asyncssh.

    asyncssh costs ~120 ms to import; only commands that make a key or reach a node need it.
    """
    code = (
        "import sys\n"
        "from gpushop_tui.cli import main\n"
        "try:\n"
        "    main(['inventory', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "import gpushop_tui.cli.handlers.market\n"
        "from gpushop_tui.core import Shopper\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'asyncssh'), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stderr.strip() == "[]"


def test_help_is_fast() -> None:
    """`gpushop --help` under 0.35 s wall, median of five runs of the installed script."""
    script = Path(sys.executable).parent / "gpushop"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gpushop_tui"]
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*command, "--help"], capture_output=True, check=True)
        timings.append(time.perf_counter() - start)
    print(f"gpushop --help: median {statistics.median(timings) * 1000:.0f} ms")
    assert statistics.median(timings) < 0.35


def test_bad_flag_is_one_line_and_exit_2() -> None:
    result = run_gpushop("--frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unrecognized arguments: --frobnicate" in result.stderr
    _no_traceback(result)


def test_modes_do_not_mix_with_commands() -> None:
    result = run_gpushop("--demo", "paths")
    assert result.returncode == 2
    assert "cannot be combined" in result.stderr


def test_paths_table_and_json(isolated_env: Path) -> None:
    table = run_gpushop("paths")
    assert table.returncode == 0
    assert str(isolated_env / "gpushop.db") in table.stdout
    data = json.loads(run_gpushop("paths", "-o", "json").stdout)
    assert data == {
        "data": str(isolated_env),
        "keys": str(isolated_env / "keys"),
        "database": str(isolated_env / "gpushop.db"),
        "logs": str(isolated_env / "logs" / "gpushop.log"),
        "config": str(isolated_env / "config.toml"),
        "back_up": str(isolated_env),
    }
    assert f"Back up {isolated_env}:" in table.stdout and "install's id" in table.stdout


def test_config_shows_values_and_sources() -> None:
    result = run_gpushop(
        "config",
        "-o",
        "json",
        env={
            "GPUSHOP_SUPERVISOR_TICK_S": "7",
            "GPUSHOP_WEBHOOK_URL": "https://hooks.example.test/services/T000/B000/secretpath",
            "GPUSHOP_DATABASE_URL": "postgresql://team:pg-test-word@db.example.test:5432/gpushop",
        },
    )
    assert result.returncode == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["supervisor_tick_s"]["value"] == "7.0"
    assert rows["supervisor_tick_s"]["source"] == "env"
    assert rows["hard_max_hours"]["source"] == "default"
    assert rows["webhook_url"]["value"] == "https://hooks.example.test/***"
    assert "secretpath" not in result.stdout
    assert rows["database_url"]["value"] == "postgresql://team:***@db.example.test:5432/gpushop"
    assert "pg-test-word" not in result.stdout
    table = run_gpushop("config")
    assert "GPUSHOP_HARD_MAX_HOURS" in table.stdout


def test_a_database_url_that_is_not_postgresql_is_refused_in_one_line() -> None:
    result = run_gpushop("config", env={"GPUSHOP_DATABASE_URL": "mysql://db.example.test/x"})
    assert result.returncode == 2
    assert "postgresql://user@host:port/db" in result.stderr
    assert result.stderr.count("\n") == 1
    _no_traceback(result)


def test_bad_setting_is_one_line_and_exit_2() -> None:
    result = run_gpushop("config", env={"GPUSHOP_LEASE_TTL_S": "soon"})
    assert result.returncode == 2
    assert result.stderr.startswith("gpushop: error: setting lease_ttl_s from GPUSHOP_LEASE_TTL_S")
    assert result.stderr.count("\n") == 1
    _no_traceback(result)


def test_unusable_data_dir_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    result = run_gpushop(env={"GPUSHOP_HOME": str(blocker / "gpushop")})
    assert result.returncode == 2
    assert "data directory" in result.stderr
    assert "cannot be used" in result.stderr
    assert result.stderr.count("\n") == 1
    _no_traceback(result)


def test_keys_set_list_delete_round_trip(tmp_path: Path) -> None:
    secret = "vk-cli-roundtrip-3a9b"
    stored = run_gpushop("keys", "set", "vastai", stdin=secret + "\n")
    assert stored.returncode == 0, stored.stderr
    assert secret not in stored.stdout + stored.stderr

    listed = run_gpushop("keys", "list", "-o", "json")
    assert listed.returncode == 0
    sources = {r["provider"]: r["source"] for r in json.loads(listed.stdout)["credentials"]}
    assert sources == {
        "vastai": "keyring",
        "tensordock": None,
        "bluelobster": None,
        "runpod": None,
        "lambda": None,
        "webhook": None,
    }
    assert secret not in listed.stdout
    keyring_file = Path(os.environ["GPUSHOP_TEST_KEYRING"]).read_text()
    assert secret in keyring_file

    env_listed = run_gpushop("keys", "list", env={"TENSORDOCK_API_TOKEN": "td-env-token-77"})
    assert "td-env-token-77" not in env_listed.stdout
    assert [line.split()[-1] for line in env_listed.stdout.splitlines()[1:4]] == [
        "keyring",
        "env",
        "set",
    ]

    deleted = run_gpushop("keys", "delete", "vastai")
    assert deleted.returncode == 0
    again = run_gpushop("keys", "delete", "vastai")
    assert again.returncode == 1
    assert "No vastai credential" in again.stderr


def test_keys_without_a_keyring_point_to_env_vars() -> None:
    env = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    listed = run_gpushop("keys", "list", env=env)
    assert listed.returncode == 0
    assert "no OS keyring is available" in listed.stdout
    assert "VASTAI_API_KEY" in listed.stdout

    stored = run_gpushop("keys", "set", "vastai", stdin="value-123456\n", env=env)
    assert stored.returncode == 2
    assert stored.stderr == (
        "gpushop: error: no OS keyring is available on this machine; "
        "set VASTAI_API_KEY in the environment instead\n"
    )


def test_unknown_provider_is_a_clear_error() -> None:
    result = run_gpushop("keys", "set", "paperspace", stdin="x\n")
    assert result.returncode == 2
    known = "vastai, tensordock, bluelobster, runpod, lambda, webhook"
    assert f"unknown provider 'paperspace' (known: {known})" in result.stderr


def test_host_and_port_only_go_with_serve(isolated_env: Path) -> None:
    result = run_gpushop("--host", "0.0.0.0")
    assert result.returncode == 2
    assert result.stderr.strip() == "gpushop: error: --host and --port go with --serve"
    assert "not a port" in run_gpushop("--serve", "--port", "99999").stderr


def test_serve_token_is_stable_private_and_scoped_tokens_differ(isolated_env: Path) -> None:
    operator = run_gpushop("serve-token").stdout.strip()
    assert operator.startswith("gps_") and run_gpushop("serve-token").stdout.strip() == operator
    alice = run_gpushop("serve-token", "-c", "alice").stdout.strip()
    assert alice.startswith("gps_") and alice != operator
    assert run_gpushop("serve-token", "--consumer", "alice").stdout.strip() == alice
    tokens = next(isolated_env.rglob("api_tokens.json"))
    assert tokens.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["session", "abc123"], "type 'gpushop sessions get abc123'"),
        (["extend", "abc123", "--hours=2"], "type 'gpushop sessions extend abc123 --hours 2'"),
        (["extend", "abc123", "-t", "3"], "type 'gpushop sessions extend abc123 --hours 3'"),
        (["config", "set", "vastai-key", "s3cr3t-KEY-9"], "type 'gpushop keys set vastai'"),
        (["config", "set", "tensordock-token", "s3cr3t-KEY-9"], "'gpushop keys set tensordock'"),
    ],
)
def test_the_briefs_forms_say_what_to_type_instead(
    isolated_env: Path, args: list[str], says: str
) -> None:
    result = run_gpushop(*args)
    assert result.returncode == 2
    _no_traceback(result)
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert says in result.stderr
    assert "s3cr3t-KEY-9" not in result.stderr, "a key is never echoed"
