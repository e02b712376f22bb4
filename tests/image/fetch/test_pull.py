"""`corral image pull` end to end against a local HTTP server and real qemu-img."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import subprocess
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import Conflict, InvalidInput
from corral.image.fetch.download import DownloadFailed, Options
from corral.image.fetch.pull import default_name, pull
from helpers import corral
from image.fetch.support import Server, assert_unchanged, sha256, store_state

FAST = Options(timeout=5, retries=2, retry_delay=0.01)
COMPRESS = {"xz": lzma.compress, "gz": gzip.compress, "bz2": bz2.compress}


def test_pull_url_with_checksum(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("images/disk.qcow2", qcow2_bytes)
    pulled = pull(ctx, url, checksum=f"sha256:{sha256(qcow2_bytes)}", options=FAST)
    m = pulled.manifest
    assert (m.name, m.format, m.virtual_size) == ("disk", "qcow2", 8 << 20)
    assert m.digest == sha256(qcow2_bytes)
    assert ctx.store.blob(m.digest).read_bytes() == qcow2_bytes
    assert m.source == f"pull:{url}"
    assert (pulled.cached, pulled.verified) == (False, True)
    assert list(ctx.home.image_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("sums", "line"),
    [
        ("SHA256SUMS", "{sha256} *disk.qcow2"),
        ("SHA256SUMS", "{sha256}  disk.qcow2"),
        ("SHA512SUMS", "{sha512}  disk.qcow2"),
        ("CHECKSUM", "SHA256 (disk.qcow2) = {sha256}"),
        ("CHECKSUM", "SHA3_256 (disk.qcow2) = {sha3}"),
    ],
)
def test_pull_with_checksum_file(
    ctx: Context, server: Server, qcow2_bytes: bytes, sums: str, line: str
) -> None:
    url = server.add("d/disk.qcow2", qcow2_bytes)
    digests = {
        "sha256": sha256(qcow2_bytes),
        "sha512": hashlib.sha512(qcow2_bytes).hexdigest(),
        "sha3": hashlib.sha3_256(qcow2_bytes).hexdigest(),
    }
    other = f"{'0' * 64}  other.img\n"
    server.add(f"d/{sums}", (other + line.format(**digests) + "\n").encode())
    pulled = pull(ctx, url, checksum_url=server.url(f"d/{sums}"), options=FAST)
    assert pulled.manifest.digest == digests["sha256"]
    assert pulled.source.checksum_origin == server.url(f"d/{sums}")


@pytest.mark.parametrize("kind", ["xz", "gz", "bz2"])
def test_compressed_image_is_decompressed_on_the_way_in(
    ctx: Context, server: Server, qcow2_bytes: bytes, kind: str
) -> None:
    packed = COMPRESS[kind](qcow2_bytes)
    url = server.add(f"CentOS-7-x86_64-GenericCloud.qcow2.{kind}", packed)
    server.add("sha256sum.txt", f"{sha256(packed)}  {url.rsplit('/', 1)[1]}\n".encode())
    pulled = pull(ctx, url, checksum_url=server.url("sha256sum.txt"), options=FAST)
    m = pulled.manifest
    assert m.name == "CentOS-7-x86_64-GenericCloud"
    assert pulled.source.checksum.hex == sha256(packed)  # type: ignore[union-attr]
    assert m.digest == sha256(qcow2_bytes)  # the store holds the decompressed bytes
    assert ctx.store.blob(m.digest).read_bytes() == qcow2_bytes
    assert m.format == "qcow2"


def test_second_pull_is_instant(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("d/disk.qcow2", qcow2_bytes)
    server.add("d/SHA256SUMS", f"{sha256(qcow2_bytes)} *disk.qcow2\n".encode())
    sums = server.url("d/SHA256SUMS")
    first = pull(ctx, url, checksum_url=sums, options=FAST)
    again = pull(ctx, url, checksum_url=sums, options=FAST)  # same name: nothing to do
    other = pull(ctx, url, checksum_url=sums, name="copy", user="debian", options=FAST)
    assert len(server.requests("d/disk.qcow2")) == 1  # downloaded once
    assert (again.cached, other.cached) == (True, True)
    assert first.manifest.digest == again.manifest.digest == other.manifest.digest
    assert ctx.store.get("copy").default_user == "debian"
    assert len(list(ctx.home.blobs.iterdir())) == 1


def test_new_checksum_means_a_new_download(
    ctx: Context, server: Server, qcow2_bytes: bytes, other_qcow2_bytes: bytes
) -> None:
    url = server.add("d/disk.qcow2", qcow2_bytes)
    pull(ctx, url, checksum=f"sha256:{sha256(qcow2_bytes)}", options=FAST)
    server.add("d/disk.qcow2", other_qcow2_bytes)  # a new image is published
    with pytest.raises(Conflict, match="image 'disk' already exists"):
        pull(ctx, url, checksum=f"sha256:{sha256(other_qcow2_bytes)}", options=FAST)
    m = pull(ctx, url, checksum=f"sha256:{sha256(other_qcow2_bytes)}", replace=True,
             options=FAST).manifest  # fmt: skip
    assert m.digest == sha256(other_qcow2_bytes)
    assert len(server.requests("d/disk.qcow2")) == 2


def test_no_checksum_is_refused_before_downloading(
    ctx: Context, server: Server, qcow2_bytes: bytes
) -> None:
    url = server.add("disk.qcow2", qcow2_bytes)
    before = store_state(ctx)
    with pytest.raises(InvalidInput, match=r"refusing to pull .* without a checksum") as info:
        pull(ctx, url, options=FAST)
    assert "--no-verify" in (info.value.hint or "")
    assert server.requests("disk.qcow2") == []
    assert_unchanged(ctx, before)


def test_no_verify_pulls_with_a_warning(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("disk.qcow2", qcow2_bytes)
    lines: list[str] = []
    pulled = pull(ctx, url, verify=False, options=FAST, log=lines.append)
    assert pulled.verified is False
    assert lines == [f"warning: {url} is not verified: no checksum (--no-verify)"]


def test_failed_downloads_leave_nothing(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("disk.qcow2", qcow2_bytes)
    server.route("disk.qcow2", drop_after=len(qcow2_bytes) // 2, ranges=False)
    ctx.store.ensure()
    before = store_state(ctx)
    with pytest.raises(DownloadFailed, match="3 attempts"):
        pull(ctx, url, checksum=f"sha256:{sha256(qcow2_bytes)}", options=FAST)
    assert_unchanged(ctx, before)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("jammy-server-cloudimg-amd64.img", "jammy-server-cloudimg-amd64"),
        ("CentOS-7-x86_64-GenericCloud.qcow2.xz", "CentOS-7-x86_64-GenericCloud"),
        ("debian-12-genericcloud-amd64.qcow2", "debian-12-genericcloud-amd64"),
        ("disk.raw.bz2", "disk"),
        ("ubuntu:jammy-daily", "ubuntu:jammy-daily"),
        ("my image (1).img", "my-image-1"),
        ("..hidden.qcow2", "hidden"),
        (".qcow2", "qcow2"),
        ("???", "image"),
    ],
)
def test_default_names(text: str, name: str) -> None:
    assert default_name(text) == name


# --- through the CLI: exit codes and one-line errors -------------------------------------------


def refused(ctx: Context, code: int, words: list[str], *args: str) -> str:
    """Run a pull that must fail: one error line (plus hint), the exit code, nothing stored."""
    ctx.store.ensure()
    before = store_state(ctx)
    proc = corral(ctx, "image", "pull", *args, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr
    assert lines and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), proc.stderr
    assert_unchanged(ctx, before)
    return lines[0]


def test_cli_wrong_checksum(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("disk.qcow2", qcow2_bytes)
    wrong = sha256(b"something else")
    line = refused(ctx, 2, ["checksum mismatch", url], url, "--checksum", f"sha256:{wrong}")
    assert f"expected sha256:{wrong}, got sha256:{sha256(qcow2_bytes)}" in line


def test_cli_errors_for_bad_urls(ctx: Context, server: Server, closed_url: str) -> None:
    refused(ctx, 2, ["HTTP 404 Not Found"], server.url("nope.qcow2"), "--no-verify")
    refused(ctx, 1, ["connection refused"], closed_url, "--no-verify")
    server.add("page.img", b"<html>" + b"x" * 5000)
    server.route("page.img", content_type="text/html")
    refused(ctx, 2, ["HTML page"], server.url("page.img"), "--no-verify")
    server.add("lying.img", b"\n<!DOCTYPE html><html>" + b"x" * 5000)
    refused(ctx, 2, ["lying.img is an HTML page"], server.url("lying.img"), "--no-verify")
    server.add("slow.img", b"x")
    server.route("slow.img", hang=True)
    refused(ctx, 1, ["no answer within 0.5s"], server.url("slow.img"), "--no-verify",
            "--timeout", "0.5")  # fmt: skip


def test_cli_download_that_keeps_failing(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("disk.qcow2", qcow2_bytes)
    server.route("disk.qcow2", drop_after=len(qcow2_bytes) // 2, ranges=False)
    line = refused(ctx, 1, ["cannot download", url, "(2 attempts)"], url, "--checksum",
                   f"sha256:{sha256(qcow2_bytes)}", "--retries", "1")  # fmt: skip
    assert ": the server closed the connection early after " in line
    assert len(server.requests("disk.qcow2")) == 2


def test_cli_bad_images(ctx: Context, server: Server, tmp_path: Path) -> None:
    def qemu_img(*args: str) -> None:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True)

    evil = tmp_path / "evil.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(evil), "1M")
    url = server.add("evil.qcow2", evil.read_bytes())
    refused(ctx, 2, ["backing file", "/etc/passwd"], url, "--checksum",
            f"sha256:{sha256(evil.read_bytes())}")  # fmt: skip

    vmdk = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(vmdk), "1M")
    url = server.add("disk.vmdk", vmdk.read_bytes())
    refused(ctx, 2, ["unsupported image format 'vmdk'"], url, "--no-verify")

    bad = tmp_path / "bad.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(bad), "16M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 0 64k", str(bad)], check=True,
                   capture_output=True)  # fmt: skip
    data = bytearray(bad.read_bytes())
    l1 = int.from_bytes(data[40:48], "big")
    data[l1 : l1 + 8] = (0x80000000_00000000 | (1 << 40)).to_bytes(8, "big")
    url = server.add("bad.qcow2", bytes(data))
    refused(ctx, 1, ["qemu-img check failed"], url, "--checksum", f"sha256:{sha256(data)}")


def test_cli_bad_options(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("d/disk.qcow2", qcow2_bytes)
    server.add("d/SHA256SUMS", f"{sha256(qcow2_bytes)}  other.qcow2\n".encode())
    sums = server.url("d/SHA256SUMS")
    refused(ctx, 2, ["--checksum or --checksum-url, not both"], url, "--checksum",
            f"sha256:{sha256(qcow2_bytes)}", "--checksum-url", sums)  # fmt: skip
    refused(ctx, 2, [f"{sums} has no checksum for disk.qcow2"], url, "--checksum-url", sums)
    refused(ctx, 2, ["unknown algorithm 'sha999'"], url, "--checksum", "sha999:00")
    refused(ctx, 2, ["unknown image alias 'nosuch:1'"], "nosuch:1")
    refused(ctx, 2, ["refusing to pull", "without a checksum"], url)
    refused(ctx, 2, ["invalid image name"], url, "--no-verify", "--name", "../x")


def test_cli_pull_resumes_and_caches(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("d/disk.qcow2", qcow2_bytes)
    server.add("d/SHA256SUMS", f"{sha256(qcow2_bytes)} *disk.qcow2\n".encode())
    server.route("d/disk.qcow2", drop_after=len(qcow2_bytes) // 2, drops=1)
    args = ("image", "pull", url, "--checksum-url", server.url("d/SHA256SUMS"))
    proc = corral(ctx, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"pulled disk: qcow2 8.0 MiB sha256:{sha256(qcow2_bytes)[:12]}"
    assert [r.range is not None for r in server.requests("d/disk.qcow2")] == [False, True]
    proc = corral(ctx, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("(already downloaded)")
    assert len(server.requests("d/disk.qcow2")) == 2
    proc = corral(ctx, "image", "pull", url, "--no-verify", "--name", "unverified")
    assert proc.returncode == 0
    assert proc.stderr.startswith(f"warning: {url} is not verified")


def test_cli_progress_bar_on_a_terminal(ctx: Context, server: Server) -> None:
    import pty
    import sys

    data = os.urandom(6 << 20)
    url = server.add("raw.img", data)
    server.route("raw.img", drop_after=4 << 20, drops=1)
    main, sub = pty.openpty()
    env = {**os.environ, "CORRAL_HOME": str(ctx.home.root), "CORRAL_CONFIG": "/nonexistent",
           "COLUMNS": "120", "TERM": "xterm"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "corral.cli.app", "image", "pull", url, "--checksum",
         f"sha256:{sha256(data)}"],
        stderr=sub, stdout=subprocess.PIPE, env=env, timeout=60, check=False,
    )  # fmt: skip
    os.close(sub)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert proc.returncode == 0, shown
    text = shown.decode(errors="replace")
    assert "raw.img" in text and "6.0/6.0 MiB" in text  # bytes done / total
    assert "/s" in text  # the rate


def test_cli_local_path_is_not_an_alias(ctx: Context, tmp_path: Path, qcow2_bytes: bytes) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(qcow2_bytes)
    line = refused(ctx, 2, ["is a local file, not a URL or a catalog alias"], str(disk))
    assert str(disk) in line
    proc = corral(
        ctx, "image", "pull", disk.as_uri(), "--checksum", f"sha256:{sha256(qcow2_bytes)}"
    )
    assert proc.returncode == 0, proc.stderr
    assert ctx.store.get("disk").source == f"pull:{disk.as_uri()}"


def test_cache_forgets_collected_blobs(ctx: Context, server: Server, qcow2_bytes: bytes) -> None:
    url = server.add("disk.qcow2", qcow2_bytes)
    spec = f"sha256:{sha256(qcow2_bytes)}"
    pull(ctx, url, checksum=spec, options=FAST)
    ctx.store.remove("disk")
    ctx.store.collect_garbage(keep=())
    again = pull(ctx, url, checksum=spec, options=FAST)
    assert again.cached is False
    assert len(server.requests("disk.qcow2")) == 2
    assert ctx.store.blob(again.manifest.digest).read_bytes() == qcow2_bytes
