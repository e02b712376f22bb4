"""Every instance command through the real `corral` CLI, on the tiny guest."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from corral.context import Context
from helpers import corral

pytestmark = pytest.mark.vm


def ok(ctx: Context, *args: str, **kw) -> str:
    proc = corral(ctx, *args, **kw)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_launch_wait_exec_cp_logs_console_inspect(vm_ctx: Context, tmp_path: Path) -> None:
    out = ok(vm_ctx, "launch", "tiny", "--name", "cli1", "--type", "c1m256", "--wait",
             "--timeout", "120")  # fmt: skip
    assert "corral ssh cli1" in out and "corral console cli1" in out

    proc = corral(vm_ctx, "exec", "cli1", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    assert ok(vm_ctx, "exec", "cli1", "--", "hostname") == "cli1\n"

    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello guest\n" * 1000)
    ok(vm_ctx, "cp", str(src), "cli1:/tmp/hello.txt")
    assert ok(vm_ctx, "exec", "cli1", "--", "md5sum", "/tmp/hello.txt").split()[0] == (
        __import__("hashlib").md5(src.read_bytes()).hexdigest()
    )
    back = tmp_path / "back.txt"
    ok(vm_ctx, "cp", "cli1:/tmp/hello.txt", str(back))
    assert back.read_bytes() == src.read_bytes()
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_text("nested")
    ok(vm_ctx, "cp", str(tree), "cli1:/tmp/tree")
    assert ok(vm_ctx, "exec", "cli1", "--", "cat", "/tmp/tree/sub/f") == "nested"
    ok(vm_ctx, "cp", "cli1:/tmp/tree", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / "sub" / "f").read_text() == "nested"

    assert "corral-tiny: ready" in ok(vm_ctx, "logs", "cli1")
    console = ok(vm_ctx, "console", "cli1", input=b"echo CONSOLE-$((6*7))\n")
    assert "CONSOLE-42" in console

    data = json.loads(ok(vm_ctx, "inspect", "cli1", "--json"))
    for key in ("name", "state", "image", "cpus", "memory_mib", "disk_size", "ssh_port",
                "console", "pid"):  # fmt: skip
        assert key in data
    assert (data["state"], data["cpus"], data["memory_mib"]) == ("running", 1, 256)
    assert Path(f"/proc/{data['pid']}").exists()
    with socket.create_connection(("127.0.0.1", data["ssh_port"]), timeout=5) as s:
        assert s.recv(64).startswith(b"SSH-2.0-")
    (listed,) = json.loads(ok(vm_ctx, "ls", "--json"))
    assert listed["name"] == "cli1" and listed["state"] == "running"


def test_lifecycle_commands(vm_ctx: Context) -> None:
    ok(vm_ctx, "launch", "tiny", "--name", "cli2", "--cpus", "1", "--memory", "256M")
    ok(vm_ctx, "wait", "cli2", "--timeout", "120")
    ok(vm_ctx, "pause", "cli2")
    assert json.loads(ok(vm_ctx, "inspect", "cli2", "--json"))["state"] == "paused"
    ok(vm_ctx, "resume", "cli2")
    assert json.loads(ok(vm_ctx, "inspect", "cli2", "--json"))["state"] == "running"
    port = json.loads(ok(vm_ctx, "inspect", "cli2", "--json"))["ssh_port"]
    ok(vm_ctx, "stop", "cli2")
    data = json.loads(ok(vm_ctx, "inspect", "cli2", "--json"))
    assert (data["state"], data["pid"]) == ("stopped", None)
    ok(vm_ctx, "snapshot", "cli2", "--tag", "clean")
    assert "clean" in ok(vm_ctx, "snapshot", "cli2", "--list")
    ok(vm_ctx, "start", "cli2", "--wait", "--timeout", "120")
    assert json.loads(ok(vm_ctx, "inspect", "cli2", "--json"))["ssh_port"] == port
    ok(vm_ctx, "restart", "cli2", "--wait", "--timeout", "120")
    assert ok(vm_ctx, "exec", "cli2", "--", "hostname") == "cli2\n"
    ok(vm_ctx, "snapshot", "cli2", "--as", "cli2-image")
    assert "cli2-image" in ok(vm_ctx, "image", "ls")
    proc = corral(vm_ctx, "rm", "cli2")
    assert proc.returncode == 2 and "stop it first" in proc.stderr
    ok(vm_ctx, "rm", "--force", "cli2")
    assert json.loads(ok(vm_ctx, "ls", "--json")) == []


def test_launch_no_start_then_start(vm_ctx: Context) -> None:
    out = ok(vm_ctx, "launch", "tiny", "--name", "cold1", "--type", "c1m256", "--no-start")
    assert "cold1 is stopped" in out and "corral start cold1" in out
    data = json.loads(ok(vm_ctx, "inspect", "cold1", "--json"))
    assert (data["state"], data["pid"]) == ("stopped", None)
    ok(vm_ctx, "start", "cold1", "--wait", "--timeout", "120")
    assert ok(vm_ctx, "exec", "cold1", "--", "hostname") == "cold1\n"
    ok(vm_ctx, "rm", "--force", "cold1")


def test_wait_failure_names_the_stage_and_shows_the_console(vm_ctx: Context) -> None:
    # No seed: no key reaches the guest, so ssh never lets corral in.
    ok(vm_ctx, "launch", "tiny", "--name", "noseed", "--type", "c1m256", "--no-seed")
    started = time.monotonic()
    proc = corral(vm_ctx, "wait", "noseed", "--timeout", "20")
    assert proc.returncode == 1
    assert "ssh on port" in proc.stderr and "did not answer" in proc.stderr
    assert "| " in proc.stderr  # the last console lines
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60


def test_image_commands(vm_ctx: Context, tmp_path: Path) -> None:
    images = json.loads(ok(vm_ctx, "image", "ls", "--json"))
    assert [i["name"] for i in images] == ["tiny"]
    data = json.loads(ok(vm_ctx, "image", "inspect", "tiny", "--json"))
    assert data["kernel"] and data["format"] == "qcow2" and data["default_user"] == "root"
    raw = tmp_path / "r.img"
    raw.write_bytes(b"\0" * (1 << 20))
    ok(vm_ctx, "image", "import", str(raw), "--name", "rawdisk")
    ok(vm_ctx, "launch", "tiny", "--name", "user1", "--type", "c1m256", "--no-seed")
    proc = corral(vm_ctx, "image", "rm", "tiny")
    assert proc.returncode == 2 and "used by instance(s): user1" in proc.stderr
    ok(vm_ctx, "rm", "-f", "user1")
    ok(vm_ctx, "image", "rm", "tiny")
    ok(vm_ctx, "image", "rm", "rawdisk")
    assert json.loads(ok(vm_ctx, "image", "ls", "--json")) == []
    assert list(vm_ctx.home.blobs.iterdir()) == []


def test_ssh_logs_follow_force_stop_and_taken_name(vm_ctx: Context) -> None:
    import subprocess
    import sys

    ok(vm_ctx, "launch", "tiny", "--name", "cli3", "--type", "c1m256", "--wait", "--timeout",
       "120")  # fmt: skip
    proc = corral(vm_ctx, "launch", "tiny", "--name", "cli3", "--type", "c1m256")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: an instance named 'cli3' already exists")
    assert json.loads(ok(vm_ctx, "inspect", "cli3", "--json"))["state"] == "running"

    assert ok(vm_ctx, "ssh", "cli3", "--", "echo", "via-system-ssh") == "via-system-ssh\n"

    env = {**os.environ, "CORRAL_HOME": str(vm_ctx.home.root),
           "CORRAL_CACHE_DIR": str(vm_ctx.config.cache_dir)}  # fmt: skip
    follower = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.app", "logs", "-f", "cli3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    ok(vm_ctx, "exec", "cli3", "--", "sh", "-c", "echo FOLLOWED > /dev/console")
    proc = corral(vm_ctx, "stop", "cli3", "--force")
    assert proc.returncode == 0
    assert proc.stderr.split() == ["cli3:", "quit"]  # --force skips the ACPI powerdown
    out, _ = follower.communicate(timeout=30)  # follow ends when the VM is gone
    assert follower.returncode == 0
    assert b"FOLLOWED" in out


def test_direct_kernel_boot_from_the_command_line(vm_ctx: Context, tiny_guest) -> None:
    """An image without a kernel, booted with --kernel/--initrd/--cmdline."""
    bare = vm_ctx.home.root / "bare.qcow2"
    vm_ctx.qemu_img.create(bare, 128 << 20)
    ok(vm_ctx, "image", "import", str(bare), "--name", "bare")
    ok(vm_ctx, "launch", "bare", "--name", "kb1", "--type", "c1m256",
       "--kernel", str(tiny_guest.kernel), "--initrd", str(tiny_guest.initrd),
       "--cmdline", "console=ttyS0 quiet corral.test=1", "--wait", "--timeout", "120")  # fmt: skip
    assert "corral.test=1" in ok(vm_ctx, "exec", "kb1", "--", "cat", "/proc/cmdline")
    data = json.loads(ok(vm_ctx, "inspect", "kb1", "--json"))
    assert data["kernel_cmdline"] == "console=ttyS0 quiet corral.test=1"
    # The instance keeps its own copy: it still starts once the user's files are gone.
    assert (vm_ctx.home.instance("kb1").kernel).read_bytes() == tiny_guest.kernel.read_bytes()
    ok(vm_ctx, "restart", "kb1", "--force", "--wait", "--timeout", "120")


EVIL_SHELL = """
printf '#!/bin/sh\\ncase "$2" in tar*) exec cat /tmp/hostile.tar ;; esac\\nexec /bin/sh "$@"\\n' \\
  > /tmp/evilsh
chmod 755 /tmp/evilsh
echo /tmp/evilsh >> /etc/shells
sed -i 's|^root:\\(.*\\):/bin/sh$|root:\\1:/tmp/evilsh|' /etc/passwd
mkdir -p /tmp/tree
echo guest-bytes > /tmp/file
"""


def test_cp_from_a_hostile_guest_writes_nothing_outside(vm_ctx: Context, tmp_path: Path) -> None:
    """Issue 11, finding 7: a guest whose `tar` sends a CVE-2025-4517 link chain, and a file
    download to a destination where a link was planted."""
    from hostile_tars import climbing_chain, tar

    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "etc" / "passwd").write_text("root:x:0:0\n")
    (tmp_path / "hostile.tar").write_bytes(tar(*climbing_chain()))
    ok(vm_ctx, "launch", "tiny", "--name", "evil", "--type", "c1m256", "--wait",
       "--timeout", "120")  # fmt: skip
    ok(vm_ctx, "cp", str(tmp_path / "hostile.tar"), "evil:/tmp/hostile.tar")
    # busybox's shell runs its own tar whatever PATH says: the login shell answers instead.
    ok(vm_ctx, "exec", "evil", "--", "sh", "-c", EVIL_SHELL)

    proc = corral(vm_ctx, "cp", "evil:/tmp/tree", str(tmp_path / "pulled"))
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: refused the guest's tar: ") and "through a link" in line
    assert (outside / "etc" / "passwd").read_text() == "root:x:0:0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.tar", "outside"]

    planted = tmp_path / "file"
    planted.symlink_to(outside / "etc" / "passwd")
    ok(vm_ctx, "cp", "evil:/tmp/file", str(planted))
    assert (outside / "etc" / "passwd").read_text() == "root:x:0:0\n"
    assert not planted.is_symlink() and planted.read_text() == "guest-bytes\n"
