"""gen-vm-image's advanced architecture file, `extra_kwargs` included, built by corral.

The file below has the shape of gen-vm-image's tests/res/advanced_architecture.yml (sizes made
small; `o` names options corral allows instead of its encryption options, refused below).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import InvalidInput
from corral.image.archfile.images import build_archfile
from helpers import corral
from image.fetch.support import assert_unchanged, make_qcow2, sha256, store_state

ADVANCED = """\
owner: the-owner-name
images:
  image-1:
    name: test-image-1
    version: 9.4
    format: qcow2
    size: 10M
  image-2:
    name: test-image-2
    version: 9.4
    format: raw
    size: 10M
  image-3:
    name: test-image-3
    version: 8.4
    format: qcow2
    size: 30M
  input_path_image:
    name: input-path-image
    version: 12
    format: qcow2
    size: 20M
    input:
     path: tests/res/test.qcow2
     format: qcow2
  convert_input_image_format:
    name: convert_input_image_format
    version: 12
    format: raw
    size: 20M
    input:
      path: tests/res/test.qcow2
      format: qcow2
  non_version_image_test:
    name: non-version-image
    format: raw
    size: 10M
  image_with_output_path:
    name: image-with-output-path
    version: 9.4
    format: qcow2
    size: 10M
    output:
      path: tests/tmp/image-with-output-path.qcow2
      format: qcow2
  image_with_overlay:
    name: image-with-overlay
    version: 9.4
    format: qcow2
    size: 25M
    extra_kwargs:
      # This needs to be created beforehand before it
      # can be used as a base image for the image-with-overlay
      b: base-image
      F: qcow2
      o: cluster_size=65536,lazy_refcounts=on
    output:
      path: tests/tmp/image-with-overlay.qcow2
      format: qcow2
  overlay_on_this_file:
    name: overlay-on-input
    size: 24M
    extra_kwargs: {b: input_path_image, F: qcow2}
"""


def info(path: Path, *extra: str) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", *extra, str(path)], check=True,
                         capture_output=True).stdout  # fmt: skip
    return json.loads(out)


def same_content(a: Path, b: Path) -> bool:
    proc = subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """gen-vm-image's layout: run from the project root, the file and its disk in tests/res."""
    root = tmp_path / "gen-vm-image"
    (root / "tests" / "res").mkdir(parents=True)
    make_qcow2(root / "tests" / "res" / "test.qcow2")
    (root / "tests" / "res" / "advanced_architecture.yml").write_text(ADVANCED)
    monkeypatch.chdir(root)
    return root


def test_the_advanced_file_builds(ctx: Context, project: Path, tmp_path: Path) -> None:
    base_disk = make_qcow2(tmp_path / "base-image.qcow2", size="20M", seed=3)
    base = ctx.store.import_image(base_disk, "base-image")  # "created beforehand"
    out = project / "generated"
    proc = corral(ctx, "image", "build", "-f", "tests/res/advanced_architecture.yml",
                  "--output", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "convert_input_image_format-12.raw", "input-path-image-12.qcow2", "non-version-image.raw",
        "overlay-on-input.qcow2", "test-image-1-9.4.qcow2", "test-image-2-9.4.raw",
        "test-image-3-8.4.qcow2", "tests/tmp/image-with-output-path.qcow2",
        "tests/tmp/image-with-overlay.qcow2",
    ]  # fmt: skip

    # In the store, the overlay is a qcow2 layer on base-image's blob, with the options asked.
    layered = ctx.store.get("image-with-overlay-9.4")
    assert layered.parent == base.digest and layered.virtual_size == 25 << 20
    blob = ctx.store.blob(layered.digest)
    data = info(blob, "-f", "qcow2")
    assert data["backing-filename"] == base.digest
    assert data["cluster-size"] == 65536 and data["format-specific"]["data"]["lazy-refcounts"]

    # In --output it stands alone: no backing file, the base's content, the same options.
    copy = out / "tests" / "tmp" / "image-with-overlay.qcow2"
    data = info(copy, "-f", "qcow2")
    assert "backing-filename" not in data and data["virtual-size"] == 25 << 20
    assert data["cluster-size"] == 65536 and data["format-specific"]["data"]["lazy-refcounts"]
    assert same_content(copy, base_disk)

    # `b` naming an image of the same file: a layer on the blob just built.
    below = ctx.store.get("input-path-image-12")
    layer = ctx.store.get("overlay-on-input")
    assert layer.parent == below.digest and layer.virtual_size == 24 << 20
    assert "backing-filename" not in info(out / "overlay-on-input.qcow2")
    assert same_content(out / "overlay-on-input.qcow2", project / "tests/res/test.qcow2")

    # The rest as before: the input converted, subdirectories of --output kept.
    converted = ctx.store.get("convert_input_image_format-12")
    assert (converted.format, converted.virtual_size) == ("raw", 20 << 20)
    assert same_content(out / "input-path-image-12.qcow2", project / "tests/res/test.qcow2")
    plain = out / "tests" / "tmp" / "image-with-output-path.qcow2"
    assert ctx.store.get("image-with-output-path-9.4").digest == sha256(plain.read_bytes())
    assert list(ctx.home.image_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("{b: /etc/shadow, F: raw}",
         "images.x.extra_kwargs.b: '/etc/shadow' is not an image name: b names an image of this "
         "file or of the store, never a host path"),
        ("{b: ../tests/res/test.qcow2}",
         "images.x.extra_kwargs.b: '../tests/res/test.qcow2' is not an image name"),
        ("{b: tests/res/test.qcow2}",
         "images.x.extra_kwargs.b: 'tests/res/test.qcow2' is not an image name"),
        ("{b: no-such-image, F: qcow2}",
         "images.x.extra_kwargs.b: no image 'no-such-image' in this file or in the store"),
        ("{b: base-image, F: raw}",
         "images.x.extra_kwargs.F: image 'base-image' is qcow2, not raw"),
        ("{b: base-image, F: qcow2, o: 'encrypt.format=luks,encrypt.key=sec0'}",
         "images.x.extra_kwargs.o: option 'encrypt.format' is not supported (allowed: "
         "cluster_size, compression_type, lazy_refcounts, preallocation)"),
        ("{b: base-image, o: 'cluster_size=65536,backing_file=/etc/shadow'}",
         "images.x.extra_kwargs.o: option 'backing_file' is not supported"),
        ("{b: base-image, o: 'data_file=/etc/shadow,data_file_raw=on'}",
         "images.x.extra_kwargs.o: option 'data_file' is not supported"),
    ],
)  # fmt: skip
def test_extra_kwargs_that_reach_beyond_images_are_refused(
    ctx: Context, project: Path, tmp_path: Path, extra: str, problem: str
) -> None:
    ctx.store.import_image(make_qcow2(tmp_path / "base.qcow2"), "base-image")
    before = store_state(ctx)
    arch = project / "arch.yml"
    arch.write_text(f"images:\n  x:\n    name: x\n    size: 1G\n    extra_kwargs: {extra}\n")
    proc = corral(ctx, "image", "build", "-f", "arch.yml", "--output", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    error = proc.stderr.splitlines()[0]
    assert error.startswith(f"error: arch.yml: {problem}"), error
    assert_unchanged(ctx, before)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_base_smaller_than_the_layer_is_required(
    ctx: Context, project: Path, tmp_path: Path
) -> None:
    ctx.store.import_image(make_qcow2(tmp_path / "base.qcow2", size="64M"), "base-image")
    arch = project / "arch.yml"
    arch.write_text("images:\n  x: {name: x, size: 32M, extra_kwargs: {b: base-image}}\n")
    smaller = r"images\.x\.size: 32M is smaller than its base 'base-image' \(64M\); corral never"
    with pytest.raises(InvalidInput, match=smaller):
        build_archfile(ctx, arch)
    assert not ctx.store.exists("x")
