"""The control plane's database: tables, engine and sessions, repositories and migrations.

SQLite (one file, WAL, foreign keys on) is the embedded default; PostgreSQL is for fleets where
several control-plane processes share one database. The schema is managed by Alembic migrations
shipped in this package (`corral.db.migrations`).
"""
