"""Build the Debian cloud image (`corral image build debian-12`) from Debian's signed packages.

This module owns the recipe: which packages make a corral guest, how the root tree is set up for
cloud-init (NoCloud seed on a virtio-blk disk) and for direct kernel boot, and how the tree becomes
a qcow2 disk plus the kernel and initrd beside it. It uses no loop mounts and no bootloader:
mmdebstrap fills a directory, `mkfs.ext4 -d` turns it into an unpartitioned ext4 filesystem (so
cloud-init's resizefs can grow it online to whatever size the instance's disk is), and qemu-img
wraps that in qcow2.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from corral.errors import CommandFailed, CorralError, MissingDependency
from corral.image.recipes.built import BuiltImage
from corral.run import require, run

_log = logging.getLogger("corral.image.recipes.debian")

DEFAULT_USER = "debian"
ROOT_LABEL = "rootfs"
DISK_SIZE = "2G"  # virtual size of the image; instances grow it at first boot
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
BOOTSTRAP_TIMEOUT = 1200.0  # seconds; about one minute here, much longer on a slow mirror
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# The root disk is always the first virtio-blk disk. net.ifnames=0 makes the first NIC eth0, a name
# a network-config can rely on: cloud-init 22.4 ignores `match: {name: "e*"}` globs and configures
# an interface named after the config's key instead (match by macaddress, or use the key eth0).
CMDLINE = "root=/dev/vda rw rootfstype=ext4 console=ttyS0,115200n8 net.ifnames=0"

# ifupdown + isc-dhcp-client is what Debian 12's own cloud images use: cloud-init 22.4 renders
# /etc/network/interfaces.d/50-cloud-init for it (ENI renderer) before networking.service starts.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "linux-image-cloud-amd64",
    "initramfs-tools",  # MODULES=most: the initrd carries virtio_pci, virtio_blk, virtio_net
    "cloud-init",
    "cloud-guest-utils",  # growpart
    "e2fsprogs",  # resize2fs for cloud-init's resizefs
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "netbase",
    "openssh-server",
    # Warm launches make a restored clone its own machine through the guest agent (on the
    # virtio-serial port org.qemu.guest_agent.0; udev starts it when the port appears).
    "qemu-guest-agent",
    "sudo",
    "locales",  # cloud-init's locale module fails without a generated en_US.UTF-8
    "ca-certificates",
    "procps",
    "less",
)

# Documentation is not needed to build or boot; leaving it out saves time and space. Only the
# build uses these: the image's own dpkg keeps Debian's defaults.
DPKG_BUILD_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "force-unsafe-io",
)

CLOUD_CFG = f"""\
# Written by corral: the seed is a NoCloud `cidata` volume on a virtio-blk disk.
datasource_list: [NoCloud, None]
manage_etc_hosts: localhost
# An RSA host key costs ~5 s of emulated CPU on the way to SSH; every current client speaks these.
ssh_genkeytypes: [ed25519, ecdsa]
grub_dpkg:  # booted without a bootloader
  enabled: false
system_info:
  default_user:
    name: {DEFAULT_USER}
    lock_passwd: true
    gecos: Debian
    groups: [adm, sudo]
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
    shell: /bin/bash
"""

SSHD_HOST_KEYS = """\
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
"""

# cloud-init creates the host keys before ssh starts; this only covers a boot where it did not,
# so that the serial console is not the only way in.
SSH_HOST_KEYS_DROPIN = """\
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || exec ssh-keygen -A'
ExecStartPre=/usr/sbin/sshd -t
"""

CONFIG_FILES = {
    "etc/fstab": "/dev/vda / ext4 rw,discard,errors=remount-ro 0 0\n",
    "etc/hostname": "localhost\n",
    "etc/locale.gen": "en_US.UTF-8 UTF-8\n",
    "etc/default/locale": "LANG=en_US.UTF-8\n",
    "etc/cloud/cloud.cfg.d/90-corral.cfg": CLOUD_CFG,
    "etc/ssh/sshd_config.d/corral-host-keys.conf": SSHD_HOST_KEYS,
    "etc/systemd/system/ssh.service.d/corral-host-keys.conf": SSH_HOST_KEYS_DROPIN,
}

# Per-instance identity, the build host's resolver, and the build-only dpkg options.
REMOVE_GLOBS = (
    "etc/ssh/ssh_host_*",
    "etc/resolv.conf",
    "var/lib/dbus/machine-id",
    "etc/dpkg/dpkg.cfg.d/99mmdebstrap",
)

DISK_NAME = "disk.qcow2"
KERNEL_NAME = "vmlinuz"
INITRD_NAME = "initrd.img"


def build_debian(
    workdir: Path,
    *,
    release: str = "bookworm",
    mirror: str = "http://deb.debian.org/debian",
    packages: Sequence[str] = (),
    apt_cache: Path | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> BuiltImage:
    """Build a Debian cloud image with mmdebstrap into workdir."""
    _check_host()
    workdir.mkdir(parents=True, exist_ok=True)
    rootfs = _make_rootfs_dir(workdir)
    temps = {name: workdir / f".{name}.tmp" for name in (DISK_NAME, KERNEL_NAME, INITRD_NAME)}
    raw = workdir / ".root.ext4.tmp"
    try:
        log(f"bootstrapping Debian {release} from {mirror}")
        _bootstrap(rootfs, release, mirror, [*PACKAGES, *packages], apt_cache)
        log("configuring the root filesystem for cloud-init")
        _configure(rootfs)
        log("copying out the kernel and initrd")
        _copy_boot_files(rootfs, temps[KERNEL_NAME], temps[INITRD_NAME])
        log(f"making a {DISK_SIZE} ext4 filesystem from the tree")
        _make_ext4(rootfs, raw)
        log("converting to qcow2")
        _convert_to_qcow2(raw, temps[DISK_NAME])
        for name, tmp in temps.items():
            tmp.replace(workdir / name)
    finally:
        raw.unlink(missing_ok=True)
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        _discard_rootfs(rootfs)
    log("done")
    return BuiltImage(
        disk=workdir / DISK_NAME,
        disk_format="qcow2",
        kernel=workdir / KERNEL_NAME,
        initrd=workdir / INITRD_NAME,
        cmdline=CMDLINE,
        default_user=DEFAULT_USER,
    )


def _check_host() -> None:
    """Fail before any work if a host tool is missing (naming its package) or we are not root."""
    require("mmdebstrap", package="mmdebstrap")
    require("mkfs.ext4", package="e2fsprogs")
    require("qemu-img", package="qemu-utils")
    if not KEYRING.is_file():
        raise MissingDependency(
            f"{KEYRING} not found", hint="install it: apt-get install debian-archive-keyring"
        )
    if os.geteuid() != 0:
        raise CorralError(
            "building the Debian image needs root (mmdebstrap --mode=root)", hint="run it as root"
        )


def _make_rootfs_dir(workdir: Path) -> Path:
    """An empty directory for mmdebstrap; it becomes the filesystem's / so it must be 0755."""
    rootfs = Path(tempfile.mkdtemp(prefix=".rootfs-", dir=workdir))
    rootfs.chmod(0o755)
    return rootfs


def _bootstrap(
    rootfs: Path, release: str, mirror: str, packages: Sequence[str], apt_cache: Path | None
) -> None:
    """Install the packages into rootfs with mmdebstrap, verified against Debian's keyring."""
    argv: list[str | Path] = [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--format=directory",
        f"--include={','.join(packages)}",
        *(f"--dpkgopt={option}" for option in DPKG_BUILD_OPTIONS),
        *(_apt_cache_options(apt_cache) if apt_cache else []),
        release,
        rootfs,
        *_sources(release, mirror),
    ]
    try:
        run(argv, timeout=BOOTSTRAP_TIMEOUT)
    except CommandFailed as exc:
        # mmdebstrap's last words are "E: mmdebstrap failed to run"; apt's first error says why.
        cause = next((line for line in exc.stderr.splitlines() if line.startswith("E: ")), None)
        hint = f"mmdebstrap reported {cause!r}; check the mirror and release" if cause else None
        raise CommandFailed(exc.argv, exc.returncode, exc.stderr, hint=hint) from exc


def _sources(release: str, mirror: str) -> list[str]:
    """The release plus its updates and security suites, so the image starts patched."""
    if release in ("sid", "unstable"):
        return [f"deb {mirror} {release} main"]
    return [
        f"deb {mirror} {release} main",
        f"deb {mirror} {release}-updates main",
        f"deb {SECURITY_MIRROR} {release}-security main",
    ]


def _apt_cache_options(apt_cache: Path) -> list[str]:
    """Hooks that seed apt's archive dir from apt_cache and save new downloads back to it."""
    apt_cache.mkdir(parents=True, exist_ok=True)
    cache = shlex.quote(os.fspath(apt_cache.resolve()))
    archives = '"$1/var/cache/apt/archives"'  # $1 is the rootfs in mmdebstrap's hooks
    return [
        "--skip=download/empty",  # let apt start from the seeded .debs
        "--skip=essential/unlink",  # keep the essential .debs so they are saved too
        f"--setup-hook=mkdir -p {archives} && {_copy_debs(cache, archives)}",
        f"--customize-hook={_copy_debs(archives, cache, only_newer=True)}",
    ]


def _copy_debs(source: str, target: str, *, only_newer: bool = False) -> str:
    """A shell command copying the .deb files in source (a shell word) into target."""
    update = " -u" if only_newer else ""
    return f"find {source} -maxdepth 1 -name '*.deb' -exec cp -p{update} -t {target} {{}} +"


def _configure(rootfs: Path) -> None:
    """Write corral's configuration, generate the locale, and strip per-instance identity."""
    for relative, content in CONFIG_FILES.items():
        path = rootfs / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for pattern in REMOVE_GLOBS:
        for path in rootfs.glob(pattern):
            path.unlink()
    (rootfs / "etc/machine-id").write_text("")  # empty: systemd makes a fresh one at first boot
    run(["chroot", rootfs, "locale-gen"], timeout=120)


def _copy_boot_files(rootfs: Path, kernel: Path, initrd: Path) -> None:
    """Copy the one installed kernel and its initrd out of /boot for direct kernel boot."""
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise CorralError(f"expected one kernel in /boot, found {len(kernels)}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    shutil.copyfile(kernels[0], kernel)
    shutil.copyfile(rootfs / "boot" / f"initrd.img-{version}", initrd)


def _make_ext4(rootfs: Path, raw: Path) -> None:
    """Make an unpartitioned ext4 filesystem image populated from the tree (no loop mount)."""
    raw.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", rootfs, raw, DISK_SIZE], timeout=600)


def _convert_to_qcow2(raw: Path, disk: Path) -> None:
    """Wrap the filesystem in qcow2 keeping only the blocks in use; zstd makes it a third."""
    argv = ["qemu-img", "convert", "-c", "-o", "compression_type=zstd", "-f", "raw", "-O", "qcow2"]
    run([*argv, raw, disk], timeout=600)


def _discard_rootfs(rootfs: Path) -> None:
    """Delete the tree, but never through a mount an interrupted mmdebstrap may have left."""
    for mountpoint in _mounts_below(rootfs):
        run(["umount", "--lazy", mountpoint], check=False, timeout=60)
    if _mounts_below(rootfs):
        _log.warning("leaving %s in place: something is still mounted below it", rootfs)
        return
    shutil.rmtree(rootfs, ignore_errors=True)


def _mounts_below(path: Path) -> list[str]:
    """Mount points at or below path, deepest first."""
    prefix = os.fspath(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape_mountinfo(line.split()[4])
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, reverse=True)


def _unescape_mountinfo(field: str) -> str:
    r"""Undo mountinfo's octal escapes (\040 for a space, and so on)."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="replace")
