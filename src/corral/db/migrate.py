"""Apply the packaged Alembic migrations programmatically (on start and by `corral db upgrade`).

Several control-plane processes may start at once against one PostgreSQL database: they take a
transaction-scoped advisory lock first, so exactly one of them migrates and the others find the
schema at head. On SQLite the write transaction (BEGIN IMMEDIATE) serialises them the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from corral.db.engine import Database

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
ADVISORY_LOCK = 0x636F7272616C  # "corral"

log = logging.getLogger(__name__)


def alembic_config() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database) -> str | None:
    """Bring the schema to the newest revision; return it. A no-op when already there."""
    config = alembic_config()
    target = head()
    connection = db.engine.connect().execution_options(corral_write=True)
    with connection, connection.begin():
        if db.is_postgresql:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        if MigrationContext.configure(connection).get_current_revision() == target:
            return target
        config.attributes["connection"] = connection
        log.info("migrating %s to %s", db.engine.url.render_as_string(), target)
        command.upgrade(config, "head")
    return target
