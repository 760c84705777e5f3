"""A real `gpushop --serve` as its own process, for tests that talk to it over loopback."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A `gpushop --serve` on a free loopback port, in `env`: its base URL and process (killed
    at the end if it still runs)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", "--serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
    try:
        assert found, first + (process.stderr.read() if process.poll() is not None else "")
        yield found.group(1), process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
