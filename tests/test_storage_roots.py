"""storage_roots: which root a path lies under (text only), and opening a file under a root
without following links, so that what is read later is the file that was checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import InvalidInput, NotFound
from corral.storage_roots import open_under, under_root

ROOTS = (Path("/srv/pools"), Path("/mnt/nfs"))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/srv/pools", (Path("/srv/pools"), ())),
        ("/srv/pools/a/b.qcow2", (Path("/srv/pools"), ("a", "b.qcow2"))),
        ("/srv/pools/./a//b", (Path("/srv/pools"), ("a", "b"))),
        ("/mnt/nfs/x", (Path("/mnt/nfs"), ("x",))),
    ],
)
def test_under_root(text: str, want: tuple[Path, tuple[str, ...]]) -> None:
    assert under_root(ROOTS, text, "path") == want


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("/", "not under a storage root (allowed: /srv/pools, /mnt/nfs)"),
        ("/etc/shadow", "not under a storage root"),
        ("/srv/pools-sibling/x", "not under a storage root"),
        ("/srv", "not under a storage root"),
        ("/srv/pools/../../etc/shadow", "must not contain '..'"),
        ("srv/pools/x", "must be an absolute path"),
        ("/srv/pools/x\n", "not a usable path"),
        ("/srv/pools/x\0", "not a usable path"),
        ("", "not a usable path"),
    ],
)
def test_under_root_refuses(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        under_root(ROOTS, text, "path")
    assert words in caught.value.message


def test_no_roots_allow_nothing() -> None:
    with pytest.raises(InvalidInput, match="allowed: none are configured"):
        under_root((), "/srv/pools/x", "path")


def test_open_under_refuses_links_fifos_and_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "fifo").mkdir()
    os.mkfifo(root / "fifo" / "f")
    (root / "inner").symlink_to(root / "fifo")
    for text, error, words in [
        (str(root), InvalidInput, "is a storage root, not a file"),
        (f"{root}/fifo/f", InvalidInput, "not a regular file"),  # and the open does not hang
        (f"{root}/inner/f", InvalidInput, "leads out of"),  # any link, even one staying inside
        (f"{root}/missing", NotFound, "no such file"),
        (f"{root}/fifo", InvalidInput, "not a regular file"),
    ]:
        with pytest.raises(error, match=words):
            open_under((root,), text, "base_disk")
    with pytest.raises(NotFound, match="does not exist on this host"):
        open_under((tmp_path / "absent",), f"{tmp_path}/absent/x", "base_disk")


def test_what_is_imported_is_the_file_that_was_opened(ctx: Context, tmp_path: Path) -> None:
    """A link swapped in after the check is not what the store imports."""
    root = tmp_path / "root"
    root.mkdir()
    checked = root / "disk.img"
    checked.write_bytes(b"checked " * 4096)
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret! " * 4096)
    fd = open_under((root,), str(checked), "base_disk")
    try:
        checked.rename(root / "moved-away")
        checked.symlink_to(secret)  # the name now leads out
        manifest = ctx.store.import_image(Path(f"/proc/self/fd/{fd}"), "imported", label="x")
    finally:
        os.close(fd)
    assert ctx.store.blob(manifest.digest).read_bytes() == b"checked " * 4096
