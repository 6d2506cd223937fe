"""Bringing a job store to the schema this siasync uses: Alembic migrations, under a lock.

Every server runs `upgrade` as it opens the store. The migrations run in one transaction
that first takes a lock, so servers starting together on an empty database migrate it
once: PostgreSQL's transaction-level advisory lock, or SQLite's write lock (``BEGIN
IMMEDIATE``). A store made before Alembic (schema versions 1 to 3 in a ``schema_version``
table) is stamped with the revision of its version, then upgraded like any other.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

MIGRATIONS = Path(__file__).parent / "migrations"
#: the key of the PostgreSQL advisory lock held while migrating ("siasync" in ASCII)
LOCK_KEY = int.from_bytes(b"siasync", "big")
#: the Alembic revision of each schema version a store made before Alembic may have
LEGACY_REVISIONS = {1: "0001", 2: "0002", 3: "0003"}


class SchemaError(RuntimeError):
    """The store's schema is not one this siasync can use (newer, or unknown)."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this siasync knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(connection: Connection) -> None:
    """Migrate the store behind ``connection`` to `head` (a synchronous connection, in no transaction yet)."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, until the commit
    else:
        connection.begin()
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    try:
        _stamp_legacy(connection)
        current = MigrationContext.configure(connection).get_current_revision()
        scripts = ScriptDirectory.from_config(_config())
        if current is not None and current not in {s.revision for s in scripts.walk_revisions()}:
            raise SchemaError(f"the job store has schema revision {current}, unknown to this siasync (its newest is "
                              f"{scripts.get_current_head()}): it was migrated by a newer siasync")
        command.upgrade(_config(connection), "head")
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def _stamp_legacy(connection: Connection) -> None:
    """Stamp a store made before Alembic with the revision of its schema version."""
    tables = set(inspect(connection).get_table_names())
    if "schema_version" not in tables or "alembic_version" in tables:
        return
    version = connection.execute(text("SELECT MAX(version) FROM schema_version")).scalar_one()
    if version not in LEGACY_REVISIONS:
        raise SchemaError(f"the job store has schema version {version}; this siasync migrates versions "
                          f"{min(LEGACY_REVISIONS)} to {max(LEGACY_REVISIONS)}")
    command.stamp(_config(connection), LEGACY_REVISIONS[version])
