"""Local inputs of architecture files: plain files, opened by corral, confined, formats read."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.image.archfile.local_inputs import (
    confinement_root,
    copy_input,
    open_input,
    protocol_prefix,
)
from corral.image.fetch.checksums import Checksum
from corral.image.formats import disk_format


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ('json:{"driver":"raw","file":{"filename":"/etc/shadow"}}', "json:"),
        ("nbd://10.0.0.1:10809/disk", "nbd:"),
        ("file:/etc/shadow", "file:"),
        ("disk:1.qcow2", "disk:"),
        ("disks/a:b.qcow2", None),
        ("/srv/x:y/disk.qcow2", None),
        ("disk.qcow2", None),
    ],
)
def test_protocol_prefix(text: str, prefix: str | None) -> None:
    assert protocol_prefix(text) == prefix


def _header(magic: bytes, at: int = 0) -> bytes:
    head = bytearray(512)
    head[at : at + len(magic)] = magic
    return bytes(head)


@pytest.mark.parametrize(
    ("head", "result"),
    [
        (_header(b"QFI\xfb\x00\x00\x00\x03"), "qcow2"),
        (_header(b"QFI\xfb\x00\x00\x00\x02"), "qcow2"),
        (_header(b"QFI\xfb\x00\x00\x00\x01"), "unsupported image format 'qcow' (version 1)"),
        (b'# Disk DescriptorFile\nRW 8 FLAT "/etc/shadow" 0\n', "unsupported image format 'vmdk'"),
        (_header(b"KDMV"), "unsupported image format 'vmdk'"),
        (_header(b"\x7f\x10\xda\xbe", 0x40), "unsupported image format 'vdi'"),
        (_header(b"vhdxfile"), "unsupported image format 'vhdx'"),
        (_header(b"LUKS\xba\xbe"), "unsupported image format 'luks'"),
        (bytes(512), "raw"),
        (b"\xebc\x90" + bytes(509), "raw"),  # a boot sector
        (b"", "raw"),
    ],
)  # fmt: skip
def test_disk_format_comes_from_the_header(head: bytes, result: str) -> None:
    if result in ("qcow2", "raw"):
        assert disk_format(head, "d.img") == result
    else:
        with pytest.raises(InvalidInput, match=re.escape(f"d.img: {result}")):
            disk_format(head, "d.img")


def test_confinement_root(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    assert confinement_root(tmp_path / "link" / "a.yml") == tmp_path.resolve() / "real"
    assert confinement_root(Path("/a.yml")) is None


def test_only_a_checksum_lets_an_input_come_from_elsewhere(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "disks").mkdir(parents=True)
    (project / "disks" / "a.raw").write_bytes(b"a" * 512)
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    (project / "link.raw").symlink_to(secret)
    (project / "inside.raw").symlink_to("disks/a.raw")
    root = project.resolve()
    for path in (project / "disks" / "a.raw", project / "inside.raw"):
        os.close(open_input(path, root=root, checked=False, what="k"))
    for path in (secret, project / "link.raw", project / "disks" / ".." / ".." / "secret"):
        with pytest.raises(InvalidInput, match=f"k: {path} has no checksum and lies outside"):
            open_input(path, root=root, checked=False, what="k")
        os.close(open_input(path, root=root, checked=True, what="k"))
    with pytest.raises(InvalidInput, match="the architecture file is in /"):
        open_input(secret, root=None, checked=False, what="k")
    os.mkfifo(project / "fifo")
    for checked in (False, True):
        with pytest.raises(InvalidInput, match="fifo is not a regular file"):
            open_input(project / "fifo", root=root, checked=checked, what="k")
    with pytest.raises(InvalidInput, match="is not a regular file"):
        open_input(Path("/dev/zero"), root=root, checked=True, what="k")


def test_a_json_looking_name_is_only_ever_a_plain_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the file's validation: the nested directories are opened by corral as what they
    are, and the bytes copied (and hashed) are the placeholder's, never the secret's."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOP-SECRET" * 100)
    name = f'json:{{"driver":"raw","file":{{"driver":"file","filename":"{secret}"}}}}'
    placeholder = tmp_path / name
    placeholder.parent.mkdir(parents=True)
    placeholder.write_bytes(b"placeholder" * 100)
    monkeypatch.chdir(tmp_path)
    fd = open_input(Path(name), root=tmp_path.resolve(), checked=False, what="k")
    try:
        expected = Checksum("sha256", hashlib.sha256(placeholder.read_bytes()).hexdigest())
        fmt = copy_input(fd, tmp_path / "copy", expected, name)
    finally:
        os.close(fd)
    assert fmt == "raw"
    assert (tmp_path / "copy").read_bytes() == placeholder.read_bytes()


def test_the_checksum_is_of_the_bytes_copied(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"x" * 4096)
    wrong = Checksum("sha256", hashlib.sha256(b"other").hexdigest())
    fd = open_input(disk, root=tmp_path.resolve(), checked=True, what="k")
    try:
        with pytest.raises(InvalidInput, match=f"checksum mismatch for {disk}: expected sha256:"):
            copy_input(fd, tmp_path / "copy", wrong, str(disk))
    finally:
        os.close(fd)
