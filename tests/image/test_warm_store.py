"""Warm images in the store: the state blob lives and dies with the image; rm, prune, export
and inspect know about it. The state here is stand-in bytes (the store never reads it)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import Conflict, InvalidInput
from corral.fsutil import hash_file
from corral.image import manage
from corral.image.manifest import Manifest, WarmRequirements, WarmState, now
from corral.image_holders import image_holders
from helpers import corral
from image.test_manage import layer_on, make_image

REQUIRES = WarmRequirements(
    qemu_version="8.2.2", machine="pc-q35-8.2", cpu_model="max", accelerator="tcg",
    cpus=1, memory_mib=256, devices=("disk0:virtio-blk", "seed:virtio-blk", "agent"),
)  # fmt: skip


def make_warm(ctx: Context, tmp_path: Path, base: str, name: str, state: bytes) -> Manifest:
    """A warm image as `corral snapshot --memory` leaves it: a layer plus a state blob."""
    layer_on(ctx, base, name)
    tmp = ctx.store.new_tmp_path()
    tmp.write_bytes(state)
    digest = hash_file(tmp)
    ctx.store.add_blob_file(tmp, digest)
    warm = WarmState(state=digest, state_size=len(state), requirements=REQUIRES, agent=True)
    manifest = ctx.store.get(name).replace(warm=warm)
    ctx.store.save(manifest)
    return manifest


def test_a_warm_manifest_round_trips_and_refuses_unknown_requirements() -> None:
    warm = WarmState(state="ab" * 32, state_size=3, requirements=REQUIRES, agent=False)
    again = WarmState.from_json(warm.to_json())
    assert again == warm
    data = warm.to_dict()
    data["requirements"]["gpu"] = "yes"
    with pytest.raises(ValueError, match="unknown field 'gpu'"):
        WarmState.from_dict(data)


def test_the_state_blob_lives_and_dies_with_the_image(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    warm = make_warm(ctx, tmp_path, "base", "hot", b"RAM" * 1000)
    assert warm.warm is not None
    state = ctx.store.blob(warm.warm.state)
    assert ctx.store.collect_garbage(image_holders(ctx).keep) == []
    assert state.read_bytes() == b"RAM" * 1000
    # The disk layer a warm image stands on is refused like any image's dependant.
    with pytest.raises(Conflict, match="has dependants: hot"):
        manage.remove(ctx, "base", holders=image_holders(ctx))
    # A second name for the warm image shares the state; the last name takes it along.
    manage.tag(ctx, "hot", "hot2")
    manage.remove(ctx, "hot", holders=image_holders(ctx))
    assert state.exists()
    manage.remove(ctx, "hot2", holders=image_holders(ctx))
    assert not state.exists() and not ctx.store.blob(warm.digest).exists()
    assert ctx.store.blob(ctx.store.get("base").digest).exists()


def test_prune_counts_and_frees_the_state(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    warm = make_warm(ctx, tmp_path, "base", "hot", os.urandom(3 << 20))
    assert warm.warm is not None
    ctx.store.save(warm.replace(last_used_at=now() - timedelta(days=30)))
    pruned = manage.prune(ctx, holders=image_holders(ctx), older_than=timedelta(days=7))
    assert [p.name for p in pruned] == ["hot"]
    assert pruned[0].freed >= 3 << 20  # the state is part of what the image held
    assert not ctx.store.blob(warm.warm.state).exists()


def test_export_with_state_writes_the_state_beside_the_disk(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    make_warm(ctx, tmp_path, "base", "hot", b"STATE" * 4096)
    out = tmp_path / "out"
    out.mkdir()
    disk, state = manage.export(ctx, "hot", out / "hot.qcow2", with_state=True)
    assert state == out / "hot.qcow2.state" and state.read_bytes() == b"STATE" * 4096
    assert ctx.qemu_img.info(disk, "qcow2").backing_file is None
    assert sorted(p.name for p in out.iterdir()) == ["hot.qcow2", "hot.qcow2.state"]
    (out / "again.qcow2.state").write_bytes(b"mine")
    with pytest.raises(Conflict, match=r"again\.qcow2\.state already exists"):
        manage.export(ctx, "hot", out / "again.qcow2", with_state=True)
    assert (out / "again.qcow2.state").read_bytes() == b"mine"
    assert not (out / "again.qcow2").exists()
    (out / "again.qcow2.state").unlink()
    with pytest.raises(InvalidInput, match="not warm"):
        manage.export(ctx, "base", out / "base.qcow2", with_state=True)
    assert not (out / "base.qcow2").exists()


def test_a_derived_image_is_not_warm(ctx: Context, tmp_path: Path) -> None:
    """Resizing or converting changes the disk under the saved RAM: the copy is cold."""
    make_image(ctx, tmp_path, "base")
    make_warm(ctx, tmp_path, "base", "hot", b"x")
    assert manage.resize(ctx, "hot", 512 << 20, as_name="bigger").warm is None
    assert manage.convert(ctx, "hot", "qcow2", as_name="flat").warm is None
    assert manage.tag(ctx, "hot", "same").warm is not None


def test_inspect_says_warm_and_what_it_requires(ctx: Context, tmp_path: Path) -> None:
    make_image(ctx, tmp_path, "base")
    make_warm(ctx, tmp_path, "base", "hot", b"x" * 2048)
    proc = corral(ctx, "image", "inspect", "hot")
    assert proc.returncode == 0, proc.stderr
    assert "warm:          yes: state 2.0 KiB" in proc.stdout
    assert "requires:      QEMU 8.2.2, machine pc-q35-8.2, cpu max, tcg, 1 cpus, 256 MiB" in (
        proc.stdout
    )
    listed = {line.split()[0]: line.split()[-2] for line in corral(ctx, "image", "ls").stdout
              .splitlines()[1:]}  # fmt: skip
    assert listed == {"base": "-", "hot": "c1m256"}
    cold = corral(ctx, "image", "inspect", "base")
    assert "warm:          no" in cold.stdout
    data = corral(ctx, "image", "inspect", "hot", "--json").stdout
    assert '"state_path"' in data and '"memory_mib": 256' in data
    proc = corral(ctx, "image", "export", "hot", str(tmp_path / "e.qcow2"), "--with-state")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "e.qcow2.state").read_bytes() == b"x" * 2048
