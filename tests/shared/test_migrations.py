"""The migration runner applies each file once, to an empty database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from songswipe.shared.migrate import apply_migrations, default_migrations_dir, discover
from tests import infra


@pytest.fixture
async def empty_database(real_infra: infra.Infra) -> AsyncIterator[str]:
    name = f"songswipe_empty_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(
        real_infra.database_url, autocommit=True
    ) as admin:
        await admin.execute(f'create database "{name}"')
    base = real_infra.database_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    async with await psycopg.AsyncConnection.connect(
        real_infra.database_url, autocommit=True
    ) as admin:
        await admin.execute(f'drop database if exists "{name}" with (force)')


async def test_migrations_apply_once(empty_database: str) -> None:
    expected = [m.version for m in discover(default_migrations_dir())]

    first = await apply_migrations(empty_database)
    second = await apply_migrations(empty_database)

    assert [m.version for m in first] == expected
    assert second == []
    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        cursor = await conn.execute(
            "select version from supabase_migrations.schema_migrations order by version"
        )
        recorded = [row[0] for row in await cursor.fetchall()]
        cursor = await conn.execute(
            "select count(*) from information_schema.tables"
            " where table_schema = 'public' and table_name = any(%s)",
            (
                [
                    "customizations",
                    "orders",
                    "song_variants",
                    "failed_jobs",
                    "stripe_events",
                ],
            ),
        )
        tables = await cursor.fetchone()
    assert recorded == expected
    assert tables == (5,)


async def test_bootstrap_leaves_existing_supabase_objects_alone(
    empty_database: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(
        empty_database, autocommit=True
    ) as conn:
        await conn.execute("create schema auth")
        await conn.execute(
            "create function auth.uid() returns uuid language sql stable"
            " as $$ select '00000000-0000-0000-0000-000000000001'::uuid $$"
        )

    await apply_migrations(empty_database)

    async with await psycopg.AsyncConnection.connect(empty_database) as conn:
        cursor = await conn.execute("select auth.uid()")
        row = await cursor.fetchone()
    assert row is not None
    assert str(row[0]) == "00000000-0000-0000-0000-000000000001"
