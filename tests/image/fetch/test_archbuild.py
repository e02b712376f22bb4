"""`corral image build -f architecture.yml` end to end: local HTTP server, real qemu-img."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import subprocess
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import Conflict, InvalidInput
from corral.image.archfile.images import build_archfile, parse_owner
from corral.image.fetch.download import Options
from helpers import corral
from image.fetch.support import Server, assert_unchanged, sha256, store_state

FAST = Options(timeout=5, retries=2, retry_delay=0.01)


def info(path: Path) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         capture_output=True).stdout  # fmt: skip
    return json.loads(out)


def check_ok(path: Path, fmt: str = "qcow2") -> None:
    subprocess.run(["qemu-img", "check", "-q", "-f", fmt, str(path)], check=True)


def test_older_format_end_to_end(
    ctx: Context, server: Server, qcow2_bytes: bytes, tmp_path: Path
) -> None:
    url = server.add("rocky/Rocky-9-GenericCloud.latest.x86_64.qcow2", qcow2_bytes)
    arch = tmp_path / "architecture.yml"
    arch.write_text(
        "owner: the-owner-name\n"
        "images:\n"
        "  rocky:\n"
        "    name: rocky\n"
        "    version: 9.4\n"
        f"    get_url: {url}\n"
        "    checksum:\n"
        "      type: sha512\n"
        f"      value: {hashlib.sha512(qcow2_bytes).hexdigest()}\n"
        "    size: 64M\n"
    )
    out = tmp_path / "generated-images"
    proc = corral(ctx, "image", "build", "-f", str(arch), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    image = out / "rocky-9.4.qcow2"
    assert proc.stdout.strip().startswith("built rocky-9.4: qcow2 64.0 MiB sha256:")
    assert proc.stdout.strip().endswith(f"-> {image}")
    assert "owner 'the-owner-name' is not a user here" in proc.stderr
    data = info(image)
    assert (data["format"], data["virtual-size"]) == ("qcow2", 64 << 20)
    check_ok(image)
    manifest = ctx.store.get("rocky-9.4")
    assert manifest.digest == sha256(image.read_bytes())  # the store holds the same bytes
    assert (manifest.format, manifest.virtual_size) == ("qcow2", 64 << 20)
    assert sorted(p.name for p in out.iterdir()) == ["rocky-9.4.qcow2"]
    assert list(ctx.home.image_tmp.iterdir()) == []


def test_current_format_end_to_end(
    ctx: Context, server: Server, qcow2_bytes: bytes, other_qcow2_bytes: bytes, tmp_path: Path
) -> None:
    packed = lzma.compress(qcow2_bytes)
    url = server.add("img/base.qcow2.xz", packed)
    (tmp_path / "disks").mkdir()
    raw = tmp_path / "disks" / "base.raw"
    raw.write_bytes(b"\x01" * (1 << 20) + bytes(3 << 20))
    local = tmp_path / "disks" / "local.qcow2"
    local.write_bytes(other_qcow2_bytes)
    arch = tmp_path / "arch.yml"
    arch.write_text(f"""\
owner: "4321:4322"
images:
  fromurl:
    name: web
    version: "1.0"
    format: qcow2
    size: 32M
    user: debian
    input:
      url: {url}
      format: qcow2
      checksum:
        type: sha3_384
        value: {hashlib.sha3_384(packed).hexdigest()}
  fromraw:
    name: rawdisk
    format: raw
    size: 8M
    input:
      path: disks/base.raw
      format: raw
      checksum: {{type: blake2b, value: {hashlib.blake2b(raw.read_bytes()).hexdigest()}}}
  fromqcow2:
    name: same
    version: 2
    size: 8M
    input: disks/local.qcow2
  blank:
    name: scratch
    size: 16M
""")
    out = tmp_path / "out"
    lines: list[str] = []
    built = build_archfile(ctx, arch, output_dir=out, options=FAST, log=lines.append)
    assert [(b.key, b.manifest.name) for b in built] == [
        ("fromurl", "web-1.0"), ("fromraw", "rawdisk"), ("fromqcow2", "same-2"),
        ("blank", "scratch"),
    ]  # fmt: skip
    expected = {
        "web-1.0.qcow2": ("qcow2", 32 << 20),
        "rawdisk.raw": ("raw", 8 << 20),
        "same-2.qcow2": ("qcow2", 8 << 20),
        "scratch.qcow2": ("qcow2", 16 << 20),
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for item in built:
        assert item.output is not None
        fmt, size = expected[item.output.name]
        data = info(item.output)
        assert (data["format"], data["virtual-size"]) == (fmt, size)
        if fmt == "qcow2":
            check_ok(item.output)
        assert item.manifest.digest == sha256(item.output.read_bytes())
        if os.geteuid() == 0:  # the file's owner names a uid:gid, applied to the outputs
            assert (item.output.stat().st_uid, item.output.stat().st_gid) == (4321, 4322)
    assert ctx.store.get("web-1.0").default_user == "debian"
    # The content survived conversion: the raw image's first MiB is still there.
    with open(out / "rawdisk.raw", "rb") as f:
        assert f.read(1 << 20) == b"\x01" * (1 << 20)

    # Again with --replace: the download comes from the store, not the server.
    before = len(server.requests("img/base.qcow2.xz"))
    build_archfile(ctx, arch, output_dir=out, replace=True, options=FAST, log=lines.append)
    assert len(server.requests("img/base.qcow2.xz")) == before
    assert any("already in the store" in line for line in lines)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_option_wins(ctx: Context, tmp_path: Path) -> None:
    arch = tmp_path / "a.yml"
    arch.write_text("owner: root\nimages:\n  a: {name: a, size: 1M}\n")
    proc = corral(ctx, "image", "build", "-f", str(arch), "--output", str(tmp_path / "o"),
                  "--owner", "1234:2345")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stat = (tmp_path / "o" / "a.qcow2").stat()
    assert (stat.st_uid, stat.st_gid) == (1234, 2345)


def test_parse_owner() -> None:
    ids = {(o.uid, o.gid) for o in map(parse_owner, ("0", "root", "root:0", "0:root"))}
    assert ids == {(0, 0)}
    assert (parse_owner("1234:99").uid, parse_owner("1234:99").gid) == (1234, 99)
    with pytest.raises(InvalidInput, match="no such user 'nobody-here'"):
        parse_owner("nobody-here")
    with pytest.raises(InvalidInput, match="no such group 'nogroup-here'"):
        parse_owner("0:nogroup-here")


def test_size_smaller_than_the_image_builds_nothing(
    ctx: Context, server: Server, qcow2_bytes: bytes, tmp_path: Path
) -> None:
    url = server.add("big.qcow2", qcow2_bytes)  # 8 MiB virtual
    arch = tmp_path / "a.yml"
    arch.write_text(f"""\
images:
  first: {{name: first, size: 1G}}
  small:
    name: small
    size: 4M
    input: {{url: "{url}", checksum: {{type: sha256, value: {sha256(qcow2_bytes)}}}}}
""")
    with pytest.raises(InvalidInput, match=r"images\.small\.size: 4M is smaller than the image "
                                           r"\(8M\); corral never shrinks a disk"):  # fmt: skip
        build_archfile(ctx, arch, output_dir=tmp_path / "out", options=FAST)
    assert not ctx.store.exists("first") and not ctx.store.exists("small")
    assert list((tmp_path / "out").iterdir()) == []
    assert list(ctx.home.image_tmp.iterdir()) == []


def test_bad_file_fetches_nothing(ctx: Context, server: Server, qcow2_bytes: bytes,
                                  tmp_path: Path) -> None:  # fmt: skip
    url = server.add("rocky.qcow2", qcow2_bytes)
    arch = tmp_path / "architecture.yml"
    arch.write_text(f"""\
owner: me
images:
  good:
    name: good
    size: 1G
    get_url: {url}
    checksum: {{type: sha256, value: {sha256(qcow2_bytes)}}}
  rocky:
    name: rocky
    size: 1G
    get_url: {url}
    checksum: {{type: sha999, value: {sha256(qcow2_bytes)}}}
""")
    ctx.store.ensure()
    before = store_state(ctx)
    proc = corral(ctx, "image", "build", "-f", str(arch))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"error: {arch}: images.rocky.checksum.type: unknown algorithm 'sha999'"
    assert lines[-1] == "hint: nothing was built; fix the file and run again"
    assert server.log == []  # nothing was fetched
    assert_unchanged(ctx, before)


def test_wrong_checksum_names_the_image(ctx: Context, server: Server, qcow2_bytes: bytes,
                                        tmp_path: Path) -> None:  # fmt: skip
    url = server.add("rocky.qcow2", qcow2_bytes)
    arch = tmp_path / "a.yml"
    wrong = hashlib.sha256(b"no").hexdigest()
    arch.write_text(f"images:\n  rocky:\n    name: rocky\n    size: 1G\n    get_url: {url}\n"
                    f"    checksum: {{type: sha256, value: {wrong}}}\n")  # fmt: skip
    ctx.store.ensure()
    before = store_state(ctx)
    proc = corral(ctx, "image", "build", "-f", str(arch), "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"fetching {url}"  # progress notes come first
    first = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error: "))
    assert first.startswith(f"error: {arch}: images.rocky: checksum mismatch for {url}: ")
    assert f"expected sha256:{wrong}, got sha256:{sha256(qcow2_bytes)}" in first
    assert_unchanged(ctx, before)
    assert list((tmp_path / "o").iterdir()) == []


def test_missing_local_input_and_conflicts(ctx: Context, tmp_path: Path) -> None:
    arch = tmp_path / "a.yml"
    arch.write_text("images:\n  a: {name: a, size: 1M, input: {path: nowhere.qcow2}}\n")
    with pytest.raises(InvalidInput, match=r"images\.a\.input\.path: no such file: nowhere"):
        build_archfile(ctx, arch)
    arch.write_text("images:\n  a: {name: a, size: 1M}\n")
    build_archfile(ctx, arch, output_dir=tmp_path / "o")
    with pytest.raises(Conflict, match=r"images\.a: image 'a' already exists"):
        build_archfile(ctx, arch, output_dir=tmp_path / "o")
    ctx.store.home.manifest("a").unlink()
    with pytest.raises(Conflict, match=r"images\.a: .*/o/a\.qcow2 already exists"):
        build_archfile(ctx, arch, output_dir=tmp_path / "o")
    build_archfile(ctx, arch, output_dir=tmp_path / "o", replace=True)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give a RECIPE or -f ARCHITECTURE_FILE (exactly one)"),
        (["tiny", "-f", "a.yml"], "give a RECIPE or -f ARCHITECTURE_FILE (exactly one)"),
        (["-f", "a.yml", "--owner", "0"], "--owner applies to the files written with --output"),
        (["-f", "a.yml", "--name", "x"], "--name, --packages and --user-data go with a RECIPE"),
        (["tiny", "--output", "o"], "--output, --owner and --no-verify go with -f"),
        (["-f", "missing.yml"], "no such file: missing.yml"),
    ],
)
def test_cli_usage(ctx: Context, tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "a.yml").write_text("images:\n  a: {name: a, size: 1M}\n")
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        proc = corral(ctx, "image", "build", *args)
    finally:
        os.chdir(old)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[0].startswith(f"error: {words}"), proc.stderr
    assert not ctx.store.exists("a")
