"""State is private: other local users read neither the database nor images nor instances."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

from corral.config import Config
from corral.context import Context
from corral.db.engine import Database
from corral.layout import Home
from corral.private import make_private
from helpers import corral


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_a_new_state_directory_is_private(tmp_path: Path) -> None:
    home = tmp_path / "deep" / "state"
    ctx = Context(replace(Config(), home=home))
    assert ctx.home.root == home
    assert mode(home) == 0o700


def test_an_old_install_readable_by_others_is_tightened_on_first_use(tmp_path: Path) -> None:
    """Replays the finding: a 0755 directory, a 0644 database (node tokens, user-data) and
    0444 blobs, as earlier versions left them."""
    home = Home(tmp_path / "state")
    home.blobs.mkdir(parents=True)
    blob = home.blobs / ("ab" * 32)
    blob.write_bytes(b"disk")
    blob.chmod(0o444)
    for name in ("corral.db", "corral.db-wal", "corral.db-shm"):
        (home.root / name).write_bytes(b"")
        (home.root / name).chmod(0o644)
    home.root.chmod(0o755)

    make_private(home)

    assert mode(home.root) == 0o700
    assert {mode(home.root / n) for n in ("corral.db", "corral.db-wal", "corral.db-shm")} == {0o600}
    assert mode(blob) == 0o400


def test_a_new_sqlite_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "db" / "corral.db"
    old = os.umask(0o022)
    try:
        db = Database(f"sqlite:///{path}")
        with db.engine.connect() as conn:  # a write makes the WAL and SHM files
            conn.exec_driver_sql("CREATE TABLE t (x)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            conn.commit()
            made = [p for p in path.parent.iterdir() if p.name.startswith("corral.db")]
            assert {p.name for p in made} >= {"corral.db", "corral.db-wal", "corral.db-shm"}
            assert {mode(p) for p in made} == {0o600}
        db.dispose()
    finally:
        os.umask(old)
    assert mode(path.parent) == 0o700


def test_imported_blobs_are_not_readable_by_others(ctx: Context, tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"\0" * 65536)
    manifest = ctx.store.import_image(disk, "plain")
    assert mode(ctx.store.blob(manifest.digest)) == 0o400


def test_serve_settings_tighten_the_embedded_state_directory(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    proc = corral(Context(replace(Config(), home=home)), "token", "create", "first", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert mode(home) == 0o700
    assert mode(home / "corral.db") == 0o600
