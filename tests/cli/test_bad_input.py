"""Bad input: one clear line, exit code 2, no traceback, nothing left behind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from corral.context import Context
from helpers import corral, qemu_pids


def leftovers(ctx: Context) -> list[Path]:
    inst = ctx.home.instances
    return sorted(inst.iterdir()) if inst.is_dir() else []


def check_refused(ctx: Context, words: str, *args: str, env: dict[str, str] | None = None) -> None:
    before_qemu = qemu_pids(ctx)
    before = leftovers(ctx)
    proc = corral(ctx, *args, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), proc.stderr
    assert leftovers(ctx) == before
    assert qemu_pids(ctx) <= before_qemu


@pytest.fixture
def img_ctx(ctx: Context, tmp_path: Path) -> Context:
    """A store with a 64 MiB image named 'img' (nothing here boots)."""
    disk = tmp_path / "img.qcow2"
    ctx.qemu_img.create(disk, 64 << 20)
    (tmp_path / "vmlinuz").write_bytes(b"not a kernel")
    ctx.store.import_image(disk, "img", kernel=tmp_path / "vmlinuz", cmdline="console=ttyS0")
    return ctx


@pytest.mark.parametrize(
    ("words", "args"),
    [
        ("no image named 'nope'", ["launch", "nope", "--name", "a1"]),
        ("invalid instance type 'c0m1'", ["launch", "img", "--name", "a1", "--type", "c0m1"]),
        ("invalid instance type 'cXmY'", ["launch", "img", "--name", "a1", "--type", "cXmY"]),
        ("invalid instance type 'c2'", ["launch", "img", "--name", "a1", "--type", "c2"]),
        ("too little memory", ["launch", "img", "--name", "a1", "--memory", "16M"]),
        ("too little memory", ["launch", "img", "--name", "a1", "--type", "c1m1"]),
        ("smaller than image", ["launch", "img", "--name", "a1", "--disk-size", "32M"]),
        ("not a valid hostname", ["launch", "img", "--name", "Bad_Name"]),
        ("not a valid hostname", ["launch", "img", "--name", "-x"]),
        ("cannot read ssh key", ["launch", "img", "--name", "a1", "--ssh-key", "/nonexistent"]),
        ("invalid forward", ["launch", "img", "--name", "a1", "--forward", "99999:22"]),
        ("either an instance type or cpus", ["launch", "img", "--name", "a1", "--type",
                                             "c1m256", "--cpus", "2"]),
        ("no such file", ["launch", "img", "--name", "a1", "--kernel", "/nonexistent"]),
        ("--no-start and --wait exclude", ["launch", "img", "--name", "a1", "--no-start",
                                           "--wait"]),
        ("--no-seed cannot be combined", ["launch", "img", "--name", "a1", "--no-seed",
                                          "--user-data", "/nonexistent"]),
        ("no instance named 'ghost'", ["stop", "ghost"]),
        ("no instance named 'ghost'", ["exec", "ghost", "--", "true"]),
        ("no such file", ["image", "import", "/nonexistent.qcow2", "--name", "x"]),
        ("invalid image name", ["image", "import", "/etc/hostname", "--name", "../x"]),
        ("unknown recipe", ["image", "build", "windows-95"]),
    ],
)  # fmt: skip
def test_refused(img_ctx: Context, words: str, args: list[str]) -> None:
    check_refused(img_ctx, words, *args)


def test_unreadable_ssh_key(img_ctx: Context, tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text("not a key\n")
    check_refused(img_ctx, "holds no ssh public key", "launch", "img", "--name", "a1",
                  "--ssh-key", str(key))  # fmt: skip


def test_host_port_in_use(img_ctx: Context) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        check_refused(img_ctx, f"host port {port} is in use", "launch", "img", "--name", "a1",
                      "--forward", f"{port}:80")  # fmt: skip


def test_missing_qemu_binary(img_ctx: Context) -> None:
    check_refused(img_ctx, "qemu-system-x86_64 not found", "launch", "img", "--name", "a1",
                  env={"CORRAL_QEMU_SYSTEM": "/nonexistent/qemu-system-x86_64"})  # fmt: skip
    check_refused(img_ctx, "not found", "doctor",
                  env={"CORRAL_QEMU_IMG": "/nonexistent/qemu-img"})  # fmt: skip


def test_qemu_own_error_is_shown(img_ctx: Context) -> None:
    # 'img' carries a file that is not a kernel: QEMU refuses it and says so.
    before = qemu_pids(img_ctx)
    proc = corral(img_ctx, "launch", "img", "--name", "a1", "--type", "c1m256")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: QEMU failed to start: ")
    assert "invalid kernel header" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(img_ctx) == []
    assert qemu_pids(img_ctx) <= before


def test_unknown_image_to_rm(img_ctx: Context) -> None:
    check_refused(img_ctx, "no image named 'zzz'", "image", "rm", "zzz")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "((from img)\n (run (cache (../../instances/web1/disk (target /mnt))) (shell true)))",
            "spec:2:15: cache id '../../instances/web1/disk' is not a name",
        ),
        (
            '((from img)\n (run (cache ("/var/lib/x/disk" (target /mnt))) (shell true)))',
            "spec:2:15: cache id '/var/lib/x/disk' is not a name",
        ),
        ("((from ../instances/web1/disk)\n (run (shell true)))", "spec:1:8: invalid image name"),
        (
            "((build dev ((from nope)))\n (from img)\n (run (shell true)))",
            "spec:1:20: no image named 'nope'",
        ),
    ],
)
def test_build_spec_names_that_are_paths(
    img_ctx: Context, tmp_path: Path, text: str, words: str
) -> None:
    """Issue 11, finding 4: a spec's names never pick host files; refused where written."""
    victim = img_ctx.home.root / "instances" / "web1" / "disk.qcow2"
    victim.parent.mkdir(parents=True)
    img_ctx.qemu_img.create(victim, 64 << 20)
    before = victim.read_bytes()
    (tmp_path / "spec").write_text(text)
    check_refused(img_ctx, words, "build", "-f", str(tmp_path / "spec"), str(tmp_path))
    assert victim.read_bytes() == before
    caches = img_ctx.home.root / "builds" / "caches"
    assert not caches.is_dir() or not list(caches.iterdir())
