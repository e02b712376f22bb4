"""Copy steps: manifests, placement, and real tars unpacked by GNU tar and busybox tar.

The tar tests run the very argv the guest would run (`extract_command`, `guest_export_command`)
on this host, once with GNU tar, find and xargs under dash and once with busybox's applets
under busybox ash, with `root` pointing at a temp directory instead of the guest's `/`.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.builds.copying import (
    CHUNK,
    DIR_MODE,
    EXEC_MODE,
    FILE_MODE,
    LINK_MODE,
    ContextCopy,
    Entry,
    TarMember,
    extract_command,
    guest_export_command,
    manifest,
    manifest_from_tar,
    parent_dirs,
    plan,
    retarget_tar,
    tar_stream,
)
from corral.builds.spec import Copy
from corral.errors import GuestError, InvalidInput

UID, GID = 1234, 4321  # ids no user or group on the host has, so names cannot stand in

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="restoring owners needs root")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- trees on disk -------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int = 0o644


Node = bytes | File | Link | None  # None: a directory


def make_tree(root: Path, spec: Mapping[str, Node]) -> Path:
    """Create spec's paths under root (parents as needed) in the order given."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, node in spec.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if node is None:
            path.mkdir(exist_ok=True)
        elif isinstance(node, Link):
            path.symlink_to(node.target)
        else:
            file = node if isinstance(node, File) else File(node)
            path.write_bytes(file.data)
            path.chmod(file.mode)
    return root


def snapshot(root: Path, *, owners: bool = True) -> dict[str, tuple[object, ...]]:
    """Everything under root: kind, content or target, permission bits and (lstat) owner."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            owner = (st_.st_uid, st_.st_gid) if owners else ()
            if stat.S_ISLNK(st_.st_mode):
                what: tuple[object, ...] = ("symlink", os.readlink(path))  # noqa: PTH115 (exact text)
            elif stat.S_ISDIR(st_.st_mode):
                what = ("dir", stat.S_IMODE(st_.st_mode))
            else:
                what = ("file", path.read_bytes(), stat.S_IMODE(st_.st_mode))
            out[str(path.relative_to(root))] = (*what, *owner)
    return out


# --- the two tars --------------------------------------------------------------------------

BUSYBOX_APPLETS = ("sh", "tar", "find", "xargs", "mkdir", "chown", "chmod")


@pytest.fixture(scope="session")
def busybox_path() -> Iterator[str]:
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    bindir = Path(tempfile.mkdtemp(prefix="bb"))
    for applet in BUSYBOX_APPLETS:
        (bindir / applet).symlink_to(busybox)
    yield str(bindir)
    shutil.rmtree(bindir)


@dataclass(frozen=True)
class Tool:
    name: str
    env: dict[str, str]  # PATH holds only this tool's programs

    @property
    def link_owner(self) -> tuple[int, int]:
        # busybox tar creates symlinks last (against link tricks) and leaves them root's.
        return (0, 0) if self.name == "busybox" else (UID, GID)


@pytest.fixture(params=["gnu", "busybox"])
def tool(request: pytest.FixtureRequest) -> Tool:
    """Runs the guest commands with one tar: GNU tar under dash, or busybox under its ash."""
    if request.param == "busybox":
        return Tool("busybox", {"PATH": request.getfixturevalue("busybox_path")})
    return Tool("gnu", {"PATH": "/usr/bin:/bin"})


def sh(argv: list[str], env: Mapping[str, str], data: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=data, capture_output=True, env=dict(env), timeout=60)


def unpack(data: bytes, root: Path, env: Mapping[str, str], dirs: tuple[str, ...] = ()) -> None:
    root.mkdir(exist_ok=True)
    proc = sh(extract_command(UID, GID, dirs, root=str(root)), env, data)
    assert proc.returncode == 0, proc.stderr.decode()


def copy(
    context: Path,
    srcs: list[str],
    dst: str,
    out: Path,
    env: Mapping[str, str],
    *,
    exclude: tuple[str, ...] = (),
    workdir: str = "/",
) -> tuple[TarMember, ...]:
    """A whole context copy: manifest, plan, tar, unpack into out."""
    members = plan(manifest(context, srcs, exclude), srcs, dst, workdir)
    parents = parent_dirs(srcs, dst, workdir)
    assert parents == tuple(m.path for m in members if m.source is None)
    unpack(b"".join(tar_stream(context, members, UID, GID)), out, env, parents)
    return members


def test_the_tools_are_the_ones_named(tool: Tool) -> None:
    version = sh(["sh", "-c", "tar --version 2>&1; true"], tool.env).stdout.decode()
    assert ("GNU tar" in version) == (tool.name == "gnu")
    assert ("busybox" in version.lower()) == (tool.name == "busybox")


# --- manifest ------------------------------------------------------------------------------

MAIN_ML = b'let () = print_endline "hi"\n'
TREE: dict[str, Node] = {
    "src/main.ml": MAIN_ML,
    "src/run.sh": File(b"#!/bin/sh\n", 0o750),
    "src/secret": File(b"s", 0o600),
    "src/lib/": None,
    "src/lib/util.ml": b"let x = 1\n",
    "src/link": Link("main.ml"),
    "src/up": Link("../README"),
    "README": b"readme\n",
}


def test_manifest_lists_every_entry_sorted_with_normalised_modes(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, TREE)
    assert manifest(ctx, ["src", "README"], ()) == (
        Entry("README", "file", FILE_MODE, digest=sha(b"readme\n")),
        Entry("src", "dir", DIR_MODE),
        Entry("src/lib", "dir", DIR_MODE),
        Entry("src/lib/util.ml", "file", FILE_MODE, digest=sha(b"let x = 1\n")),
        Entry("src/link", "symlink", LINK_MODE, target="main.ml"),
        Entry("src/main.ml", "file", FILE_MODE, digest=sha(MAIN_ML)),
        Entry("src/run.sh", "file", EXEC_MODE, digest=sha(b"#!/bin/sh\n")),
        Entry("src/secret", "file", FILE_MODE, digest=sha(b"s")),
        Entry("src/up", "symlink", LINK_MODE, target="../README"),
    )


def test_manifest_orders_a_directory_before_what_it_holds(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"a-b": b"", "a/x": b"", "a.c": b"", "a/y/z": b""})
    paths = [e.path for e in manifest(ctx, ["."], ())]
    assert paths == [".", "a", "a/x", "a/y", "a/y/z", "a-b", "a.c"]


def test_manifest_normalises_sources(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"a/b/f": b"x"})
    want = manifest(ctx, ["a/b"], ())
    for src in ("a/b/", "./a/b", "a//b", "a/./b", "a/c/../b"):
        assert manifest(ctx, [src], ()) == want
    assert manifest(ctx, [""], ()) == manifest(ctx, ["."], ())


def test_manifest_is_the_same_on_every_call(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, TREE)
    assert manifest(ctx, ["."], ()) == manifest(ctx, ["."], ())


def test_digest_and_executable_bit_show_up_but_not_mtime_or_other_bits(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"f": b"one"})
    before = manifest(ctx, ["f"], ())
    os.utime(ctx / "f", (0, 0))
    (ctx / "f").chmod(0o600)
    assert manifest(ctx, ["f"], ()) == before
    (ctx / "f").chmod(0o700)
    (exec_,) = manifest(ctx, ["f"], ())
    assert exec_.mode == EXEC_MODE and exec_.digest == before[0].digest
    (ctx / "f").write_bytes(b"two")
    (changed,) = manifest(ctx, ["f"], ())
    assert changed.digest == sha(b"two") != before[0].digest


def test_symlink_target_is_kept_as_written(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"d/f": b"", "d/l": Link("./f"), "d/m": Link("sub//../f")})
    targets = {e.path: e.target for e in manifest(ctx, ["d"], ()) if e.kind == "symlink"}
    assert targets == {"d/l": "./f", "d/m": "sub//../f"}


def test_exclude_skips_basenames_at_any_depth(tmp_path: Path) -> None:
    ctx = make_tree(
        tmp_path,
        {
            ".git/config": b"",
            "a/.git/HEAD": b"",
            "a/b/_build/x.o": b"",
            "a/b/keep.ml": b"",
            "a/b/keep.o": b"",
            "a/_buildx": b"",
            "c.o": b"",
        },
    )
    paths = [e.path for e in manifest(ctx, ["."], [".git", "_build", "*.o"])]
    assert paths == [".", "a", "a/_buildx", "a/b", "a/b/keep.ml"]


def test_exclude_globs(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"a1": b"", "a2": b"", "b1": b"", "[x]": b"", "x": b""})
    assert [e.path for e in manifest(ctx, ["."], ["a?"])] == [".", "[x]", "b1", "x"]
    assert [e.path for e in manifest(ctx, ["."], ["[ab]*"])] == [".", "[x]", "x"]
    assert [e.path for e in manifest(ctx, ["."], ["[!x]*"])] == [".", "x"]


def test_exclude_does_not_drop_a_source_itself(tmp_path: Path) -> None:
    # obuilder filters what a directory holds, never the source named.
    ctx = make_tree(tmp_path, {"_build/x": b"", "_build/_build/y": b""})
    assert [e.path for e in manifest(ctx, ["_build"], ["_build"])] == ["_build", "_build/x"]


def test_symlinks_inside_the_context_are_fine(tmp_path: Path) -> None:
    ctx = make_tree(
        tmp_path,
        {
            "real/f": b"x",
            "via": Link("real"),
            "abs": Link(str(tmp_path / "real" / "f")),
            "dangling": Link("nowhere"),
            "loop": Link("loop"),
        },
    )
    assert manifest(ctx, ["via/f"], ()) == (Entry("via/f", "file", FILE_MODE, digest=sha(b"x")),)
    # A source that is a symlink is copied as the symlink, as obuilder does.
    assert manifest(ctx, ["via"], ()) == (Entry("via", "symlink", LINK_MODE, target="real"),)
    kinds = {e.path: e.kind for e in manifest(ctx, ["."], ())}
    assert kinds["abs"] == kinds["dangling"] == kinds["loop"] == "symlink"


def test_a_context_that_is_a_symlink_works(tmp_path: Path) -> None:
    make_tree(tmp_path / "real", {"f": b"x"})
    (tmp_path / "ctx").symlink_to("real")
    assert manifest(tmp_path / "ctx", ["f"], ()) == manifest(tmp_path / "real", ["f"], ())


@pytest.mark.parametrize(
    ("srcs", "exclude", "message"),
    [
        (["../x"], (), "copy source '../x' leaves the build context"),
        (["a/../../x"], (), "copy source 'a/../../x' leaves the build context"),
        ([".."], (), "copy source '..' leaves the build context"),
        (["/etc/passwd"], (), "copy source '/etc/passwd' is absolute"),
        (["missing"], (), "copy source 'missing' not found in the build context"),
        (["f/x"], (), "copy source 'f/x' not found in the build context"),
        (["out/passwd"], (), "copy source 'out/passwd' escapes the build context: 'out' is a"),
        (["d/deeper/out/passwd"], (), "escapes the build context: 'd/deeper/out' is a symlink"),
        (["bad"], (), "symlink 'bad' escapes the build context: it points to '/etc/passwd'"),
        (
            ["d"],
            ("deeper", "fifo"),
            "symlink 'd/up' escapes the build context: it points to '../..'",
        ),
        (["d"], (), "symlink 'd/deeper/out' escapes the build context"),  # the first, sorted
        (["d/up"], (), "symlink 'd/up' escapes the build context"),
        (["d/fifo"], (), "cannot copy 'd/fifo': it is a fifo"),
        (["f", "f"], (), "copy source 'f' is given twice"),
        (["f", "./f/"], (), "copy source './f/' is given twice"),
        (["d", "d/deeper"], (), "copy sources 'd' and 'd/deeper' overlap"),
        (["f", "."], (), "copy sources 'f' and '.' overlap"),
        ([], (), "a copy needs at least one source"),
        (["f"], ("a/b",), "exclude 'a/b' is not a file or directory name"),
        (["f"], ("",), "exclude '' is not a file or directory name"),
    ],
)
def test_refusals_name_the_path(
    tmp_path: Path, srcs: list[str], exclude: tuple[str, ...], message: str
) -> None:
    ctx = make_tree(
        tmp_path / "ctx",
        {
            "f": b"",
            "out": Link("/etc"),
            "bad": Link("/etc/passwd"),
            "d/deeper/out": Link("../../../outside"),
            "d/up": Link("../.."),
        },
    )
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_bytes(b"")
    os.mkfifo(ctx / "d" / "fifo")
    with pytest.raises(InvalidInput) as caught:
        manifest(ctx, srcs, exclude)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_socket_in_a_tree_is_refused(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path / "c", {"d/ok": b""})
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ctx / "d" / "sock"))
        with pytest.raises(InvalidInput, match=r"cannot copy 'd/sock': it is a socket"):
            manifest(ctx, ["."], ())


def test_an_excluded_fifo_is_no_trouble(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, {"d/ok": b""})
    os.mkfifo(ctx / "d" / "fifo")
    assert [e.path for e in manifest(ctx, ["d"], ["fifo"])] == ["d", "d/ok"]


def test_a_context_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a directory"):
        manifest(tmp_path / "nope", ["."], ())


# --- plan ----------------------------------------------------------------------------------


def F(path: str, data: bytes = b"", mode: int = FILE_MODE) -> Entry:
    return Entry(path, "file", mode, digest=sha(data))


def D(path: str) -> Entry:
    return Entry(path, "dir", DIR_MODE)


def L(path: str, target: str) -> Entry:
    return Entry(path, "symlink", LINK_MODE, target=target)


ENTRIES = (
    D("."),
    F("README"),
    D("lib"),
    F("lib/a.ml"),
    D("lib/sub"),
    F("lib/sub/b.ml"),
    L("lib/sub/l", "../a.ml"),
    F("run.sh", mode=EXEC_MODE),
)


def placed(members: tuple[TarMember, ...]) -> tuple[list[str], dict[str, str | None]]:
    """The parent dirs, and each placed path with the entry path it comes from."""
    parents = [m.path for m in members if m.source is None]
    return parents, {m.path: m.source.path for m in members if m.source is not None}


@pytest.mark.parametrize(
    ("srcs", "dst", "workdir", "parents", "where"),
    [
        # one file, dst not ending in "/": its new path
        (["README"], "README.md", "/src", ["/src"], {"/src/README.md": "README"}),
        (["README"], "/etc/motd", "/src", ["/etc"], {"/etc/motd": "README"}),
        (["run.sh"], "bin/go", "/", ["/bin"], {"/bin/go": "run.sh"}),
        # one file into a directory
        (["README"], "doc/", "/src", ["/src", "/src/doc"], {"/src/doc/README": "README"}),
        (["README"], ".", "/src", ["/src"], {"/src/README": "README"}),
        (["README"], "./", "/", [], {"/README": "README"}),
        (["README"], "..", "/a/b", ["/a"], {"/a/README": "README"}),
        (["README"], "/", "/src", [], {"/README": "README"}),
        # a symlink is not a directory: copied as itself
        (["lib/sub/l"], "link", "/w", ["/w"], {"/w/link": "lib/sub/l"}),
        # a directory: its contents; without the "/" the directory itself becomes dst
        (
            ["lib/sub"],
            "out",
            "/w",
            ["/w"],
            {"/w/out": "lib/sub", "/w/out/b.ml": "lib/sub/b.ml", "/w/out/l": "lib/sub/l"},
        ),
        (
            ["lib/sub"],
            "/out/",
            "/w",
            ["/out"],
            {"/out/b.ml": "lib/sub/b.ml", "/out/l": "lib/sub/l"},
        ),
        (
            ["lib"],
            "../x",
            "/w/v",
            ["/w"],
            {
                "/w/x": "lib",
                "/w/x/a.ml": "lib/a.ml",
                "/w/x/sub": "lib/sub",
                "/w/x/sub/b.ml": "lib/sub/b.ml",
                "/w/x/sub/l": "lib/sub/l",
            },
        ),
        # the whole context
        (
            ["."],
            "./",
            "/home/u/src",
            ["/home", "/home/u", "/home/u/src"],
            {f"/home/u/src/{e.path}": e.path for e in ENTRIES if e.path != "."},
        ),
        # several sources: dst is a directory even without the "/"
        (
            ["README", "lib/sub", "run.sh"],
            "all",
            "/w",
            ["/w", "/w/all"],
            {
                "/w/all/README": "README",
                "/w/all/b.ml": "lib/sub/b.ml",
                "/w/all/l": "lib/sub/l",
                "/w/all/run.sh": "run.sh",
            },
        ),
    ],
)
def test_plan_places_each_entry(
    srcs: list[str],
    dst: str,
    workdir: str,
    parents: list[str],
    where: dict[str, str],
) -> None:
    members = plan(ENTRIES, srcs, dst, workdir)
    assert placed(members) == (parents, where)
    for member in members:
        assert member.path.startswith("/") and "//" not in member.path
        if member.source is not None:
            assert (member.kind, member.mode) == (member.source.kind, member.source.mode)


def test_plan_puts_parents_first_and_keeps_source_order() -> None:
    members = plan(ENTRIES, ["run.sh", "lib"], "/o/", "/")
    assert [m.path for m in members] == [
        "/o",
        "/o/run.sh",
        "/o/a.ml",
        "/o/sub",
        "/o/sub/b.ml",
        "/o/sub/l",
    ]


def test_plan_takes_guest_sources_absolute() -> None:
    entries = (D("usr/lib/app"), F("usr/lib/app/x"))
    assert plan(entries, ["/usr/lib/app"], "/opt/app/", "/") == plan(
        entries, ["usr/lib/app"], "/opt/app/", "/"
    )


def test_plan_lets_a_later_source_win_a_file_and_shares_directories() -> None:
    entries = (D("a"), D("a/d"), F("a/d/f", b"1"), D("b"), D("b/d"), F("b/d/f", b"2"))
    members = plan(entries, ["a", "b"], "/o/", "/")
    assert [(m.path, m.source and m.source.path) for m in members] == [
        ("/o", None),
        ("/o/d", "a/d"),
        ("/o/d/f", "a/d/f"),
        ("/o/d", "b/d"),
        ("/o/d/f", "b/d/f"),  # later in the tar: extraction keeps this one
    ]


@pytest.mark.parametrize(
    ("entries", "srcs", "dst", "workdir", "message"),
    [
        (
            (D("a"), D("a/x"), F("b/x")),
            ["a", "b/x"],
            "/o/",
            "/",
            "copy destination '/o/x' would be both a dir and a file",
        ),
        ((F("f"),), ["f"], "", "/", "copy destination is empty"),
        ((F("f"),), ["f"], "x", "rel", "workdir 'rel' is not an absolute path"),
        ((F("f"),), ["g"], "x", "/", "copy source 'g' not found"),
    ],
)
def test_plan_refusals(
    entries: tuple[Entry, ...], srcs: list[str], dst: str, workdir: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        plan(entries, srcs, dst, workdir)


# --- the tar, unpacked by GNU tar and by busybox tar ---------------------------------------


@needs_root
def test_context_copy_lands_owned_by_the_user(tmp_path: Path, tool: Tool) -> None:
    ctx = make_tree(tmp_path / "ctx", TREE)
    out = tmp_path / "guest"
    copy(ctx, ["."], "src/", out, tool.env, workdir="/home/u")
    got = snapshot(out)
    u = (UID, GID)
    assert got == {
        "home": ("dir", 0o755, *u),
        "home/u": ("dir", 0o755, *u),
        "home/u/src": ("dir", 0o755, *u),
        "home/u/src/README": ("file", b"readme\n", 0o644, *u),
        "home/u/src/src": ("dir", 0o755, *u),
        "home/u/src/src/main.ml": ("file", MAIN_ML, 0o644, *u),
        "home/u/src/src/run.sh": ("file", b"#!/bin/sh\n", 0o755, *u),
        "home/u/src/src/secret": ("file", b"s", 0o644, *u),
        "home/u/src/src/lib": ("dir", 0o755, *u),
        "home/u/src/src/lib/util.ml": ("file", b"let x = 1\n", 0o644, *u),
        "home/u/src/src/link": ("symlink", "main.ml", *tool.link_owner),
        "home/u/src/src/up": ("symlink", "../README", *tool.link_owner),
    }


@needs_root
def test_existing_parents_are_left_alone(tmp_path: Path, tool: Tool) -> None:
    ctx = make_tree(tmp_path / "ctx", {"d/f": b"x"})
    out = tmp_path / "guest"
    (out / "home").mkdir(parents=True)
    (out / "home").chmod(0o700)
    out.chmod(0o711)
    copy(ctx, ["d"], "/home/u/app/", out, tool.env)
    got = snapshot(out)
    assert got["home"] == ("dir", 0o700, 0, 0)
    assert stat.S_IMODE(out.stat().st_mode) == 0o711 and out.stat().st_uid == 0
    assert got["home/u"] == got["home/u/app"] == ("dir", 0o755, UID, GID)
    assert got["home/u/app/f"] == ("file", b"x", 0o644, UID, GID)


@needs_root
def test_copy_to_the_root_touches_no_existing_directory(tmp_path: Path, tool: Tool) -> None:
    ctx = make_tree(tmp_path / "ctx", {"etc/app.conf": b"k=v", "new/f": b""})
    out = tmp_path / "guest"
    (out / "etc").mkdir(parents=True)
    out.chmod(0o755)
    members = copy(ctx, ["."], "/", out, tool.env)
    assert [m for m in members if m.source is None] == []
    got = snapshot(out)
    assert out.stat().st_uid == 0
    # a directory the copy carries is the copy's, as obuilder's tar does it
    assert got["etc"] == ("dir", 0o755, UID, GID)
    assert got["etc/app.conf"] == ("file", b"k=v", 0o644, UID, GID)
    assert got["new"] == ("dir", 0o755, UID, GID)


@needs_root
def test_a_directory_as_dst_or_into_dst(tmp_path: Path, tool: Tool) -> None:
    # (dst /srv/app): the source directory becomes /srv/app, owner and all, as in obuilder;
    # (dst /srv/app/): its contents go into /srv/app, which keeps its owner and mode.
    ctx = make_tree(tmp_path / "ctx", {"d/f": b"x"})
    for dst, want in (("/srv/app/", ("dir", 0o700, 0, 0)), ("/srv/app", ("dir", 0o755, UID, GID))):
        out = make_tree(tmp_path / dst.replace("/", "_"), {"srv/app/": None})
        (out / "srv" / "app").chmod(0o700)
        copy(ctx, ["d"], dst, out, tool.env)
        got = snapshot(out)
        assert got["srv/app"] == want
        assert got["srv/app/f"] == ("file", b"x", 0o644, UID, GID)


@needs_root
def test_file_to_file_replaces_what_is_there(tmp_path: Path, tool: Tool) -> None:
    ctx = make_tree(tmp_path / "ctx", {"motd": b"hello"})
    out = make_tree(tmp_path / "guest", {"etc/motd": File(b"old", 0o600)})
    copy(ctx, ["motd"], "/etc/motd", out, tool.env)
    assert snapshot(out)["etc/motd"] == ("file", b"hello", 0o644, UID, GID)
    assert snapshot(out)["etc"][-2:] == (0, 0)


@needs_root
def test_several_sources_and_a_later_one_wins(tmp_path: Path, tool: Tool) -> None:
    ctx = make_tree(
        tmp_path / "ctx",
        {"a/conf": b"from a", "a/only-a": b"", "b/conf": b"from b", "one": b"1"},
    )
    out = tmp_path / "guest"
    copy(ctx, ["a", "one", "b"], "opt", out, tool.env, workdir="/srv")
    got = snapshot(out, owners=False)
    assert {k: v for k, v in got.items() if k.startswith("srv/opt/")} == {
        "srv/opt/conf": ("file", b"from b", 0o644),
        "srv/opt/only-a": ("file", b"", 0o644),
        "srv/opt/one": ("file", b"1", 0o644),
    }


@needs_root
def test_a_copied_directory_keeps_a_symlinked_directory(tmp_path: Path, tool: Tool) -> None:
    # Debian's merged /usr: /lib is a symlink; copying a tree with lib/ must not replace it.
    ctx = make_tree(tmp_path / "ctx", {"lib/x.so": b"elf"})
    out = make_tree(tmp_path / "guest", {"usr/lib/": None, "lib": Link("usr/lib")})
    copy(ctx, ["."], "/", out, tool.env)
    assert (out / "lib").is_symlink()
    assert (out / "usr" / "lib" / "x.so").read_bytes() == b"elf"


@needs_root
def test_long_and_unicode_names_survive(tmp_path: Path, tool: Tool) -> None:
    long = "/".join(["d" * 60] * 4) + "/" + "f" * 120
    ctx = make_tree(tmp_path / "ctx", {long: b"deep", "café/ñ": b"u", "l": Link("x" * 150)})
    out = tmp_path / "guest"
    copy(ctx, ["."], "/c/", out, tool.env)
    got = snapshot(out)
    assert got[f"c/{long}"] == ("file", b"deep", 0o644, UID, GID)
    assert got["c/café/ñ"] == ("file", b"u", 0o644, UID, GID)
    assert got["c/l"] == ("symlink", "x" * 150, *tool.link_owner)


def test_extract_command_passes_dirs_relative_to_the_root() -> None:
    argv = extract_command(0, 0, ("/a", "/-b"))
    assert argv[:2] == ["sh", "-c"] and argv[3:] == ["sh", "/", "./a", "./-b"]
    assert "chown 0:0" in argv[2]
    with pytest.raises(InvalidInput):
        extract_command(-1, 0)


def test_tar_is_a_valid_pax_archive_owned_by_numbers(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, TREE)
    members = plan(manifest(ctx, ["src"], ()), ["src"], "/s/", "/")
    data = b"".join(tar_stream(ctx, members, UID, GID))
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == [m.path[1:] for m in members if m.source]
        assert {(i.uid, i.gid, i.uname, i.gname) for i in infos} == {(UID, GID, "", "")}
        assert tar.extractfile("s/run.sh").read() == b"#!/bin/sh\n"  # type: ignore[union-attr]
    listing = subprocess.run(["tar", "-tvf", "-"], input=data, capture_output=True, check=True)
    assert f"{UID}/{GID}" in listing.stdout.decode()


def test_tar_stream_comes_in_bounded_pieces(tmp_path: Path) -> None:
    big = os.urandom(3 * CHUNK + 123)
    ctx = make_tree(tmp_path, {"big": big, "small": b"s"})
    members = plan(manifest(ctx, ["."], ()), ["."], "/x/", "/")
    pieces = list(tar_stream(ctx, members, 0, 0))
    assert len(pieces) >= 3
    assert max(map(len, pieces)) < 2 * CHUNK
    with tarfile.open(fileobj=io.BytesIO(b"".join(pieces))) as tar:
        assert tar.extractfile("x/big").read() == big  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "change",
    [
        lambda ctx: (ctx / "d" / "f").write_bytes(b"other"),
        lambda ctx: (ctx / "d" / "f").unlink(),
        lambda ctx: ((ctx / "d" / "f").unlink(), (ctx / "d" / "f").symlink_to("g")),
        lambda ctx: ((ctx / "d" / "l").unlink(), (ctx / "d" / "l").symlink_to("h")),
        lambda ctx: shutil.rmtree(ctx / "d" / "sub"),
    ],
)
def test_a_change_after_the_manifest_is_caught(tmp_path: Path, change) -> None:
    ctx = make_tree(tmp_path, {"d/f": b"one", "d/g": b"", "d/l": Link("g"), "d/sub/x": b""})
    members = plan(manifest(ctx, ["d"], ()), ["d"], "/x/", "/")
    change(ctx)
    with pytest.raises(InvalidInput, match=r"changed while being copied"):
        b"".join(tar_stream(ctx, members, 0, 0))


def test_a_directory_swapped_for_a_link_out_after_the_manifest_is_caught(tmp_path: Path) -> None:
    """The same bytes outside the context are still not read: the opened file must lie inside."""
    ctx = make_tree(tmp_path / "ctx", {"d/f": b"secret-looking", "e": b""})
    outside = make_tree(tmp_path / "outside", {"f": b"secret-looking"})
    members = plan(manifest(ctx, ["d"], ()), ["d"], "/x/", "/")
    shutil.rmtree(ctx / "d")
    (ctx / "d").symlink_to(outside)
    with pytest.raises(InvalidInput, match=r"'d/f' leads out of the build context"):
        b"".join(tar_stream(ctx, members, 0, 0))


# --- a context copy, walked once -----------------------------------------------------------


def tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_a_context_copy_is_the_manifest_plan_and_tar(tmp_path: Path) -> None:
    ctx = make_tree(tmp_path, TREE)
    walked = ContextCopy.walk(ctx, Copy(("src", "README"), "app/", exclude=("secret",)))
    assert walked.entries == manifest(ctx, ["src", "README"], ["secret"])
    members = plan(walked.entries, ["src", "README"], "app/", "/home/u")
    expected = b"".join(tar_stream(ctx, members, UID, GID))
    assert b"".join(walked.tar("/home/u", UID, GID)) == expected


def test_a_context_copy_tars_only_what_its_walk_found(tmp_path: Path) -> None:
    """A file added after the walk is not in the step's ID, so it is not in its layer."""
    ctx = make_tree(tmp_path, {"d/f": b"one"})
    walked = ContextCopy.walk(ctx, Copy(("d",), "/x/"))
    (ctx / "d" / "late").write_bytes(b"not in the ID")
    assert tar_names(b"".join(walked.tar("/", 0, 0))) == ["x/f"]


@pytest.mark.parametrize(
    "change",
    [
        lambda ctx: (ctx / "d" / "f").write_bytes(b"two"),  # same size, other bytes
        lambda ctx: (ctx / "d" / "f").write_bytes(b"longer"),
        lambda ctx: (ctx / "d" / "f").unlink(),
        lambda ctx: ((ctx / "d" / "l").unlink(), (ctx / "d" / "l").symlink_to("f2")),
    ],
)
def test_a_context_copy_refuses_what_changed_after_its_walk(tmp_path: Path, change) -> None:
    """The tar is checked against the walk the ID was made from: no layer unlike its ID."""
    ctx = make_tree(tmp_path, {"d/f": b"one", "d/l": Link("f")})
    walked = ContextCopy.walk(ctx, Copy(("d",), "/x/"))
    change(ctx)
    with pytest.raises(InvalidInput, match=r"changed while being copied"):
        b"".join(walked.tar("/", 0, 0))


def test_a_context_copy_reads_the_context_it_walked(tmp_path: Path) -> None:
    """The context's real path is resolved once: repointing a symlinked context after the
    walk does not redirect the reads, which stay inside the walked directory."""
    first = make_tree(tmp_path / "first", {"f": b"mine"})
    make_tree(tmp_path / "second", {"f": b"mine"})
    (tmp_path / "ctx").symlink_to(first)
    walked = ContextCopy.walk(tmp_path / "ctx", Copy(("f",), "/f"))
    (tmp_path / "ctx").unlink()
    (tmp_path / "ctx").symlink_to(tmp_path / "second")
    (first / "f").write_bytes(b"edit")
    with pytest.raises(InvalidInput, match=r"'f' changed while being copied"):
        b"".join(walked.tar("/", 0, 0))


# --- from a child build: export, manifest, retarget ----------------------------------------

GUEST: dict[str, Node] = {
    "home/opam/app/_build/default/main.exe": File(b"\x7fELF", 0o755),
    "home/opam/app/_build/default/main.ml": b"src",
    "home/opam/app/_build/log": b"log",
    "home/opam/app/.git/HEAD": b"ref",
    "home/opam/app/doc/.git": b"gitfile",
    "home/opam/app/doc/index.html": File(b"<html>", 0o600),
    "home/opam/app/doc/x.o": b"obj",
    "home/opam/app/bin": Link("_build/default/main.exe"),
    "home/opam/app/-dash": b"dash",
    "etc/app.conf": b"k=v",
    "usr/bin/": None,
}
GUEST_SRCS = ["/home/opam/app", "etc/app.conf", "/usr/bin"]
EXCLUDE = (".git", "*.o", "log")


def export(root: Path, srcs: list[str], exclude: tuple[str, ...], env: Mapping[str, str]) -> bytes:
    proc = sh(guest_export_command(srcs, exclude, root=str(root)), env)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_export_manifest_equals_the_context_manifest(tmp_path: Path, tool: Tool) -> None:
    guest = make_tree(tmp_path / "child", GUEST)
    os.link(guest / "etc/app.conf", guest / "home/opam/app/hard")
    entries = manifest_from_tar(io.BytesIO(export(guest, GUEST_SRCS, EXCLUDE, tool.env)))
    rel = [s.lstrip("/") for s in GUEST_SRCS]
    assert entries == manifest(guest, rel, EXCLUDE)
    by_path = {e.path: e for e in entries}
    assert by_path["home/opam/app/hard"].digest == sha(b"k=v")
    assert "home/opam/app/_build/log" not in by_path
    assert "home/opam/app/doc/.git" not in by_path


@needs_root
def test_from_build_copy_lands_like_a_context_copy(tmp_path: Path, tool: Tool) -> None:
    guest = make_tree(tmp_path / "child", GUEST)
    os.link(guest / "etc/app.conf", guest / "home/opam/app/hard")
    data = export(guest, GUEST_SRCS, EXCLUDE, tool.env)
    moved = b"".join(retarget_tar(io.BytesIO(data), GUEST_SRCS, "dist/", "/root", UID, GID))
    unpack(moved, tmp_path / "a", tool.env, parent_dirs(GUEST_SRCS, "dist/", "/root"))
    rel = [s.lstrip("/") for s in GUEST_SRCS]
    copy(guest, rel, "dist/", tmp_path / "b", tool.env, exclude=EXCLUDE, workdir="/root")
    got = snapshot(tmp_path / "a")
    assert got == snapshot(tmp_path / "b")
    assert got["root/dist/_build/default/main.exe"] == ("file", b"\x7fELF", 0o755, UID, GID)
    assert got["root/dist/app.conf"] == ("file", b"k=v", 0o644, UID, GID)
    assert got["root/dist/-dash"] == ("file", b"dash", 0o644, UID, GID)
    a = tmp_path / "a" / "root" / "dist"
    assert (a / "hard").stat().st_ino == (a / "app.conf").stat().st_ino  # stays a hard link


@needs_root
def test_from_build_symlinks_may_point_anywhere_in_the_guest(tmp_path: Path, tool: Tool) -> None:
    # In the child's disk "/" is the guest's own root: an absolute target stays inside it.
    guest = make_tree(
        tmp_path / "child", {"app/env": Link("/usr/bin/env"), "app/up": Link("../..")}
    )
    data = export(guest, ["/app"], (), tool.env)
    entries = manifest_from_tar(io.BytesIO(data))
    assert [e.target for e in entries] == [None, "/usr/bin/env", "../.."]
    moved = b"".join(retarget_tar(io.BytesIO(data), ["/app"], "/x/", "/", UID, GID))
    unpack(moved, tmp_path / "out", tool.env, ("/x",))
    assert (tmp_path / "out/x/env").readlink() == Path("/usr/bin/env")


def test_export_of_a_missing_source_fails_naming_it(tmp_path: Path, tool: Tool) -> None:
    guest = make_tree(tmp_path / "child", {"etc/x": b""})
    proc = sh(guest_export_command(["/etc/x", "/opt/nope"], (), root=str(guest)), tool.env)
    assert proc.returncode == 2
    assert "copy source /opt/nope not found" in proc.stderr.decode()


def test_export_of_a_symlink_source_is_the_symlink(tmp_path: Path, tool: Tool) -> None:
    guest = make_tree(tmp_path / "child", {"usr/lib/x": b"", "lib": Link("usr/lib")})
    entries = manifest_from_tar(io.BytesIO(export(guest, ["/lib"], (), tool.env)))
    assert entries == (Entry("lib", "symlink", LINK_MODE, target="usr/lib"),)
    # ...but a path through it is followed, as in the context
    entries = manifest_from_tar(io.BytesIO(export(guest, ["/lib/x"], (), tool.env)))
    assert entries == (Entry("lib/x", "file", FILE_MODE, digest=sha(b"")),)


def test_a_long_export_comes_as_several_archives(tmp_path: Path, tool: Tool) -> None:
    # Past xargs's command-line limit, so tar runs more than once: archives back to back.
    names = {f"big/{'n' * 150}{i:05}": b"%d" % i for i in range(1500)}
    guest = make_tree(tmp_path / "child", names)
    data = export(guest, ["/big"], (), tool.env)
    with tarfile.open(fileobj=io.BytesIO(data)) as first:  # stops at the first end marker
        assert len(first.getmembers()) < 1501
    entries = manifest_from_tar(io.BytesIO(data))
    assert len(entries) == 1501


def tar_of(*infos: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in infos:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.mode = kind, linkname, 0o644
    return i


@pytest.mark.parametrize(
    ("members", "error", "message"),
    [
        ([(info("../x"), b"")], GuestError, "the export holds '../x', which escapes /"),
        ([(info("a/../../x"), b"")], GuestError, "which escapes /"),
        ([(info("/etc/passwd"), b"")], GuestError, "'/etc/passwd', which escapes /"),
        (
            [(info("h", tarfile.LNKTYPE, "nowhere"), b"")],
            GuestError,
            "hard link 'h' points to 'nowhere'",
        ),
        (
            [(info("f"), b""), (info("h", tarfile.LNKTYPE, "../f"), b"")],
            GuestError,
            "escapes /",
        ),
        ([(info("p", tarfile.FIFOTYPE), b"")], InvalidInput, "cannot copy 'p': it is a fifo"),
        ([(info("c", tarfile.CHRTYPE), b"")], InvalidInput, "'c': it is a character device"),
    ],
)
def test_manifest_from_tar_refuses(members, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        manifest_from_tar(tar_of(*members))


def test_manifest_from_tar_reads_names_as_exported() -> None:
    d = info("./srv/", tarfile.DIRTYPE)
    entries = manifest_from_tar(tar_of((d, b""), (info("./srv/f"), b"x"), (info("srv//g"), b"")))
    assert [e.path for e in entries] == ["srv", "srv/f", "srv/g"]


def test_a_cut_short_export_is_refused() -> None:
    data = tar_of((info("f"), b"x" * 5000)).getvalue()[:3000]
    with pytest.raises(GuestError):
        manifest_from_tar(io.BytesIO(data))


@pytest.mark.parametrize(
    ("members", "srcs", "error", "message"),
    [
        ([(info("a/f"), b""), (info("b"), b"")], ["/a"], GuestError, "'b', which is under no"),
        ([(info("a/../../x"), b"")], ["/a"], GuestError, "which escapes /"),
        ([(info("a", tarfile.DIRTYPE), b"")], ["/a", "/b"], InvalidInput, "'/b' is not in the"),
        (
            [(info("a/h", tarfile.LNKTYPE, "a/gone"), b"")],
            ["/a"],
            GuestError,
            "hard link 'a/h' points to 'a/gone'",
        ),
        ([(info("a/p", tarfile.FIFOTYPE), b"")], ["/a"], InvalidInput, "'a/p': it is a fifo"),
        (
            [(info("a/x", tarfile.DIRTYPE), b""), (info("b/x"), b"")],
            ["/a", "/b"],
            InvalidInput,
            "copy destination '/o/x' would be both a dir and a file",
        ),
    ],
)
def test_retarget_refuses(members, srcs: list[str], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        b"".join(retarget_tar(tar_of(*members), srcs, "/o/", "/", 0, 0))


def test_retarget_owns_and_normalises_everything() -> None:
    f = info("srv/f")
    f.mode, f.uid, f.gid, f.uname = 0o4750, 7, 8, "someone"
    d = info("srv/d", tarfile.DIRTYPE)
    d.mode = 0o700
    export = tar_of((info("srv", tarfile.DIRTYPE), b""), (d, b""), (f, b"data"))
    moved = b"".join(retarget_tar(export, ["/srv"], "/opt/x", "/", UID, GID))
    with tarfile.open(fileobj=io.BytesIO(moved)) as tar:
        got = [(i.name, i.mode, i.uid, i.gid, i.uname) for i in tar.getmembers()]
        assert tar.extractfile("opt/x/f").read() == b"data"  # type: ignore[union-attr]
    assert got == [
        ("opt/x", DIR_MODE, UID, GID, ""),
        ("opt/x/d", DIR_MODE, UID, GID, ""),
        ("opt/x/f", EXEC_MODE, UID, GID, ""),
    ]


# --- properties ----------------------------------------------------------------------------

NAMES = st.text(alphabet="ab.-_é ", min_size=1, max_size=3).filter(lambda n: n not in (".", ".."))
LEAVES = st.one_of(
    st.binary(max_size=64),
    st.builds(File, st.binary(max_size=64), st.sampled_from([0o644, 0o600, 0o755, 0o700])),
    st.builds(Link, NAMES),  # relative, so inside the tree (dangling is fine)
)
TREES = st.recursive(
    st.dictionaries(NAMES, LEAVES, max_size=4),
    lambda sub: st.dictionaries(NAMES, st.one_of(LEAVES, sub), max_size=4),
    max_leaves=20,
)


def flatten(tree: dict, prefix: str = "") -> dict[str, Node]:
    out: dict[str, Node] = {}
    for name, node in tree.items():
        if isinstance(node, dict):
            out[f"{prefix}{name}/"] = None
            out.update(flatten(node, f"{prefix}{name}/"))
        else:
            out[f"{prefix}{name}"] = node
    return out


@given(TREES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_equal_trees_give_equal_manifests_whatever_the_creation_order(tree: dict) -> None:
    flat = flatten(tree)
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        a = make_tree(Path(one) / "ctx", flat)
        b = make_tree(Path(two) / "ctx", dict(reversed(flat.items())))
        first = manifest(a, ["."], ())
        assert first == manifest(a, ["."], ()) == manifest(b, ["."], ())
        assert [e.path for e in first] == sorted(
            (e.path for e in first), key=lambda p: () if p == "." else tuple(p.split("/"))
        )
        # the host's GNU tar of the tree reads back as the same manifest
        tar = subprocess.run(["tar", "-c", "-f", "-", "-C", str(a), "."], capture_output=True)
        assert manifest_from_tar(io.BytesIO(tar.stdout)) == first


@needs_root
@given(TREES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_copied_tree_unpacks_to_itself(tree: dict) -> None:
    flat = flatten(tree)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_tree(Path(tmp) / "ctx", flat)
        out = Path(tmp) / "out"
        copy(ctx, ["."], "/t/", out, {"PATH": "/usr/bin:/bin"})
        got = snapshot(out / "t")
        want = {
            path: (
                (*what[:-1], EXEC_MODE if what[-1] & 0o111 else FILE_MODE, UID, GID)
                if what[0] == "file"
                else (what[0], DIR_MODE, UID, GID)
                if what[0] == "dir"
                else (*what, UID, GID)
            )
            for path, what in snapshot(ctx, owners=False).items()
        }
        assert got == want


DSTS = st.sampled_from(["out", "out/", ".", "./", "/", "../up", "/abs/x", "/abs/x/"])


@given(TREES, DSTS, st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_retarget_puts_things_where_plan_does(tree: dict, dst: str, data: st.DataObject) -> None:
    tops = sorted(tree)
    srcs = data.draw(
        st.just(["."]) | st.lists(st.sampled_from(tops), min_size=1, unique=True)
        if tops
        else st.just(["."])
    )
    with tempfile.TemporaryDirectory() as tmp:
        ctx = make_tree(Path(tmp) / "ctx", flatten(tree))
        args = ["tar", "-c", "-f", "-", "-C", str(ctx), *(f"./{s}" for s in srcs)]
        exported = subprocess.run(args, capture_output=True, check=True).stdout
        moved = retarget_tar(io.BytesIO(exported), srcs, dst, "/w/d", UID, GID)
        try:
            members = plan(manifest(ctx, srcs, ()), srcs, dst, "/w/d")
        except InvalidInput as exc:  # a clash: retarget refuses it too
            assert "would be both" in str(exc)
            with pytest.raises(InvalidInput, match="would be both"):
                b"".join(moved)
            return
        with tarfile.open(fileobj=io.BytesIO(b"".join(moved))) as tar:
            got = sorted((i.name, i.type, i.mode, i.linkname, i.size) for i in tar)
        types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
        want = sorted(
            (
                m.path[1:],
                types[m.kind],
                m.mode,
                m.source.target or "",
                (ctx / m.source.path).stat().st_size if m.kind == "file" else 0,
            )
            for m in members
            if m.source is not None
        )
        assert got == want
