"""The image management commands through the CLI: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from corral.context import Context
from helpers import corral


@pytest.fixture
def img(ctx: Context, tmp_path: Path) -> Context:
    disk = tmp_path / "a.qcow2"
    ctx.qemu_img.create(disk, 64 << 20)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 4M", str(disk)], check=True,
                   capture_output=True)  # fmt: skip
    ctx.store.import_image(disk, "a")
    return ctx


def ok(ctx: Context, *args: str) -> str:
    proc = corral(ctx, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def refused(ctx: Context, words: str, *args: str) -> None:
    proc = corral(ctx, *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {words}") or words in proc.stderr.splitlines()[0]
    assert "Traceback" not in proc.stderr


def test_tag_resize_convert_export(img: Context, tmp_path: Path) -> None:
    ok(img, "image", "tag", "a", "b")
    ok(img, "image", "resize", "b", "1G")
    b = json.loads(ok(img, "image", "inspect", "b", "--json"))
    assert b["virtual_size"] == 1 << 30 and b["parent"] == img.store.get("a").digest
    ok(img, "image", "convert", "b", "--format", "raw", "--as", "b-raw")
    assert json.loads(ok(img, "image", "inspect", "b-raw", "--json"))["format"] == "raw"
    out = ok(img, "image", "export", "b", str(tmp_path / "b.qcow2"), "--compress")
    assert "wrote" in out and (tmp_path / "b.qcow2").is_file()
    refused(img, "image 'a' has dependants: b", "image", "rm", "a")
    refused(img, "exists", "image", "export", "b", str(tmp_path / "b.qcow2"))
    refused(img, "images are never shrunk", "image", "resize", "b", "64M")
    refused(img, "unsupported format 'vmdk'", "image", "convert", "b", "--format", "vmdk")
    refused(img, "no image named 'zz'", "image", "tag", "zz", "yy")


def test_prune_from_the_cli(img: Context) -> None:
    refused(img, "say what to prune", "image", "prune")
    out = ok(img, "image", "prune", "--keep-bytes", "0", "--dry-run", "--json")
    assert [p["name"] for p in json.loads(out)] == ["a"]
    assert img.store.exists("a")
    ok(img, "image", "prune", "--older-than", "0s")
    assert not img.store.exists("a")
    assert list(img.home.blobs.iterdir()) == []
