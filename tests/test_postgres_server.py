"""The throwaway PostgreSQL server the store's PostgreSQL tests will run on (issue 23): it
starts on a loopback port, takes connections through the async driver the store is to use
(asyncpg), keeps what is written within its life, and is stopped at the end."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support.postgres import Postgres, running_postgres


async def test_the_server_answers_on_loopback_and_keeps_what_is_written(
    postgres: Postgres,
) -> None:
    assert postgres.url.startswith("postgresql://") and "@127.0.0.1:" in postgres.url
    conn = await asyncpg.connect(postgres.url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS probe (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO probe VALUES (1, 'kept') ON CONFLICT DO NOTHING")
        assert await conn.fetchval("SELECT note FROM probe WHERE id = 1") == "kept"
        assert (await conn.fetchval("SHOW listen_addresses")) == "127.0.0.1"
    finally:
        await conn.close()


async def test_a_cluster_of_its_own_is_gone_when_its_block_ends() -> None:
    with running_postgres() as server:
        conn = await asyncpg.connect(server.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    assert not server.data_dir.exists()  # its directory went with it
    with pytest.raises(OSError):
        await asyncpg.connect(server.url, timeout=5)
