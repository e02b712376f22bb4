"""The build store: names from specs and callers never become paths outside it (issue 11).

Real qemu-img makes and inspects the disks; nothing here boots a VM.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from corral.builds.executor import BuildOptions, build
from corral.builds.spec import Cache, Run, Spec
from corral.builds.store import BuildStore, LayerMeta
from corral.context import Context
from corral.errors import CorralError, InvalidInput

SIZE = 64 << 20


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def victim(ctx: Context) -> Path:
    """Another VM's disk, where `(cache (../../instances/web1/disk ...))` used to lead."""
    disk = ctx.home.root / "instances" / "web1" / "disk.qcow2"
    disk.parent.mkdir(parents=True)
    ctx.qemu_img.create(disk, SIZE)
    return disk


@pytest.fixture
def img_ctx(ctx: Context, tmp_path: Path) -> Context:
    """A store with an image 'img' to build from (no test here gets as far as booting it)."""
    disk = tmp_path / "img.qcow2"
    ctx.qemu_img.create(disk, SIZE)
    ctx.store.import_image(disk, "img")
    return ctx


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


# --- cache names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../instances/web1/disk", "/var/lib/corral/x", "a/b", ".hidden", "", "c\n"]
)
def test_a_cache_name_that_is_a_path_reaches_no_file(
    ctx: Context, store: BuildStore, victim: Path, name: str
) -> None:
    before, files = digest(victim), files_under(ctx.home.root)
    for use in (
        store.cache_disk,
        store.cache_lock,
        lambda n: store.open_cache(n, ctx.qemu_img, SIZE),
    ):
        with pytest.raises(InvalidInput, match="invalid cache id"):
            use(name)
    assert digest(victim) == before
    assert files_under(ctx.home.root) == files


def test_a_build_of_a_spec_made_in_code_refuses_a_path_as_cache(
    img_ctx: Context, victim: Path, tmp_path: Path
) -> None:
    """The parser refuses such a name with its position; a Spec built in code is refused too,
    before any VM boots."""
    before = digest(victim)
    spec = Spec("img", (Run("true", cache=(Cache("../../instances/web1/disk", "/mnt"),)),))
    with pytest.raises(InvalidInput, match=r"invalid cache id '\.\./\.\./instances/web1/disk'"):
        build(img_ctx, spec, BuildOptions(context=tmp_path), lambda _: None)
    assert digest(victim) == before
    assert not list(BuildStore(img_ctx.home).runs.iterdir())


def test_a_symlink_planted_as_a_cache_disk_is_not_followed(
    ctx: Context, store: BuildStore, victim: Path
) -> None:
    before = digest(victim)
    (store.caches / "c.qcow2").symlink_to(victim)
    with pytest.raises(InvalidInput, match=r"c\.qcow2 is a symbolic link") as info:
        store.open_cache("c", ctx.qemu_img, SIZE)
    assert "\n" not in str(info.value)
    assert digest(victim) == before


def test_a_symlink_planted_as_a_cache_lock_is_not_followed(
    store: BuildStore, tmp_path: Path
) -> None:
    outside = tmp_path / "made-by-corral"
    (store.caches / "c.lock").symlink_to(outside)
    with pytest.raises(InvalidInput, match=r"c\.lock is a symbolic link"):
        store.cache_lock("c")
    assert not outside.exists()


def test_a_cache_directory_that_is_a_symlink_is_refused(
    ctx: Context, store: BuildStore, victim: Path
) -> None:
    store.caches.rmdir()
    store.caches.symlink_to(victim.parent)
    (victim.parent / "c.qcow2").symlink_to(victim)
    with pytest.raises(InvalidInput, match="leads out of"):
        store.open_cache("c", ctx.qemu_img, SIZE)
    with pytest.raises(InvalidInput, match="leads out of"):
        store.cache_lock("c")
    assert sorted(p.name for p in victim.parent.iterdir()) == ["c.qcow2", "disk.qcow2"]


def test_a_cache_disk_with_a_backing_file_is_refused(
    ctx: Context, store: BuildStore, victim: Path
) -> None:
    """A planted qcow2 whose backing file is another disk would expose it to the build."""
    before = digest(victim)
    ctx.qemu_img.create_overlay(store.caches / "c.qcow2", victim, "qcow2", SIZE)
    with pytest.raises(CorralError, match=f"not a disk corral made: it refers to {victim}") as info:
        store.open_cache("c", ctx.qemu_img, SIZE)
    assert info.value.hint and "remove" in info.value.hint
    assert digest(victim) == before


def test_a_cache_disk_that_is_not_qcow2_is_refused_unprobed(
    ctx: Context, store: BuildStore, victim: Path
) -> None:
    """A raw file that holds a qcow2 header naming a backing file is still raw: never probed."""
    raw = store.caches / "c.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), str(SIZE)], check=True)
    with pytest.raises(CorralError, match="is not a qcow2 disk"):
        store.open_cache("c", ctx.qemu_img, SIZE)
    fifo = store.caches / "f.qcow2"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match=r"f\.qcow2 is not a regular file"):
        store.open_cache("f", ctx.qemu_img, SIZE)


def test_a_new_cache_is_a_plain_qcow2_made_in_place(ctx: Context, store: BuildStore) -> None:
    path = store.open_cache("opam-archives.v2", ctx.qemu_img, SIZE)
    assert path == store.caches.resolve() / "opam-archives.v2.qcow2"
    info = ctx.qemu_img.info(path, "qcow2")
    assert (info.format, info.virtual_size, info.backing_file) == ("qcow2", SIZE, None)
    assert store.open_cache("opam-archives.v2", ctx.qemu_img, SIZE) == path  # used again
    assert sorted(p.name for p in store.caches.iterdir()) == ["opam-archives.v2.qcow2"]


# --- layer IDs ---------------------------------------------------------------------------------


def test_a_layer_id_that_is_a_path_is_refused(ctx: Context, store: BuildStore) -> None:
    """`launch build:ID` takes ID from an API caller: a path must not pick a meta.json."""
    from corral.builds.publish import image_for
    from corral.builds.store import Boot

    planted = ctx.home.root / "instances" / "evil"
    planted.mkdir(parents=True)
    boot = Boot("x", "0" * 64, "raw", None, None, None, "root")
    (planted / "meta.json").write_bytes(LayerMeta("0" * 64, "1" * 64, "(run)", boot).to_json())
    for ref in ("../../instances/evil", "/tmp", "0123456/", "ABCDEF0123"):
        with pytest.raises(InvalidInput, match="invalid build layer ID"):
            store.resolve(ref)
        with pytest.raises(InvalidInput, match="invalid build layer ID"):
            image_for(ctx, f"build:{ref}")
    with pytest.raises(InvalidInput, match="invalid build layer ID"):
        store.layer_dir("../x")
    assert ctx.store.list() == []
