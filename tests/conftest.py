"""Shared fixtures: every test gets its own data dir, a test keyring and no real credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keyring
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.config import Settings, load_settings
from gpushop_tui.providers.registry import PROVIDER_INFOS
from gpushop_tui.secrets import CREDENTIAL_ENV
from gpushop_tui.store import Store
from tests.support.file_keyring import FileKeyring
from tests.support.postgres import Postgres, PostgresMissing, fresh_database, running_postgres
from tests.support.sshd import SSHD, RealSshd, running_sshd

ROOT = Path(__file__).resolve().parent.parent
FILE_KEYRING = "tests.support.file_keyring.FileKeyring"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private GPUSHOP_HOME and file keyring; no gpushop or provider env vars leak in."""
    for name in list(os.environ):
        if (
            name.startswith("GPUSHOP_")
            or name in CREDENTIAL_ENV.values()
            or name.endswith("_API_URL")
        ):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("GPUSHOP_HOME", str(home))
    monkeypatch.setenv("GPUSHOP_TEST_KEYRING", str(tmp_path / "keyring.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FILE_KEYRING)
    previous = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())
    yield home
    keyring.set_keyring(previous)


@pytest.fixture
def utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC for the test, so local-day figures never depend on the host's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    return load_settings()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    settings.paths.prepare()
    opened = await Store.open(settings.paths.db_file)
    yield opened
    await opened.aclose()


def run_gpushop(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real `gpushop` entry point in a child process, as a user would."""
    child_env = os.environ.copy()
    child_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), child_env.get("PYTHONPATH", "")])
    )
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gpushop_tui", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=child_env,
        timeout=timeout,
        check=False,
    )


@contextmanager
def running_sim(state: Path, seed: int, *extra: str) -> Iterator[dict[str, Any]]:
    """The simulator as its own process, keeping its world in `state` (`extra`: more of its
    arguments, e.g. `--clock fake`): its JSON line."""
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "gpushop_tui.sim", "--state", str(state), "--seed", str(seed)),
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    try:
        yield json.loads(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def standalone_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The simulator as its own process (so `gpushop` child processes can reach it): its line."""
    with running_sim(tmp_path_factory.mktemp("sim-state"), seed=7) as info:
        yield info


def sim_env(info: dict[str, Any], *providers: str) -> dict[str, str]:
    """Env vars pointing gpushop at the standalone simulator, with keys for `providers`."""
    urls = {i.base_url_env: info[i.name] for i in PROVIDER_INFOS}
    keys = {CREDENTIAL_ENV[p]: info["keys"][p] for p in providers}
    return urls | keys


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on a loopback port for this test process (see
    tests/support/postgres.py); `.ci/run` installs Debian's server."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresMissing as missing:
        pytest.skip(f"{missing} (`.ci/run` installs postgresql)")


BACKENDS = ("sqlite", "postgres")
"""The store's two databases; tests that take `database_url` run once on each."""


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest) -> AsyncIterator[str | None]:
    """None (the SQLite file in the data dir), or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        yield None
        return
    async with fresh_database(request.getfixturevalue("postgres")) as url:
        yield url


@pytest.fixture
async def backend_store(settings: Settings, database_url: str | None) -> AsyncIterator[Store]:
    """The store on each backend in turn."""
    settings.paths.prepare()
    opened = await Store.open(settings.paths.db_file, database_url)
    yield opened
    await opened.aclose()


@pytest.fixture
def real_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealSshd]:
    """A real OpenSSH sshd on a loopback port (see tests/support/sshd.py); `.ci/run` installs it."""
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is not installed (`.ci/run` installs openssh-server)")
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server
