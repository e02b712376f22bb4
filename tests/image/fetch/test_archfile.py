"""gen-vm-image architecture files: both formats, and errors named by their place in the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.image.archfile.parse import parse_archfile
from corral.image.fetch.checksums import Checksum

H256 = hashlib.sha256(b"x").hexdigest()
H512 = hashlib.sha512(b"x").hexdigest()
FILE = Path("/srv/arch/architecture.yml")

OLD = f"""\
owner: the-owner-name
images:
  rocky:
    name: rocky
    version: 9.10
    get_url: https://download.rockylinux.org/pub/rocky/9/images/x86_64/Rocky-9-GenericCloud.latest.x86_64.qcow2
    checksum:
      type: sha256
      value: {H256}
    size: 20G
"""

NEW = f"""\
owner: "1000:1000"
images:
  rocky:
    name: rocky
    version: "9.4"
    format: qcow2
    size: 120G
    input:
      url: https://example.org/Rocky-9-GenericCloud-Base.latest.x86_64.qcow2
      format: qcow2
      checksum:
        type: SHA512
        value: {H512}
  local:
    name: local-disk
    size: 1T
    format: raw
    user: debian
    input:
      path: disks/base.qcow2
  bare:
    name: scratch
    version: 1
    size: 512M
  short:
    name: short
    size: 10G
    input: ./relative.img
"""


def test_older_format() -> None:
    arch = parse_archfile(OLD, path=FILE)
    assert arch.owner == "the-owner-name"
    (image,) = arch.images
    assert (image.key, image.name, image.size, image.format) == ("rocky", "rocky-9.10", 20 << 30,
                                                                  "qcow2")  # fmt: skip
    assert image.input is not None
    assert image.input.url and image.input.url.endswith("/Rocky-9-GenericCloud.latest.x86_64.qcow2")
    assert image.input.checksum == Checksum("sha256", H256)
    assert image.input.where == "images.rocky.get_url"
    assert image.filename == "rocky-9.10.qcow2"


def test_current_format() -> None:
    arch = parse_archfile(NEW, path=FILE)
    rocky, local, bare, short = arch.images
    assert arch.owner == "1000:1000"
    assert rocky.input and rocky.input.checksum == Checksum("sha512", H512)
    assert rocky.input.format == "qcow2" and rocky.name == "rocky-9.4"
    assert local.input and local.input.path == Path("disks/base.qcow2") and local.input.url is None
    assert (local.name, local.format, local.size, local.user) == ("local-disk", "raw", 1 << 40,
                                                                  "debian")  # fmt: skip
    assert local.filename == "local-disk.raw"
    assert bare.input is None and bare.name == "scratch-1"
    assert short.input and short.input.path == Path("relative.img")


def test_a_url_without_checksum_is_allowed_only_when_not_verifying() -> None:
    text = "images:\n  a:\n    name: a\n    size: 1G\n    input:\n      url: http://h/a.img\n"
    with pytest.raises(InvalidInput, match=r"images\.a\.input\.checksum: missing"):
        parse_archfile(text, path=FILE)
    (image,) = parse_archfile(text, path=FILE, require_checksum=False).images
    assert image.input and image.input.checksum is None


def _image(body: str) -> str:
    return "owner: me\nimages:\n  rocky:\n" + "".join(f"    {ln}\n" for ln in body.splitlines())


GOOD_INPUT = f"input:\n  url: http://h/r.qcow2\n  checksum:\n    type: sha256\n    value: {H256}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_image(f"name: r\nsize: 1G\nget_url: http://h/r.img\nchecksum:\n  type: sha999\n"
                f"  value: {H256}"),
         "images.rocky.checksum.type: unknown algorithm 'sha999'"),
        (_image("name: r\nsize: 1G\ninput:\n  url: http://h/r\n  checksum:\n    type: sha256\n"
                "    value: abc"),
         "images.rocky.input.checksum.value: invalid sha256 value: 3 hex digits"),
        (_image(f"name: r\nsize: 20X\n{GOOD_INPUT}"), "images.rocky.size: invalid size '20X'"),
        (_image(f"size: 1G\n{GOOD_INPUT}"), "images.rocky.name: missing"),
        (_image(f"name: r/x\nsize: 1G\n{GOOD_INPUT}"), "images.rocky.name: invalid image name"),
        (_image("name: r\nsize: 1G\ninput:\n  format: qcow2"),
         "images.rocky.input: needs exactly one of url and path"),
        (_image("name: r\nsize: 1G\nget_url: ftp://h/r.img\nchecksum: {type: md5, value: "
                f"{hashlib.md5(b'x').hexdigest()}}}"),
         "images.rocky.get_url: not an http(s) or file URL: 'ftp://h/r.img'"),
        (_image("name: r\nsize: 1G\ninput:\n  path: r.vmdk\n  format: vmdk"),
         "images.rocky.input.format: unsupported format 'vmdk'"),
        (_image("name: r\nsize: 1G\nformat: vdi"), "images.rocky.format: unsupported format"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  b: ../disks/base.qcow2"),
         "images.rocky.extra_kwargs.b: '../disks/base.qcow2' is not an image name: b names an "
         "image of this file or of the store, never a host path"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  b: /var/lib/base.qcow2\n  F: qcow2"),
         "images.rocky.extra_kwargs.b: '/var/lib/base.qcow2' is not an image name"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  b: base\n  F: qcow2\n"
                "  o: encrypt.format=luks,encrypt.key=sec0"),
         "images.rocky.extra_kwargs.o: option 'encrypt.format' is not supported (allowed: "
         "cluster_size, compression_type, lazy_refcounts, preallocation)"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  o: cluster_size=64K,backing_file=/etc/x"),
         "images.rocky.extra_kwargs.o: option 'backing_file' is not supported"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  o: cluster_size=3000"),
         "images.rocky.extra_kwargs.o: option 'cluster_size': '3000' is not a power of two"),
        (_image("name: r\nsize: 1G\nformat: raw\nextra_kwargs:\n  o: lazy_refcounts=on"),
         "images.rocky.extra_kwargs.o: option 'lazy_refcounts' does not apply to a raw image"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  c: 1"),
         "images.rocky.extra_kwargs.c: not supported (corral translates b, F and o)"),
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  F: qcow2"),
         "images.rocky.extra_kwargs.F: names the format of b; give b too"),
        (_image("name: r\nsize: 1G\nformat: raw\nextra_kwargs: {b: base}"),
         "images.rocky.extra_kwargs.b: a layer on 'base' is a qcow2 image, not raw"),
        (_image(f"name: r\nsize: 1G\n{GOOD_INPUT}\nextra_kwargs: {{b: base}}"),
         "images.rocky.extra_kwargs.b: a layer starts blank on its base image"),
        (_image("name: r\nsize: 1G\nextra_kwargs: {b: rocky}"),
         "images.rocky.extra_kwargs.b: an image cannot be layered on itself"),
        ("images:\n  top: {name: top, size: 1G, extra_kwargs: {b: low}}\n"
         "  low: {name: low, size: 1G}\n",
         "images.top.extra_kwargs.b: images.low is built after this image; list it first"),
        ("images:\n  low: {name: low, version: 1, size: 1G, format: raw}\n"
         "  top: {name: top, size: 1G, extra_kwargs: {b: low, F: qcow2}}\n",
         "images.top.extra_kwargs.F: images.low is raw, not qcow2"),
        ("images:\n  low: {name: low, version: 1, size: 2G}\n"
         "  top: {name: top, size: 1G, extra_kwargs: {b: low-1, F: raw}}\n",
         "images.top.extra_kwargs.F: images.low is qcow2, not raw"),
        ("images:\n  low: {name: low, size: 2G}\n  top: {name: top, size: 1G, "
         "extra_kwargs: {b: low}}\n",
         "images.top.size: 1G is smaller than its base images.low (2G); corral never shrinks"),
        (_image("name: r\nsize: 1G\ninput:\n  path: 'json:{\"driver\":\"raw\",\"file\":"
                "{\"driver\":\"file\",\"filename\":\"/root/secret\"}}'"),
         "images.rocky.input.path: 'json:{\"driver\":\"raw\",\"file\":{\"driver\":\"file\","
         "\"filename\":\"/root/secret\"}}' is not a plain file path (json: would name a qemu "
         "protocol); corral reads only local files"),
        (_image("name: r\nsize: 1G\ninput: nbd://10.0.0.1/disk"),
         "images.rocky.input: 'nbd://10.0.0.1/disk' is not a plain file path (nbd: would"),
        (_image("name: r\nsize: 1G\ninput: {url: 'file://otherhost/disk.img', checksum: "
                f"{{type: sha256, value: {H256}}}}}"),
         "images.rocky.input.url: file://otherhost/disk.img: file:// URLs must name a local"),
        (_image("name: r\nsize: 1G\ninput: {path: \"a\\0b\"}"),
         "images.rocky.input.path: 'a\\x00b' is not a usable path"),
        (_image(f"name: r\nsize: 1G\ninput: {{url: 'FILE:///a%00b', checksum: {{type: sha256, "
                f"value: {H256}}}}}"),
         "images.rocky.input.url: '/a\\x00b' is not a usable path"),
        (_image("name: r\nsize: 1G\noutput: {path: ../../etc/cron.d/x}"),
         "images.rocky.output.path: output path '../../etc/cron.d/x' must not contain '..'"),
        (_image("name: r\nsize: 1G\noutput: {path: /etc/cron.d/x}"),
         "images.rocky.output.path: output path '/etc/cron.d/x' must be relative, not absolute"),
        ("images:\n  a: {name: a, size: 1G, output: {path: x/disk.qcow2}}\n"
         "  b: {name: b, size: 1G, output: {path: ./x//disk.qcow2}}\n",
         "images.b.output.path: 'x/disk.qcow2' is also written by images.a"),
        (_image("name: r\nsize: 1G\ncolour: red"), "images.rocky.colour: unknown key"),
        (_image(f"name: r\nsize: 1G\n{GOOD_INPUT}\nchecksum: {{type: sha256, value: {H256}}}"),
         "images.rocky.checksum: belongs under input"),
        (_image("name: r\nsize: 1G\nget_url: http://h/r.img"),
         "images.rocky.checksum: missing: a download must be verified"),
        (_image("name: r\nsize: 1G\ninput:\n  url: http://h/r.img\n  checksum: sha256"),
         "images.rocky.input.checksum: expected a mapping with type and value"),
        ("owner: me\nimages: []\n", "images: expected a mapping of image keys"),
        ("owner: me\n", "images: expected a mapping of image keys"),
        ("- a\n- b\n", "(top): expected a mapping with 'images'"),
        ("images: {a: {name: x, size: 1G}, b: {name: x, size: 2G}}\nsizes: 1\n",
         "sizes: unknown key"),
    ],
)  # fmt: skip
def test_problems_are_named_by_their_place(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_archfile(text, path=FILE)
    assert info.value.message == f"{FILE}: {message}" or info.value.message.startswith(
        f"{FILE}: {message}"
    ), info.value.message
    assert info.value.hint == "nothing was built; fix the file and run again"


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "images:\n"
        "  a: {name: a, size: 1G, get_url: 'http://h/a', checksum: {type: sha999, value: '00'}}\n"
        "  b: {name: a, size: huge}\n"
        "  c: {name: c, size: 1G}\n"
    )
    with pytest.raises(InvalidInput) as info:
        parse_archfile(text, path=FILE)
    assert info.value.message == f"{FILE}: images.a.checksum.type: unknown algorithm 'sha999'"
    assert info.value.details == ["images.b.size: invalid size 'huge': expected a number with "
                                  "K, M, G or T suffix"]  # fmt: skip


def test_duplicate_names_and_yaml_errors() -> None:
    with pytest.raises(InvalidInput, match=r"images\.b\.name: 'x' is also built by images\.a"):
        parse_archfile("images: {a: {name: x, size: 1G}, b: {name: x, size: 2G}}\n", path=FILE)
    with pytest.raises(InvalidInput, match=r"invalid YAML \(line 3\): mapping values are not"):
        parse_archfile("images:\n  a:\n    name: x: y\n", path=FILE)


def test_paths_extra_kwargs_and_file_urls() -> None:
    text = f"""\
images:
  base: {{name: base, version: 1, size: 1G}}
  layered:
    name: layered
    size: 2G
    extra_kwargs:
      b: base
      F: qcow2
      o: "cluster_size=64K, lazy_refcounts=on,compression_type=zstd"
    output: {{path: ./tests/tmp/layered.qcow2}}
  stored:
    name: stored
    size: 2G
    extra_kwargs: {{b: base-image}}
  local:
    name: local
    size: 1G
    format: raw
    input: {{url: "file:///srv/disks/a%20b.raw", checksum: {{type: sha256, value: {H256}}}}}
    extra_kwargs: {{o: preallocation=falloc}}
"""
    base, layered, stored, local = parse_archfile(text, path=FILE, require_checksum=False).images
    assert base.base is None and base.options == ()
    assert layered.base is not None and layered.base.name == "base-1"
    assert (layered.base.key, layered.base.format) == ("base", "qcow2")
    assert layered.options == (("cluster_size", "65536"), ("compression_type", "zstd"),
                               ("lazy_refcounts", "on"))  # fmt: skip
    assert layered.filename == "tests/tmp/layered.qcow2"
    assert stored.base is not None and (stored.base.name, stored.base.key) == ("base-image", None)
    assert local.input is not None and local.input.url is None
    assert local.input.path == Path("/srv/disks/a b.raw")
    assert local.input.field == "images.local.input.url"
    assert local.options == (("preallocation", "falloc"),)
