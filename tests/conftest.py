"""Shared fixtures: a fresh, short state directory per test and a Context on it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from corral.config import Config
from corral.context import Context

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"


@pytest.fixture
def home() -> Iterator[Path]:
    # Short on purpose: unix socket paths under it must fit in 108 bytes.
    path = Path(tempfile.mkdtemp(prefix="ch", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (stand-ins for QEMU): killed and reaped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
def config(home: Path) -> Config:
    return replace(Config(), home=home, cache_dir=CACHE / "host")


@pytest.fixture
def ctx(config: Config) -> Context:
    return Context(config)


# --- real VMs -----------------------------------------------------------------------------

TINY = "tiny"


STALE_TINY_GUEST = 7 * 86400  # seconds unused after which another version's build goes


def tiny_workdir(kind: str) -> Path:
    """Where the tiny guest of this builder version is kept: .cache is shared by worktrees
    that may hold different versions of the guest, and each must boot its own. Using one
    marks it used; versions unused for a week are removed."""
    import os
    import time

    from corral.image.recipes.tiny import builder_digest

    workdir = CACHE / kind / f"guest-{builder_digest()[:12]}"
    workdir.mkdir(parents=True, exist_ok=True)
    os.utime(workdir)
    for other in workdir.parent.glob("guest-*"):
        if other != workdir and other.stat().st_mtime < time.time() - STALE_TINY_GUEST:
            shutil.rmtree(other, ignore_errors=True)
    return workdir


@pytest.fixture(scope="session")
def tiny_guest():
    """The tiny test guest, built once and cached in .cache/tiny-guest across runs."""
    from corral.image.recipes.tiny import build_tiny_guest

    return build_tiny_guest(tiny_workdir("tiny-guest"), cache_dir=CACHE / "tiny-guest" / "debs")


@pytest.fixture(scope="session")
def tiny_disk_guest():
    """The tiny guest with its root filesystem on the disk (what it writes persists)."""
    from corral.image.recipes.tiny import build_tiny_guest

    return build_tiny_guest(
        tiny_workdir("tiny-disk"), cache_dir=CACHE / "tiny-guest" / "debs", root_on_disk=True
    )


@pytest.fixture(scope="session")
def busybox(tiny_guest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny guest's own static busybox, from the .deb it was built from: runs the guest's
    scripts (agent, network-config reader, identity script) on the host."""
    (deb,) = (CACHE / "tiny-guest" / "debs").glob("busybox-static_*.deb")
    root = tmp_path_factory.mktemp("busybox")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    return root / "bin" / "busybox"


@pytest.fixture
def vm_ctx(ctx: Context, tiny_guest) -> Iterator[Context]:
    """A state directory holding the tiny guest as image 'tiny'; every VM is gone afterwards."""
    ctx.store.import_image(
        tiny_guest.disk,
        TINY,
        kernel=tiny_guest.kernel,
        initrd=tiny_guest.initrd,
        cmdline=tiny_guest.cmdline,
        default_user=tiny_guest.default_user,
    )
    yield ctx
    kill_all(ctx)


def kill_all(ctx: Context) -> None:
    """End every QEMU of this state directory (a failed test must not leak VMs)."""
    from corral.instance import registry

    for files, _ in registry.records(ctx.home):
        registry.destroy(files)


# --- the real Debian 12 image -------------------------------------------------------------

E2E_HOME = CACHE / "e2e-home"


def _builder_digest() -> str:
    import hashlib

    from corral.image.recipes import debian

    return hashlib.sha256(Path(debian.__file__).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def debian_ctx() -> Iterator[Context]:
    """A state directory holding `debian-12`, built once through `corral image build`.

    Kept in .cache/e2e-home between runs and rebuilt when the builder's source changes.
    """
    import os

    from helpers import corral

    if os.geteuid() != 0:
        pytest.skip("mmdebstrap --mode=root needs root (run the suite as root or with sudo)")
    ctx = Context(replace(Config(), home=E2E_HOME, cache_dir=CACHE / "host"))
    kill_all(ctx)
    stamp = E2E_HOME / "builder.sha256"
    fresh = stamp.is_file() and stamp.read_text() == _builder_digest()
    if not (fresh and ctx.store.exists("debian-12")):
        proc = corral(ctx, "image", "build", "debian-12", "--replace", timeout=900)
        assert proc.returncode == 0, proc.stderr
        stamp.write_text(_builder_digest())
    yield ctx
    kill_all(ctx)
