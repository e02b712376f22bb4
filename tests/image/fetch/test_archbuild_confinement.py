"""An architecture file written by someone else reaches no host file outside its confinement.

Each test replays an attack of issue #11 as it was reproduced: inputs that make qemu-img (or
corral) read a host file into an output handed to another owner, and outputs that write outside
--output or through a link planted in it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import InvalidInput
from corral.image.archfile import images as archbuild
from corral.image.archfile.images import build_archfile
from helpers import corral
from image.fetch.support import assert_unchanged, store_state

MARK = b"TOP-SECRET-f3c1a9-"
SECRET = MARK * 4096  # 72 KiB: any copy of it, converted or not, holds the mark
OWNER = ["--owner", "1234:1234"] if os.geteuid() == 0 else []


def holders(root: Path, needle: bytes = MARK) -> list[Path]:
    """Files under root (links not followed) whose bytes contain needle."""
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a refused command (a hint may follow)."""
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if not ln.startswith("hint: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0].removeprefix("error: ")


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "root" / "secret"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


# --- finding 1: inputs -------------------------------------------------------------------------


def test_json_filename_made_of_nested_directories_is_refused(
    ctx: Context, tmp_path: Path, secret: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`json:{...}` exists as nested directories holding a harmless placeholder whose checksum
    the file gives; qemu-img would have read the secret named inside the string."""
    project = tmp_path / "project"
    name = f'json:{{"driver":"raw","file":{{"driver":"file","filename":"{secret}"}}}}'
    placeholder = project / name
    placeholder.parent.mkdir(parents=True)
    placeholder.write_bytes(bytes(64 << 10))
    (project / "arch.yml").write_text(f"""\
images:
  x:
    name: x
    size: 1M
    format: raw
    input:
      path: '{name}'
      format: raw
      checksum: {{type: sha256, value: {sha256(placeholder.read_bytes())}}}
""")
    monkeypatch.chdir(project)  # the relative path is what qemu-img read as a protocol
    ctx.store.ensure()
    before = store_state(ctx)
    out = tmp_path / "out"
    proc = corral(ctx, "image", "build", "-f", "arch.yml", "--output", str(out), *OWNER)
    assert one_error(proc) == (
        f"arch.yml: images.x.input.path: '{name}' is not a plain file path (json: would name "
        "a qemu protocol); corral reads only local files"
    )
    assert_unchanged(ctx, before)
    assert holders(tmp_path / "out") == [] and holders(ctx.home.root) == []


def test_qcow2_input_backed_by_a_host_file_is_refused(
    ctx: Context, tmp_path: Path, secret: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    disk = project / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(secret),
                    "-F", "raw", str(disk), "1M"], check=True)  # fmt: skip
    ctx.store.ensure()
    before = store_state(ctx)
    for declared in ("", "\n      format: qcow2", "\n      format: raw"):
        (project / "arch.yml").write_text(
            f"images:\n  x:\n    name: x\n    size: 1M\n    format: raw\n"
            f"    input:\n      path: disk.qcow2{declared}\n"
        )
        with pytest.raises(InvalidInput, match=r"images\.x: .*disk\.qcow2: refusing an image "
                                               rf"with a backing file \({secret}\)"):  # fmt: skip
            build_archfile(ctx, project / "arch.yml", output_dir=tmp_path / "out")
        assert_unchanged(ctx, before)
        assert holders(tmp_path / "out") == [] and holders(ctx.home.root) == []


@pytest.mark.parametrize(
    "spec",
    [
        "path: {secret}",  # absolute
        "path: ../.ssh/id_rsa",  # climbs out of the file's directory
        "path: .ssh/id_rsa",  # not beside the file: found in the current directory
        "path: link.raw",  # beside the file, a link to the secret
        "path: sub/../../.ssh/id_rsa",
        "url: file://{secret}",
    ],
)
def test_an_input_outside_the_file_directory_needs_a_checksum(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    """A file received from someone else, built from the home directory: without a checksum
    it reaches nothing outside its own directory, --no-verify or not."""
    home = tmp_path / "home"
    secret = home / ".ssh" / "id_rsa"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(SECRET)
    received = home / "received"
    (received / "sub").mkdir(parents=True)
    (received / "link.raw").symlink_to(secret)
    spec = spec.format(secret=secret)
    (received / "arch.yml").write_text(
        f"images:\n  x:\n    name: x\n    size: 1M\n    format: raw\n    input: {{{spec}}}\n"
    )
    monkeypatch.chdir(home)
    ctx.store.ensure()
    before = store_state(ctx)
    out = tmp_path / "out"
    proc = corral(ctx, "image", "build", "-f", "received/arch.yml", "--output", str(out),
                  "--no-verify", *OWNER)  # fmt: skip
    field = "url" if spec.startswith("url") else "path"
    error = one_error(proc)
    assert error.startswith(f"received/arch.yml: images.x.input.{field}: "), error
    assert error.endswith(f" has no checksum and lies outside {received} (the architecture "
                          "file's directory)"), error  # fmt: skip
    assert_unchanged(ctx, before)
    assert holders(tmp_path / "out") == [] and holders(ctx.home.root) == []

    # With the secret's checksum the author proves they know its bytes already: allowed.
    checksum = f"checksum: {{type: sha256, value: {sha256(SECRET)}}}"
    (received / "arch.yml").write_text(
        f"images:\n  x:\n    name: x\n    size: 1M\n    format: raw\n"
        f"    input: {{{spec}, {checksum}}}\n"
    )
    built = build_archfile(ctx, received / "arch.yml", output_dir=out)
    assert built[0].output is not None and built[0].output.read_bytes().startswith(SECRET)


def test_an_input_beside_the_file_needs_no_checksum(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gen-vm-image's layout: the file in tests/res, the path relative to the project root
    (looked up in the current directory), the disk in tests/res too."""
    project = tmp_path / "project"
    res = project / "tests" / "res"
    res.mkdir(parents=True)
    (res / "disk.raw").write_bytes(b"\x01" * 4096)
    (res / "arch.yml").write_text(
        "images:\n  x: {name: x, size: 1M, format: raw, input: {path: tests/res/disk.raw}}\n"
    )
    monkeypatch.chdir(project)
    (built,) = build_archfile(ctx, Path("tests/res/arch.yml"), output_dir=tmp_path / "out")
    assert built.output is not None and built.output.read_bytes()[:4096] == b"\x01" * 4096


# --- finding 2: outputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../escape.qcow2", "output path '../escape.qcow2' must not contain '..'"),
        ("sub/../../escape.qcow2", "output path 'sub/../../escape.qcow2' must not contain '..'"),
        ("{tmp}/escape.qcow2", "output path '{tmp}/escape.qcow2' must be relative, not absolute"),
    ],
)
def test_output_paths_that_leave_output_are_refused(
    ctx: Context, tmp_path: Path, path: str, problem: str
) -> None:
    arch = tmp_path / "arch.yml"
    path, problem = path.format(tmp=tmp_path), problem.format(tmp=tmp_path)
    arch.write_text(f"images:\n  x: {{name: x, size: 1M, output: {{path: '{path}'}}}}\n")
    proc = corral(ctx, "image", "build", "-f", str(arch), "--output", str(tmp_path / "out"))
    assert one_error(proc) == f"{arch}: images.x.output.path: {problem}"
    assert not (tmp_path / "escape.qcow2").exists() and not ctx.store.exists("x")


def test_a_linked_output_directory_leading_out_is_refused(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "tests").symlink_to(elsewhere)
    arch = tmp_path / "arch.yml"
    arch.write_text("images:\n  x: {name: x, size: 1M, output: {path: tests/tmp/x.qcow2}}\n")
    proc = corral(ctx, "image", "build", "-f", str(arch), "--output", str(out))
    assert one_error(proc) == (
        f"{arch}: images.x.output.path: 'tests/tmp/x.qcow2' leads out of {out}"
    )
    assert list(elsewhere.iterdir()) == [] and not ctx.store.exists("x")

    # The link appears after the check (a race): the write walks the path without following
    # links, and nothing is written outside.
    (out / "tests").unlink()
    make_disk = archbuild._make_disk

    def swap_then_make(*args: object) -> Path:
        (out / "tests").rename(tmp_path / "moved")
        (out / "tests").symlink_to(elsewhere)
        return make_disk(*args)  # type: ignore[arg-type]

    (out / "tests" / "tmp").mkdir(parents=True)
    monkeypatch.setattr(archbuild, "_make_disk", swap_then_make)
    with pytest.raises(InvalidInput, match=rf"images\.x\.output\.path 'tests/tmp' leads out of "
                                           rf"{out} through 'tests'"):  # fmt: skip
        build_archfile(ctx, arch, output_dir=out)
    assert list(elsewhere.iterdir()) == [] and not ctx.store.exists("x")
    assert list(ctx.home.image_tmp.iterdir()) == []


def test_links_planted_at_temporary_names_are_not_followed(
    ctx: Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who may write to --output plants links where corral wrote its temporary copy
    (`.NAME.PID.tmp`) and where it might write (a guessed random name), hoping for a
    root-owned file of their choice overwritten and chowned to them."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    victims = [tmp_path / "victim-pid", tmp_path / "victim-guessed"]
    for victim in victims:
        victim.write_bytes(b"precious")
        victim.chmod(0o600)
    (out / "sub" / f".x.qcow2.{os.getpid()}.tmp").symlink_to(victims[0])
    (out / "sub" / ".x.qcow2.guessed.tmp").symlink_to(victims[1])
    names = iter(["guessed"])
    real = secrets.token_hex
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(names, None) or real(n))
    arch = tmp_path / "arch.yml"
    arch.write_text("images:\n  x: {name: x, size: 1M, output: {path: sub/x.qcow2}}\n")
    owner = "1234:1234" if os.geteuid() == 0 else None
    (built,) = build_archfile(ctx, arch, output_dir=out, owner=owner)
    for victim in victims:
        assert victim.read_bytes() == b"precious"
        stat = victim.stat()
        assert (stat.st_uid, stat.st_gid, stat.st_mode & 0o777) == (os.getuid(), os.getgid(),
                                                                    0o600)  # fmt: skip
    assert built.output == out / "sub" / "x.qcow2" and not built.output.is_symlink()
    assert built.manifest.digest == sha256(built.output.read_bytes())
    stat = built.output.stat()
    assert stat.st_mode & 0o777 == 0o644
    if owner is not None:
        assert (stat.st_uid, stat.st_gid) == (1234, 1234)
    assert sorted(p.name for p in (out / "sub").iterdir()) == [
        f".x.qcow2.{os.getpid()}.tmp",
        ".x.qcow2.guessed.tmp",
        "x.qcow2",
    ]  # the links are left alone; no temporary file is left behind
