"""The Debian builder: its failure contract (fast) and the content of a real build (e2e).

Booting the built image is tested end to end through `corral launch` in
tests/instance/test_debian_e2e.py, on the same build.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from corral.errors import CommandFailed, MissingDependency
from corral.image.recipes import debian
from corral.image.recipes.built import BuiltImage
from corral.image.recipes.debian import build_debian

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache"
BUILD_INPUTS = {"release": "bookworm", "mirror": "http://deb.debian.org/debian", "packages": []}
GUEST_MAC = "52:54:00:c0:ff:01"
SSH_DEADLINE = 180.0
GiB = 1 << 30


# --- fast tests: the contract around failure ---------------------------------------------------


def test_missing_tool_is_reported_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.fspath(tmp_path))
    with pytest.raises(MissingDependency, match="mmdebstrap"):
        build_debian(tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def failing_run(argv, **kwargs):
        raise CommandFailed([os.fspath(a) for a in argv], 1, "E: no network")

    monkeypatch.setattr(debian, "_check_host", lambda: None)
    monkeypatch.setattr(debian, "run", failing_run)
    workdir = tmp_path / "work"
    with pytest.raises(CommandFailed, match="no network") as failure:
        build_debian(workdir)
    assert "E: no network" in (failure.value.hint or "")
    assert list(workdir.iterdir()) == []


def test_sources_include_updates_and_security():
    assert debian._sources("bookworm", "http://mirror/debian") == [
        "deb http://mirror/debian bookworm main",
        "deb http://mirror/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]


def test_mountinfo_escapes_are_undone():
    assert debian._unescape_mountinfo(r"/tmp/a\040b") == "/tmp/a b"


# --- e2e: build, boot, check ------------------------------------------------------------------


@pytest.fixture(scope="module")
def debian_image(debian_ctx) -> BuiltImage:
    """The image `corral image build debian-12` put in the store (built once, see conftest)."""
    manifest = debian_ctx.store.get("debian-12")
    blob = debian_ctx.store.blob
    assert manifest.kernel and manifest.initrd and manifest.cmdline
    return BuiltImage(
        disk=blob(manifest.digest),
        disk_format=manifest.format,
        kernel=blob(manifest.kernel),
        initrd=blob(manifest.initrd),
        cmdline=manifest.cmdline,
        default_user=manifest.default_user,
    )


@pytest.mark.e2e
def test_built_image_is_a_small_qcow2(debian_image):
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", debian_image.disk],
            check=True,
            capture_output=True,
        ).stdout
    )
    assert debian_image.disk_format == info["format"] == "qcow2"
    assert info["virtual-size"] == 2 * GiB
    assert info["actual-size"] < 400 * (1 << 20)
    assert debian_image.default_user == "debian"
    assert debian_image.cmdline.startswith("root=/dev/vda ")
    assert debian_image.kernel.stat().st_size > 1 << 20
    assert debian_image.initrd.stat().st_size > 1 << 20


@pytest.mark.e2e
def test_image_carries_no_instance_identity(debian_image, tmp_path):
    raw = tmp_path / "root.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", debian_image.disk, raw], check=True)
    assert "ssh_host_" not in _debugfs(raw, "ls /etc/ssh")
    assert _debugfs(raw, "cat /etc/machine-id") == ""
    assert "en_US.UTF-8" in _debugfs(raw, "cat /etc/default/locale")


def _debugfs(filesystem: Path, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, filesystem], check=True, capture_output=True, text=True
    ).stdout
