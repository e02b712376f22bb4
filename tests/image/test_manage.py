"""tag, convert, resize, export, rm with dependants and prune, against real qemu-img."""

from __future__ import annotations

import os
import secrets
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import Conflict, InvalidInput
from corral.image import manage
from corral.image.layers import save_image
from corral.image.manifest import now
from corral.image_holders import image_holders


def store_bytes(ctx: Context) -> int:
    blobs = ctx.home.blobs
    return sum(p.stat().st_size for p in blobs.iterdir()) if blobs.is_dir() else 0


def make_image(ctx: Context, tmp_path: Path, name: str, data_mib: int = 8) -> None:
    disk = tmp_path / f"{name}.qcow2"
    ctx.qemu_img.create(disk, 256 << 20)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x61 0 {data_mib}M", str(disk)],
        check=True, capture_output=True,
    )  # fmt: skip
    ctx.store.import_image(disk, name, default_user="debian", cmdline="console=ttyS0")


def layer_on(ctx: Context, base: str, name: str, pattern: str = "0x62") -> None:
    """A layer on `base` that changes one MiB (as configure or snapshot would make)."""
    parent = ctx.store.get(base)
    tmp = ctx.store.new_tmp_path()
    ctx.qemu_img.create_on(tmp, ctx.store.blob(parent.digest), parent.format, parent.virtual_size)
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 1M 1M", str(tmp)],
        check=True, capture_output=True,
    )  # fmt: skip
    save_image(ctx, tmp, name, parent=parent, like=parent, source="test")


def read_byte(ctx: Context, name: str, offset: int) -> bytes:
    m = ctx.store.get(name)
    blob = str(ctx.store.blob(m.digest))
    out = subprocess.run(
        ["qemu-io", "-f", m.format, "-r", "-c", f"read -v {offset} 1", blob],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return bytes.fromhex(out.split(":", 1)[1].split()[0])


def test_tag_is_a_second_name(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "a")
    manage.tag(ctx, "a", "b")
    assert ctx.store.get("b").digest == ctx.store.get("a").digest
    with pytest.raises(Conflict):
        manage.tag(ctx, "a", "b")
    manage.remove(ctx, "a", holders=image_holders(ctx))
    assert ctx.store.blob(ctx.store.get("b").digest).exists()


def test_layers_depend_and_rm_names_dependants(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    layer_on(ctx, "base", "child")
    child = ctx.store.get("child")
    assert child.parent == ctx.store.get("base").digest
    assert ctx.store.blob(child.digest).stat().st_size < 3 << 20  # only the changed MiB
    assert read_byte(ctx, "child", 0) == b"a" and read_byte(ctx, "child", 1 << 20) == b"b"
    with pytest.raises(Conflict, match="has dependants: child"):
        manage.remove(ctx, "base", holders=image_holders(ctx))
    manage.remove(
        ctx, "base", holders=image_holders(ctx), force=True
    )  # the name goes, the data the child needs stays
    assert read_byte(ctx, "child", 0) == b"a"
    manage.remove(ctx, "child", holders=image_holders(ctx))
    assert list(ctx.home.blobs.iterdir()) == []


def test_convert_flattens_and_changes_format(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    layer_on(ctx, "base", "child")
    raw = manage.convert(ctx, "child", "raw", as_name="child-raw")
    assert (raw.format, raw.parent) == ("raw", None)
    assert read_byte(ctx, "child-raw", 1 << 20) == b"b"
    packed = manage.convert(ctx, "child", "qcow2", compress=True)
    assert packed.name == "child" and packed.parent is None
    info = ctx.qemu_img.info(ctx.store.blob(packed.digest), "qcow2")
    assert info.backing_file is None
    assert read_byte(ctx, "child", 0) == b"a"
    with pytest.raises(InvalidInput, match="only qcow2"):
        manage.convert(ctx, "child", "raw", compress=True, as_name="x")


def test_resize_grows_never_shrinks(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    grown = manage.resize(ctx, "base", 1 << 30, as_name="big")
    assert grown.virtual_size == 1 << 30 and grown.parent == ctx.store.get("base").digest
    assert ctx.store.blob(grown.digest).stat().st_size < 1 << 20  # a thin layer
    with pytest.raises(InvalidInput, match="never shrunk"):
        manage.resize(ctx, "big", 256 << 20)


def test_export_writes_one_standalone_file(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    layer_on(ctx, "base", "child")
    (out,) = manage.export(ctx, "child", tmp_path / "out.qcow2")
    info = ctx.qemu_img.info(out, "qcow2")
    assert info.backing_file is None and info.virtual_size == 256 << 20
    with pytest.raises(Conflict, match="already exists"):
        manage.export(ctx, "child", out)
    (raw,) = manage.export(ctx, "child", tmp_path, fmt="raw")
    assert raw == tmp_path / "child.raw" and raw.stat().st_size == 256 << 20
    assert not list(tmp_path.glob(".*corral-export"))


def test_export_follows_no_link_planted_at_a_temporary_name(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who can write to the export directory plants links where corral used to write
    (`.NAME.corral-export`) and where it might write (a guessed random name): neither is
    followed, the victims keep their bytes, the export still happens."""
    make_image(ctx, tmp_path, "base")
    shared = tmp_path / "shared"
    shared.mkdir()
    victims = [tmp_path / "victim-old", tmp_path / "victim-guessed"]
    for victim in victims:
        victim.write_bytes(b"precious")
    (shared / ".base.qcow2.corral-export").symlink_to(victims[0])
    (shared / ".base.qcow2.guessed.corral-export").symlink_to(victims[1])
    names = iter(["guessed"])
    real = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names, None) or real(n))
    (out,) = manage.export(ctx, "base", shared / "base.qcow2")
    assert [v.read_bytes() for v in victims] == [b"precious", b"precious"]
    assert ctx.qemu_img.info(out, "qcow2").virtual_size == 256 << 20
    assert not out.is_symlink() and (out.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in shared.iterdir()) == [
        ".base.qcow2.corral-export",
        ".base.qcow2.guessed.corral-export",
        "base.qcow2",
    ]  # the links are left alone; no temporary file is left behind


def test_prune_least_recently_used_first(ctx: Context, tmp_path: Path) -> None:
    for i, name in enumerate(("old", "mid", "new")):
        make_image(ctx, tmp_path, name, data_mib=4 + i)  # distinct content, distinct blobs
        m = ctx.store.get(name)
        ctx.store.save(m.replace(last_used_at=now() - timedelta(days=10 - 4 * i)))
    layer_on(ctx, "new", "on-new")
    with pytest.raises(InvalidInput, match="say what to prune"):
        manage.prune(ctx, holders=image_holders(ctx))
    would = manage.prune(
        ctx, holders=image_holders(ctx), older_than=timedelta(days=5), dry_run=True
    )
    assert [p.name for p in would] == ["old", "mid"]
    total = store_bytes(ctx)
    pruned = manage.prune(
        ctx, holders=image_holders(ctx), keep_bytes=total - 1
    )  # removing one image is enough
    assert [p.name for p in pruned] == ["old"]
    assert pruned[0].freed > 4 << 20
    assert sorted(m.name for m in ctx.store.list()) == ["mid", "new", "on-new"]
    # "new" carries a layer, "on-new" is recent but unused: with a tiny budget, all unused go.
    assert [p.name for p in manage.prune(ctx, holders=image_holders(ctx), keep_bytes=0)] == [
        "mid",
        "on-new",
        "new",
    ]


def test_parse_age() -> None:
    assert manage.parse_age("7d") == timedelta(days=7)
    assert manage.parse_age("90m") == timedelta(minutes=90)
    with pytest.raises(InvalidInput):
        manage.parse_age("soon")


def test_prune_drops_the_temporary_names_of_builds_killed_midway(
    ctx: Context, tmp_path: Path
) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    make_image(ctx, tmp_path, f"tmp-build-{dead.pid}-0a1b2c3d", data_mib=4)
    make_image(ctx, tmp_path, f"tmp-build-{os.getpid()}-0a1b2c3d", data_mib=5)  # under way
    make_image(ctx, tmp_path, "kept", data_mib=6)
    orphan_blob = ctx.store.blob(ctx.store.get(f"tmp-build-{dead.pid}-0a1b2c3d").digest)
    assert (
        manage.prune(ctx, holders=image_holders(ctx), older_than=timedelta(days=365)) == []
    )  # nothing that old
    names = sorted(m.name for m in ctx.store.list())
    assert names == ["kept", f"tmp-build-{os.getpid()}-0a1b2c3d"]
    assert not orphan_blob.exists()  # its data went with it
