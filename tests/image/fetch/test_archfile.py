"""gen-vm-image architecture files: both formats, and errors named by their place in the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.image.fetch.archfile import parse_archfile
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
        (_image("name: r\nsize: 1G\nextra_kwargs:\n  b: base.qcow2"),
         "images.rocky.extra_kwargs: not supported"),
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
