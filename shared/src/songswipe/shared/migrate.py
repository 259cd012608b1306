"""Apply the SQL migrations in ``supabase/migrations`` that are not applied yet.

Applied versions are recorded where the Supabase CLI records them
(``supabase_migrations.schema_migrations``), so a database migrated by the CLI
and one migrated here agree on what is done.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from songswipe.shared.db import Connection, connect
from songswipe.shared.errors import PipelineError
from songswipe.shared.logs import configure_logging
from songswipe.shared.settings import DEFAULT_DATABASE_URL

logger = logging.getLogger(__name__)

#: Any constant will do; it only has to be the same for every runner.
_LOCK_KEY = 7_271_203
_TRACKING_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @classmethod
    def from_path(cls, path: Path) -> Migration:
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise ValueError(f"migration file {path.name} must start with digits_")
        return cls(version=version, name=name, path=path)


def default_migrations_dir() -> Path:
    """``supabase/migrations`` of the checkout, or ``SONGSWIPE_MIGRATIONS_DIR``."""
    if configured := os.environ.get("SONGSWIPE_MIGRATIONS_DIR"):
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "supabase" / "migrations"
        if candidate.is_dir():
            return candidate
    return Path.cwd() / "supabase" / "migrations"


def discover(directory: Path) -> list[Migration]:
    migrations = [Migration.from_path(p) for p in sorted(directory.glob("*.sql"))]
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations in {directory} share a version")
    return migrations


async def _applied_versions(conn: Connection) -> set[str]:
    cursor = await conn.execute(
        "select version from supabase_migrations.schema_migrations"
    )
    return {row["version"] for row in await cursor.fetchall()}


async def apply_migrations(
    database_url: str, directory: Path | None = None
) -> list[Migration]:
    """Apply each new migration once, each in its own transaction.

    Returns the migrations applied by this call (empty when up to date).
    """
    migrations = discover(directory or default_migrations_dir())
    conn = await connect(database_url)
    applied_now: list[Migration] = []
    try:
        await conn.execute("select pg_advisory_lock(%s)", (_LOCK_KEY,))
        await conn.execute(_TRACKING_DDL)
        done = await _applied_versions(conn)

        for migration in migrations:
            if migration.version in done:
                continue
            statements = migration.path.read_text(encoding="utf-8")
            async with conn.transaction():
                await conn.execute(sql.SQL(statements))
                await conn.execute(
                    "insert into supabase_migrations.schema_migrations"
                    " (version, statements, name) values (%s, %s, %s)",
                    (migration.version, [statements], migration.name),
                )
            logger.info(
                "Applied migration version=%s name=%s",
                migration.version,
                migration.name,
            )
            applied_now.append(migration)
    finally:
        await conn.close()
    return applied_now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        help="defaults to DATABASE_URL",
    )
    parser.add_argument("--dir", type=Path, default=None, help="migrations folder")
    args = parser.parse_args()
    configure_logging()

    try:
        applied = asyncio.run(apply_migrations(args.database_url, args.dir))
    except PipelineError as exc:
        logger.error("Migrations not applied: %s. Is Postgres up? Run `make up`.", exc)
        sys.exit(2)
    if applied:
        logger.info("Database migrated, %d migration(s) applied", len(applied))
    else:
        logger.info("Database already up to date, nothing applied")


if __name__ == "__main__":
    main()
