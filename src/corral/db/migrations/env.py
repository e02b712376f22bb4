"""Alembic environment: the schema is corral.db.models' metadata.

Migrations run on a connection that corral hands over (config.attributes["connection"]), inside
its transaction; see corral.db.migrate. Run by hand, alembic uses sqlalchemy.url from its config.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from corral.db.models import Base


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
        with engine.begin() as connection:
            _migrate(connection)
        return
    _migrate(connection)


def _migrate(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
