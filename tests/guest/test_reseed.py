"""The reseed program (corral.guest.reseed): a valid static ELF that issues RNDRESEEDCRNG.

It runs here, on the host's own kernel: as root the reseed happens (exit 0); as anyone else the
kernel refuses it (EPERM). In a guest, tests/guest/test_identity_vm.py runs it too.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.guest.reseed import RNDRESEEDCRNG, reseed_program


def test_it_is_a_small_x86_64_executable() -> None:
    program = reseed_program()
    assert program[:4] == b"\x7fELF" and program[4] == 2  # ELF64
    assert int.from_bytes(program[18:20], "little") == 0x3E  # x86-64
    assert len(program) < 256
    assert program.endswith(b"/dev/urandom\0")
    assert RNDRESEEDCRNG.to_bytes(4, "little") in program


def test_it_reseeds_as_root_and_is_refused_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "reseed"
    path.write_bytes(reseed_program())
    path.chmod(0o755)
    tmp_path.chmod(0o755)
    expected = 0 if os.geteuid() == 0 else errno.EPERM
    assert subprocess.run([path]).returncode == expected
    if os.geteuid() == 0 and shutil.which("setpriv"):
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", path]
        assert subprocess.run(as_nobody).returncode == errno.EPERM


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
def test_the_calls_it_makes(tmp_path: Path) -> None:
    path = tmp_path / "reseed"
    path.write_bytes(reseed_program())
    path.chmod(0o755)
    trace = subprocess.run(["strace", path], capture_output=True, text=True).stderr
    assert 'open("/dev/urandom", O_WRONLY)' in trace
    assert "ioctl(3, RNDRESEEDCRNG)" in trace
