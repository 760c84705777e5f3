"""A second process writing to the same database, for the compare-and-set tests.

Usage: python -m tests.support.cas_worker DB MODE NAME [SESSION_ID ...]
DB: a SQLite file's path, or a postgresql:// URL.
Prints "ready", waits for one line on stdin (so two workers start together), works, then
prints a JSON line: {"result": ..., "started": ..., "ended": ...}, the wall-clock seconds its
work began and ended (so a test can check that the workers overlapped).
  claim     try pending -> provisioning on each session; result: the ids this worker won.
  increment add 1 to idle_timeout_min of the session 200 times, re-reading on conflict;
            result: how many compare-and-set attempts lost.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from gpushop_tui.models import InstanceState, SessionStatus
from gpushop_tui.store import Store

INCREMENTS = 200


async def main(db: str, mode: str, name: str, session_ids: list[str]) -> None:
    store = await Store.open(Path(db), db if db.startswith("postgresql://") else None)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    result: object
    if mode == "claim":
        won = []
        for session_id in session_ids:
            claimed = await store.update_session(
                session_id,
                {"status": SessionStatus.PENDING},
                status=SessionStatus.PROVISIONING,
                instance=InstanceState.CREATING,
                workload=name,
                state_entered_at=datetime.now(UTC),
            )
            if claimed is not None:
                won.append(session_id)
        result = won
    else:
        lost = 0
        for _ in range(INCREMENTS):
            while True:
                current = await store.get_session(session_ids[0])
                assert current is not None
                updated = await store.update_session(
                    current.id,
                    {"version": current.version},
                    idle_timeout_min=current.idle_timeout_min + 1,
                )
                if updated is not None:
                    break
                lost += 1
        result = lost
    ended = time.time()
    await store.aclose()
    print(json.dumps({"result": result, "started": started, "ended": ended}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
