"""The tiny test guest: Debian's cloud kernel plus a busybox + dropbear initramfs.

This module owns building that guest from Debian packages (downloaded with apt, cached by version,
unpacked with dpkg-deb): resolving the packages, picking the kernel modules and dropbear's shared
libraries, writing the initramfs (cpio newc, gzip) and a blank qcow2 root disk. What the guest does
at boot lives in `tiny-init.sh`, installed as its /etc/init.d/rcS.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import re
import shutil
import stat
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corral.errors import CorralError
from corral.image.recipes.built import BuiltImage
from corral.run import run

KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
USERLAND_PACKAGES = ("busybox-static", "dropbear-bin")
MODULES = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "virtio_console", "isofs", "button",
    "evdev",
)  # fmt: skip
CMDLINE = "console=ttyS0 quiet"
DROPBEAR_BINARIES = ("usr/sbin/dropbear", "usr/bin/dropbearkey")
# setpriv switches to a numeric uid:gid for build steps; busybox has no applet that can.
EXTRA_PACKAGES = ("util-linux", "libcap-ng0")
BINARIES = (*DROPBEAR_BINARIES, "usr/bin/setpriv")

KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.gz"
DISK_NAME = "disk.qcow2"
STAMP_NAME = "stamp.json"
APT_LISTS = Path("/var/lib/apt/lists")

# Small files of the guest's root; the bring-up script is tiny-init.sh.
STATIC_FILES: dict[str, tuple[int, str]] = {
    "etc/inittab": (
        0o644,
        "::sysinit:/etc/init.d/rcS\n"
        "ttyS0::respawn:-/bin/sh\n"
        "::ctrlaltdel:/sbin/poweroff\n"
        "::shutdown:/bin/sync\n",
    ),
    "etc/passwd": (0o644, "root:*:0:0:root:/root:/bin/sh\n"),
    "etc/group": (0o644, "root:x:0:\ntty:x:5:\n"),
    "etc/shells": (0o644, "/bin/sh\n/bin/ash\n"),
    "etc/nsswitch.conf": (0o644, "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
    "etc/profile": (
        0o644,
        "export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\nPS1='\\h:\\w\\$ '\n",
    ),
    "etc/acpi/PWRF/00000080": (0o755, "#!/bin/sh\nsync\npoweroff -f\n"),
    # Build specs written for obuilder run their commands with /bin/bash -c by default.
    "bin/bash": (0o755, '#!/bin/sh\nexec /bin/sh "$@"\n'),
    # Each NIC's resolver settings (static ones, or udhcpc's) are in /run/net/resolv.NIC.
    "sbin/corral-resolv": (
        0o755,
        "#!/bin/sh\n"
        "# corral tiny guest: merge /run/net/resolv.* into /etc/resolv.conf.\n"
        "search=$(echo $(sed -n 's/^search //p' /run/net/resolv.* 2>/dev/null))\n"
        '{ [ -n "$search" ] && echo "search $search"\n'
        "  grep -h '^nameserver ' /run/net/resolv.* 2>/dev/null; } >/etc/.resolv.conf.tmp\n"
        "mv /etc/.resolv.conf.tmp /etc/resolv.conf\n",
    ),
}
# Scripts beside this module, installed into the guest: the bring-up (busybox init's rcS), the
# network-config reader, udhcpc's hook and the guest agent (qemu-ga's protocol, as corral uses it).
GUEST_SCRIPTS: dict[str, tuple[str, int]] = {
    "tiny-init.sh": ("etc/init.d/rcS", 0o755),
    "tiny-net.sh": ("sbin/corral-net", 0o755),
    "tiny-netconfig.awk": ("usr/share/corral/netconfig.awk", 0o644),
    "tiny-udhcpc.sh": ("usr/share/udhcpc/default.script", 0o755),
    "tiny-agent.sh": ("sbin/corral-agent", 0o755),
    "tiny-agent.awk": ("usr/share/corral/agent.awk", 0o644),
}
EMPTY_DIRS = ("proc", "sys", "dev", "run", "tmp", "mnt", "root", "var/log")


@dataclass(frozen=True)
class Package:
    """One Debian package at the version apt would install."""

    name: str
    version: str
    arch: str

    @property
    def deb_name(self) -> str:
        """The file name `apt-get download` gives it (an epoch's ':' is escaped as %3a)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def build_tiny_guest(
    workdir: Path, *, cache_dir: Path, disk_size: int = 256 << 20, root_on_disk: bool = False
) -> BuiltImage:
    """Build the tiny test guest into workdir; downloaded .debs are cached in cache_dir.

    By default the guest runs from its initramfs and the disk is blank. With root_on_disk the
    same root filesystem is an ext4 on the disk and a small initramfs only loads the drivers
    and switches to it: what the guest writes then persists, which builds need.

    A workdir already holding a build from the same package versions (and the same builder) is
    returned as it is; its stamp.json records what it was built from.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    image = BuiltImage(
        disk=workdir / DISK_NAME,
        disk_format="qcow2",
        kernel=workdir / KERNEL_NAME,
        initrd=workdir / INITRD_NAME,
        cmdline=CMDLINE,
        default_user="root",
    )
    stamp_path = workdir / STAMP_NAME
    with _locked(workdir / ".lock"):
        old = json.loads(_read(stamp_path) or "{}")
        built = all(p.exists() for p in _outputs(image))
        inputs = {"builder": builder_digest(), "disk_size": disk_size, "apt": _apt_digest(),
                  "root_on_disk": root_on_disk}  # fmt: skip
        if built and _matches(old, inputs):
            return image  # apt's lists have not changed since, so neither have the versions
        kernel = _kernel_package_name()
        packages = _resolve(
            [kernel, USERLAND_PACKAGES[0], *_depends_closure(USERLAND_PACKAGES[1]),
             *EXTRA_PACKAGES]
        )  # fmt: skip
        inputs["packages"] = {p.name: p.version for p in packages}
        if not (built and _matches(old, inputs, ignore="apt")):
            stamp_path.unlink(missing_ok=True)
            debs = _download(packages, cache_dir)
            with tempfile.TemporaryDirectory(dir=workdir, prefix=".build-") as tmp:
                _build(Path(tmp), debs, kernel, image, disk_size, root_on_disk)
        _write_atomic(stamp_path, json.dumps(inputs, indent=1).encode())
    return image


def _build(
    tmp: Path,
    debs: dict[str, Path],
    kernel: str,
    image: BuiltImage,
    disk_size: int,
    root_on_disk: bool,
) -> None:
    """Unpack the packages under tmp and write kernel, initrd and disk into place."""
    kernel_root, userland, root = tmp / "kernel", tmp / "userland", tmp / "root"
    _extract(debs.pop(kernel), kernel_root)
    for deb in debs.values():
        _extract(deb, userland)
    release = kernel.removeprefix("linux-image-")
    moddir = kernel_root / "lib" / "modules" / release
    assert image.kernel and image.initrd
    _copy_atomic(kernel_root / "boot" / f"vmlinuz-{release}", image.kernel)
    _populate_root(root, userland, moddir)
    disk_tmp = image.disk.with_name(f".{image.disk.name}.tmp")
    try:
        if root_on_disk:
            loader = tmp / "loader"
            _populate_loader(loader, userland, moddir)
            initramfs = _cpio(loader)
            raw = tmp / "root.ext4"
            size = f"{disk_size // 1024}k"  # a bare number would count blocks
            run(["mkfs.ext4", "-q", "-F", "-L", "tinyroot", "-d", root, raw, size],
                timeout=300)  # fmt: skip
            run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, disk_tmp],
                timeout=300)  # fmt: skip
        else:
            initramfs = _cpio(root)
            run(["qemu-img", "create", "-q", "-f", "qcow2", disk_tmp, str(disk_size)])
        _write_atomic(image.initrd, gzip.compress(initramfs, compresslevel=6, mtime=0))
        disk_tmp.replace(image.disk)
    finally:
        disk_tmp.unlink(missing_ok=True)


LOADER = """#!/bin/busybox sh
# corral tiny guest, root on disk: load the drivers, mount /dev/vda, switch to it.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
while read -r module; do
    /bin/busybox insmod "/lib/modules/$module.ko"
done </lib/modules/load-order
if ! /bin/busybox mount -t ext4 -o rw /dev/vda /newroot; then
    echo "corral-tiny: cannot mount the root filesystem on /dev/vda"
    exec /bin/busybox sh
fi
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox umount /proc /sys
exec /bin/busybox switch_root /newroot /sbin/init
"""


def _populate_loader(loader: Path, userland: Path, moddir: Path) -> None:
    """The initramfs of a root-on-disk guest: busybox, the drivers and the switch."""
    for name in ("proc", "sys", "dev", "newroot", "bin"):
        (loader / name).mkdir(parents=True, exist_ok=True)
    _install(userland / "bin" / "busybox", loader / "bin" / "busybox", 0o755)
    order = _module_load_order(moddir, MODULES)
    for name, path in order:
        _install(path, loader / "lib" / "modules" / f"{name}.ko", 0o644)
    (loader / "lib" / "modules" / "load-order").write_text("".join(f"{n}\n" for n, _ in order))
    _write_file(loader / "init", LOADER, 0o755)


def _populate_root(root: Path, userland: Path, moddir: Path) -> None:
    """Lay out the initramfs tree: busybox and its applets, dropbear, modules, config."""
    for name in EMPTY_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    busybox = userland / "bin" / "busybox"
    _install(busybox, root / "bin" / "busybox", 0o755)
    for applet in run([busybox, "--list-full"]).stdout.decode().split():
        link = root / applet
        if not (link.is_symlink() or link.exists()):  # bin/busybox is listed too
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    (root / "init").symlink_to("/bin/busybox")  # busybox init, reading /etc/inittab
    for rel in [*BINARIES, *_shared_libraries(userland)]:
        _install(userland / rel, root / rel, 0o755)
    for rel in BINARIES:  # a real binary wins over a busybox applet of the same name
        for applet_dir in ("bin", "sbin", "usr/bin", "usr/sbin"):
            link = root / applet_dir / Path(rel).name
            if link.is_symlink() and str(link.readlink()) == "/bin/busybox":
                link.unlink()
    (root / "lib64").mkdir(exist_ok=True)
    (root / "lib64" / "ld-linux-x86-64.so.2").symlink_to(
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    order = _module_load_order(moddir, MODULES)
    for name, path in order:
        _install(path, root / "lib" / "modules" / f"{name}.ko", 0o644)
    (root / "lib" / "modules" / "load-order").write_text("".join(f"{n}\n" for n, _ in order))
    for rel, (mode, text) in STATIC_FILES.items():
        _write_file(root / rel, text, mode)
    for name, (rel, mode) in GUEST_SCRIPTS.items():
        _write_file(root / rel, _guest_script(name), mode)
    (root / "root").chmod(0o700)


# --- apt -------------------------------------------------------------------------------------


def _kernel_package_name() -> str:
    """The versioned kernel package the cloud kernel meta package points at."""
    out = run(["apt-cache", "depends", KERNEL_META_PACKAGE], timeout=60).stdout.decode()
    for line in out.splitlines():
        kind, _, name = line.strip().partition(" ")
        if kind == "Depends:" and name.startswith("linux-image-"):
            return name
    raise CorralError(
        f"{KERNEL_META_PACKAGE} depends on no linux-image package",
        hint="run apt-get update, and check /etc/apt/sources.list has Debian's main archive",
    )


def _depends_closure(package: str) -> list[str]:
    """package and, recursively, every package it depends on (no recommends or virtuals)."""
    skip = ["--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks"]
    skip += ["--no-replaces", "--no-enhances"]
    out = run(["apt-cache", "depends", "--recurse", *skip, package], timeout=60).stdout.decode()
    return [line for line in out.splitlines() if line and line[0] not in " <"]


def _resolve(names: Iterable[str]) -> list[Package]:
    """Candidate version and architecture of each package, from apt-cache show."""
    out = run(["apt-cache", "show", "--no-all-versions", *names], timeout=60).stdout.decode()
    packages = []
    for stanza in out.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.MULTILINE))
        if "Package" in fields:
            packages.append(Package(fields["Package"], fields["Version"], fields["Architecture"]))
    return sorted(set(packages), key=lambda p: p.name)


def _download(packages: list[Package], cache_dir: Path) -> dict[str, Path]:
    """Make sure each package's .deb is in cache_dir, downloading only the missing ones."""
    missing = [p for p in packages if not (cache_dir / p.deb_name).exists()]
    if missing:
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
            argv = ["apt-get", "download", *(f"{p.name}={p.version}" for p in missing)]
            run(argv, cwd=Path(tmp), timeout=900)
            for p in missing:
                (Path(tmp) / p.deb_name).replace(cache_dir / p.deb_name)
    return {p.name: cache_dir / p.deb_name for p in packages}


def _extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", deb, dest], timeout=300)


# --- what goes into the initramfs ------------------------------------------------------------


def _shared_libraries(userland: Path) -> list[str]:
    """Paths (relative to userland) of the libraries the binaries need, the loader included."""
    libdirs = [userland / d for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")]
    env = {"LD_LIBRARY_PATH": ":".join(map(str, libdirs))}
    found = {"lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"}
    for binary in BINARIES:
        out = run(["ldd", userland / binary], env=env).stdout.decode()
        for line in out.splitlines():
            match = re.search(r"=>\s*(\S+)", line)
            if match is None:
                continue  # the vdso and the loader
            path = Path(match.group(1))
            if not path.is_relative_to(userland):
                raise CorralError(f"{binary} needs {line.strip()}, not in the downloaded packages")
            found.add(str(path.relative_to(userland)))
    return sorted(found)


def _module_load_order(moddir: Path, wanted: Iterable[str]) -> list[tuple[str, Path]]:
    """The wanted modules and their dependencies, each after what it depends on.

    The .deb ships no modules.dep (depmod writes it at install time), so dependencies come from
    the `depends=` field modpost wrote into each module's .modinfo section (what modinfo shows).
    """
    index = {p.name.removesuffix(".ko").replace("-", "_"): p for p in moddir.rglob("*.ko")}
    builtin = (moddir / "modules.builtin").read_text().split()
    builtin_names = {Path(b).name.removesuffix(".ko").replace("-", "_") for b in builtin}
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin_names:
            return
        seen.add(name)
        if name not in index:
            raise CorralError(f"kernel module {name} is not in {moddir} (compressed modules?)")
        for dep in _modinfo(index[name].read_bytes()).get("depends", "").split(","):
            if dep:
                visit(dep.replace("-", "_"))
        order.append((name, index[name]))

    for name in wanted:
        visit(name)
    return order


def _modinfo(elf: bytes) -> dict[str, str]:
    """The key=value strings of an ELF64 kernel module's .modinfo section."""
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize
        )
        return name, offset, size

    strtab = section(shstrndx)[1]
    for i in range(shnum):
        name, offset, size = section(i)
        if elf[strtab + name : elf.index(b"\0", strtab + name)] == b".modinfo":
            fields = (f.decode(errors="replace") for f in elf[offset : offset + size].split(b"\0"))
            return dict(f.split("=", 1) for f in fields if "=" in f)
    return {}


def _guest_script(name: str) -> str:
    return resources.files("corral.image.recipes").joinpath(name).read_text()


# --- cpio newc -------------------------------------------------------------------------------


def _cpio(root: Path) -> bytes:
    """A newc archive of the tree under root, owned by root:root, plus /dev/console."""
    out = io.BytesIO()
    entries: list[tuple[str, int, bytes, int]] = [
        ("dev/console", stat.S_IFCHR | 0o600, b"", 5 << 8 | 1)
    ]
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            entries.append((rel, st.st_mode, str(path.readlink()).encode(), 0))
        elif stat.S_ISDIR(st.st_mode):
            entries.append((rel, st.st_mode, b"", 0))
        else:
            entries.append((rel, st.st_mode, path.read_bytes(), 0))
    entries.sort(key=lambda e: e[0])
    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        _cpio_entry(out, ino, name, mode, data, rdev)
    _cpio_entry(out, 0, "TRAILER!!!", 0, b"", 0)
    return out.getvalue()


def _cpio_entry(out: io.BytesIO, ino: int, name: str, mode: int, data: bytes, rdev: int) -> None:
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name) + 1, 0)
    out.write(b"070701" + "".join(f"{f:08X}" for f in fields).encode() + name.encode() + b"\0")
    out.write(b"\0" * (-out.tell() % 4))
    out.write(data)
    out.write(b"\0" * (-out.tell() % 4))


# --- files -----------------------------------------------------------------------------------


def builder_digest() -> str:
    """A digest of this builder's code and the guest's scripts: change any, and it rebuilds."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for name in GUEST_SCRIPTS:
        digest.update(_guest_script(name).encode())
    return digest.hexdigest()


def _apt_digest() -> str:
    """A digest of apt's package lists: while it holds, apt's candidate versions hold too."""
    digest = hashlib.sha256()
    for path in sorted(APT_LISTS.glob("*_*")):  # the lists, not lock or partial/
        st = path.stat()
        digest.update(f"{path.name} {st.st_size} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _matches(stamp: dict[str, object], inputs: dict[str, object], ignore: str = "") -> bool:
    return all(stamp.get(key) == value for key, value in inputs.items() if key != ignore)


def _outputs(image: BuiltImage) -> list[Path]:
    return [p for p in (image.disk, image.kernel, image.initrd) if p is not None]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _install(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():  # never write through a link: its target is a path on this host
        dest.unlink()
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def _write_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on path, so concurrent builds of one workdir take turns."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
