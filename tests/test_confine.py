"""Paths from untrusted input stay under their root, whatever links lie on the way."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from corral.confine import create_exclusive, open_dir, open_file, relative_parts
from corral.errors import InvalidInput
from corral.fsutil import write_atomic


@pytest.mark.parametrize(
    "text", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "a\0b", "a\nb", ".", "./"]
)
def test_relative_parts_refuses_what_leaves_or_names_nothing(text: str) -> None:
    with pytest.raises(InvalidInput):
        relative_parts(text, "output.path")


def test_relative_parts_keeps_subdirectories() -> None:
    assert relative_parts("tests/tmp/./image.qcow2") == ("tests", "tmp", "image.qcow2")


def test_open_dir_creates_missing_directories_inside(tmp_path: Path) -> None:
    with open_dir(tmp_path, ("a", "b"), create=True) as fd:
        assert Path(f"/proc/self/fd/{fd}").readlink() == tmp_path / "a" / "b"


def test_open_dir_refuses_a_symlinked_directory_on_the_way(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    with (
        pytest.raises(InvalidInput, match="leads out of"),
        open_dir(root, ("sub", "x"), create=True),
    ):
        pass
    assert list(outside.iterdir()) == []


def test_open_file_refuses_a_final_symlink(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s")
    (tmp_path / "link").symlink_to(tmp_path / "secret")
    with open_dir(tmp_path, ()) as dir_fd, pytest.raises(OSError):
        open_file(dir_fd, "link")


def test_create_exclusive_never_reuses_a_name_and_sets_the_mode(tmp_path: Path) -> None:
    with open_dir(tmp_path, ()) as dir_fd:
        fd1, name1 = create_exclusive(dir_fd, ".x.", mode=0o640)
        fd2, name2 = create_exclusive(dir_fd, ".x.", mode=0o640)
        os.close(fd1)
        os.close(fd2)
    assert name1 != name2
    assert stat.S_IMODE((tmp_path / name1).stat().st_mode) == 0o640


def test_write_atomic_never_exposes_a_wider_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "token", b"secret\n", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["token"]


def test_write_atomic_replaces_a_planted_link_instead_of_writing_through_it(
    tmp_path: Path,
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "state.json").symlink_to(victim)
    write_atomic(tmp_path / "state.json", b"{}")
    assert victim.read_text() == "untouched"
    assert not (tmp_path / "state.json").is_symlink()
