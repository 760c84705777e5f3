"""A real `gpushop --serve` on loopback over the standalone simulator, shared by a module."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_gpushop, sim_env
from tests.support.serving import serving


@dataclass(frozen=True)
class Served:
    """The server: its URL, its data dir's env (for local runs on the same database), the
    operator's token and one limited to consumer alice."""

    url: str
    env: dict[str, str]
    token: str
    alice_token: str

    def remote(self, *args: str, token: str | None = None, **kw: Any) -> Any:
        """`gpushop --remote URL --token T ARGS` as a user runs it on another machine."""
        return run_gpushop(
            "--remote", self.url, "--token", token or self.token, *args, timeout=120, **kw
        )

    def local(self, *args: str) -> Any:
        """`gpushop ARGS` on the server's own data dir."""
        return run_gpushop(*args, env=self.env, timeout=120)


def wait_for(check: Callable[[], Any], limit_s: float = 60, what: str = "the state") -> Any:
    """Poll `check` until it answers something true, or fail after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} never came")


@pytest.fixture(scope="module")
def served(
    standalone_sim: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("served-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUSHOP_")}
    env |= sim_env(standalone_sim, "vastai") | {
        "GPUSHOP_HOME": str(home),
        "GPUSHOP_BOOT_DELAY_SCALE": "0.02",
        "PYTHONPATH": str(ROOT),
    }
    with serving(env) as (url, _):
        token = run_gpushop("serve-token", env=env).stdout.strip()
        alice = run_gpushop("serve-token", "--consumer", "alice", env=env).stdout.strip()
        yield Served(url, env, token, alice)


@pytest.fixture
def client_home(isolated_env: Path) -> Path:
    """This test's own (client) data dir, apart from the server's."""
    return isolated_env
