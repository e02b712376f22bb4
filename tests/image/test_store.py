"""The image store against real qemu-img."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.image.store import check_chain_inside
from helpers import corral


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_qcow2(path: Path, size: str = "64M") -> Path:
    qemu_img("create", "-q", "-f", "qcow2", str(path), size)
    return path


def store_files(ctx: Context) -> list[Path]:
    return sorted(p for p in ctx.home.root.rglob("*") if p.is_file())


def test_import_qcow2_and_raw(ctx: Context, tmp_path: Path) -> None:
    q = ctx.store.import_image(make_qcow2(tmp_path / "a.qcow2"), "a")
    raw = tmp_path / "b.img"
    raw.write_bytes(b"\x01" * (1 << 20))
    r = ctx.store.import_image(raw, "b", default_user="debian")
    assert (q.format, q.virtual_size) == ("qcow2", 64 << 20)
    assert (r.format, r.virtual_size, r.default_user) == ("raw", 1 << 20, "debian")
    blob = ctx.store.blob(r.digest)
    assert blob.read_bytes() == raw.read_bytes()
    assert not os.access(blob, os.W_OK) or os.geteuid() == 0
    assert oct(blob.stat().st_mode & 0o777) == "0o400"  # read-only, the owner alone
    assert [m.name for m in ctx.store.list()] == ["a", "b"]


def test_content_addressed_by_sha256(ctx: Context, tmp_path: Path) -> None:
    import hashlib

    raw = tmp_path / "x.img"
    raw.write_bytes(os.urandom(1 << 16))
    one = ctx.store.import_image(raw, "one")
    two = ctx.store.import_image(raw, "two")
    assert one.digest == two.digest == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert len(list(ctx.home.blobs.iterdir())) == 1


def test_kernel_initrd_cmdline_are_kept(ctx: Context, tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd").write_bytes(b"initrd")
    m = ctx.store.import_image(
        make_qcow2(tmp_path / "d.qcow2"), "d", kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd", cmdline="console=ttyS0",
    )  # fmt: skip
    assert m.kernel and ctx.store.blob(m.kernel).read_bytes() == b"kernel"
    assert m.initrd and ctx.store.blob(m.initrd).read_bytes() == b"initrd"
    assert ctx.store.get("d").cmdline == "console=ttyS0"


def test_backing_file_outside_store_is_refused(ctx: Context, tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil), "1M")
    ctx.store.ensure()
    before = store_files(ctx)
    with pytest.raises(InvalidInput, match=r"backing file .*/etc/passwd"):
        ctx.store.import_image(evil, "evil")
    assert store_files(ctx) == before
    assert not ctx.store.exists("evil")


def test_external_data_file_is_refused(ctx: Context, tmp_path: Path) -> None:
    img = tmp_path / "data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'raw.bin'}",
             str(img), "1M")  # fmt: skip
    with pytest.raises(InvalidInput, match="data file"):
        ctx.store.import_image(img, "d")


def test_unsupported_format_is_refused(ctx: Context, tmp_path: Path) -> None:
    vmdk = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(vmdk), "1M")
    with pytest.raises(InvalidInput, match="unsupported image format 'vmdk'"):
        ctx.store.import_image(vmdk, "v")


def test_corrupt_qcow2_is_refused(ctx: Context, tmp_path: Path) -> None:
    img = make_qcow2(tmp_path / "bad.qcow2", "16M")
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write 0 64k", str(img)], check=True, capture_output=True
    )
    data = bytearray(img.read_bytes())
    # Point the first L1 entry at an offset beyond the file: qemu-img check reports it.
    l1_offset = int.from_bytes(data[40:48], "big")
    data[l1_offset : l1_offset + 8] = (0x80000000_00000000 | (1 << 40)).to_bytes(8, "big")
    img.write_bytes(bytes(data))
    with pytest.raises(Exception, match="qemu-img check failed"):
        ctx.store.import_image(img, "bad")
    assert not ctx.store.exists("bad")
    assert list(ctx.home.image_tmp.iterdir()) == []


def test_name_rules_and_conflicts(ctx: Context, tmp_path: Path) -> None:
    img = make_qcow2(tmp_path / "a.qcow2")
    ctx.store.import_image(img, "debian-12")
    with pytest.raises(Conflict, match="already exists"):
        ctx.store.import_image(img, "debian-12")
    for bad in ("../x", "a/b", ".hidden", "", "debian-13\n", "x" * 129):
        with pytest.raises(InvalidInput, match="invalid image name"):
            ctx.store.import_image(img, bad)
    assert [m.name for m in ctx.store.list()] == ["debian-12"]  # no manifest "debian-13\n"
    with pytest.raises(NotFound, match="no such file"):
        ctx.store.import_image(tmp_path / "missing.qcow2", "m")
    with pytest.raises(NotFound, match="no image named 'nope'"):
        ctx.store.get("nope")


def test_interrupted_import_leaves_nothing(ctx: Context, tmp_path: Path) -> None:
    ctx.store.ensure()
    # A partial file from a dead process (pid 999999 does not exist) is purged at the next import.
    (ctx.home.image_tmp / "999999-deadbeef").write_bytes(b"partial")
    ctx.store.import_image(make_qcow2(tmp_path / "a.qcow2"), "a")
    assert list(ctx.home.image_tmp.iterdir()) == []


def test_interrupted_import_by_signal(ctx: Context, tmp_path: Path) -> None:
    import signal
    import sys
    import time

    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    env = {**os.environ, "CORRAL_HOME": str(ctx.home.root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.app", "image", "import", str(big), "--name", "big"],
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(ctx.home.image_tmp.glob("*")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not ctx.store.exists("big")
    assert list(ctx.home.blobs.iterdir()) == []
    ctx.store.import_image(make_qcow2(tmp_path / "a.qcow2"), "a")  # the next command cleans up
    assert list(ctx.home.image_tmp.iterdir()) == []


def test_remove_refused_while_used_unless_forced(ctx: Context, tmp_path: Path) -> None:
    m = ctx.store.import_image(make_qcow2(tmp_path / "a.qcow2"), "a")
    with pytest.raises(Conflict, match=r"used by instance.*web1"):
        ctx.store.remove("a", users=["web1"])
    ctx.store.remove("a", users=["web1"], force=True)
    assert not ctx.store.exists("a")
    assert ctx.store.collect_garbage(keep={m.digest}) == []
    assert ctx.store.collect_garbage(keep=()) == [m.digest]


def test_chain_check_refuses_overlay_on_outside_file(ctx: Context, tmp_path: Path) -> None:
    base = make_qcow2(tmp_path / "base.qcow2")
    overlay = tmp_path / "overlay.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(overlay))
    with pytest.raises(InvalidInput, match="outside the image store"):
        check_chain_inside(ctx.qemu_img, overlay, "qcow2", ctx.home.blobs)
    m = ctx.store.import_image(base, "base")
    inside = tmp_path / "inside.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(ctx.store.blob(m.digest)), "-F", "qcow2",
             str(inside))  # fmt: skip
    check_chain_inside(ctx.qemu_img, inside, "qcow2", ctx.home.blobs)


def test_manifest_json_has_paths(ctx: Context, tmp_path: Path) -> None:
    m = ctx.store.import_image(make_qcow2(tmp_path / "a.qcow2"), "a")
    data = ctx.store.manifest_json(m)
    assert data["path"] == str(ctx.store.blob(m.digest))
    assert json.dumps(data)


def test_chain_check_compares_with_the_recorded_chain(ctx: Context, tmp_path: Path) -> None:
    m = ctx.store.import_image(make_qcow2(tmp_path / "base.qcow2"), "base")
    disk = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(ctx.store.blob(m.digest)), "-F", "qcow2",
             str(disk))  # fmt: skip
    check_chain_inside(ctx.qemu_img, disk, "qcow2", ctx.home.blobs, [m.digest])
    with pytest.raises(InvalidInput, match="does not match the recorded one"):
        check_chain_inside(ctx.qemu_img, disk, "qcow2", ctx.home.blobs, [m.digest, "0" * 64])


def test_a_vmdk_descriptor_never_makes_qemu_img_open_its_extents(
    ctx: Context, tmp_path: Path
) -> None:
    """A hostile image: a vmdk descriptor whose extent is a host file. Probing with qemu-img
    would open the extent (here a fifo nobody writes to, so it would hang); the header alone
    refuses the file."""
    extent = tmp_path / "extent"
    os.mkfifo(extent)
    descriptor = tmp_path / "disk.img"
    descriptor.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        f'RW 2048 FLAT "{extent}" 0\n'
        'ddb.virtualHWVersion = "4"\n'
    )
    with pytest.raises(InvalidInput, match="unsupported image format 'vmdk'"):
        ctx.store.import_image(descriptor, "hostile")
    assert not ctx.store.exists("hostile")


def test_a_qcow2_data_file_is_refused_before_qemu_img_opens_it(
    ctx: Context, tmp_path: Path
) -> None:
    """The data file is a fifo: qemu-img opening it would hang; the header refuses it first."""
    data = tmp_path / "raw.bin"
    img = tmp_path / "data.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={data}", str(img), "1M")
    data.unlink()
    os.mkfifo(data)
    with pytest.raises(InvalidInput, match="external data file"):
        ctx.store.import_image(img, "d")
    assert not ctx.store.exists("d")


def test_a_forged_manifest_digest_never_becomes_a_path_outside_the_store(
    ctx: Context, tmp_path: Path
) -> None:
    # A manifest edited (or planted) to name "../../x" as its disk: every blob path is made
    # by one function, which refuses anything but a sha256 hex digest.
    m = ctx.store.import_image(make_qcow2(tmp_path / "a.qcow2"), "a")
    path = ctx.home.manifest("a")
    forged = json.loads(path.read_text())
    outside = tmp_path / "outside.qcow2"
    make_qcow2(outside)
    forged["digest"] = os.path.relpath(outside, ctx.home.blobs)
    path.write_text(json.dumps(forged))
    image = ctx.store.get("a")
    with pytest.raises(CorralError, match="invalid blob digest"):
        ctx.store.blob(image.digest)
    proc = corral(ctx, "launch", "a", "--name", "x", timeout=60)
    assert proc.returncode != 0 and proc.stderr.startswith("error: invalid blob digest"), proc
    assert "Traceback" not in proc.stderr
    assert not ctx.home.instance("x").dir.exists()
    assert ctx.store.blob(m.digest).exists()
