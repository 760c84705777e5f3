"""`gpushop` that `kill -9`s itself right after the first database write that leaves a session in
a given state, so that the chaos test's kill lands exactly there.

Usage: python -m tests.support.kill_at STATE GPUSHOP_ARGS...
STATE is one of `STATES`; the process dies by SIGKILL with the session so written.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from gpushop_tui.cli import main
from gpushop_tui.models import Session
from gpushop_tui.store import Store

STATES = ("pending", "provisioning", "running", "stopping", "destroy queue", "starting", "stopped")
"""Every state of a rental that a crash can leave behind (closed ones excepted)."""


def state_of(session: Session) -> str:
    """The rental state a session is in: its status, or the destroy queue (a teardown attempt
    failed and the next one waits)."""
    if not session.closed and session.next_destroy_at is not None:
        return "destroy queue"
    return str(session.status)


def kill_at(state: str) -> None:
    """Make every session write of this process SIGKILL it once it leaves a session in `state`."""
    insert, update = Store.insert_session, Store.update_session

    def die_if_there(session: Session | None) -> None:
        if session is not None and state_of(session) == state:
            os.kill(os.getpid(), signal.SIGKILL)

    async def insert_session(self: Store, session: Session) -> None:
        await insert(self, session)
        die_if_there(session)

    async def update_session(
        self: Store, session_id: str, expect: Any, **changes: Any
    ) -> Session | None:
        updated = await update(self, session_id, expect, **changes)
        die_if_there(updated)
        return updated

    Store.insert_session = insert_session  # type: ignore[method-assign]
    Store.update_session = update_session  # type: ignore[method-assign]


if __name__ == "__main__":
    if sys.argv[1] not in STATES:
        raise SystemExit(f"STATE must be one of {STATES}")
    kill_at(sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
