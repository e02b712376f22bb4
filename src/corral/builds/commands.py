"""The shell scripts a build step runs in the guest, as root: pure functions of the step.

A `run` step's script mounts the step's caches and secrets, raises the network if asked,
enters the workdir, drops to the spec's user with exactly the spec's environment, runs the
command through the spec's shell, and undoes its mounts and network whatever the exit status.
Everything is POSIX sh with tools both Debian and busybox have (plus util-linux's setpriv).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from corral.builds.spec import NamedUser, Run, UnixUser, User
from corral.builds.steps import StepContext
from corral.machine.argv import OUTSIDE_MAC

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETPRIV = "/usr/bin/setpriv"  # util-linux's, in every Debian (and in the tiny guest)
SECRETS_DIR = "/run/corral-secrets"  # a tmpfs: secrets never reach a disk layer

q = shlex.quote


@dataclass(frozen=True)
class CacheMount:
    name: str
    serial: str  # the virtio serial of its disk
    target: str


def user_ids(user: User | None) -> str:
    """Shell that sets U and G (numeric) for the step's user; root when there is none."""
    if user is None:
        return "U=0; G=0"
    if isinstance(user, UnixUser):
        return f"U={user.uid}; G={user.gid}"
    name = q(user.name)
    return (
        f"U=$(id -u {name}) && G=$(id -g {name}) || "
        f'{{ echo "corral: no user {user.name} in the image" >&2; exit 125; }}'
    )


def _home(user: User | None) -> str:
    if user is None:
        return "/root"
    if isinstance(user, NamedUser):
        return f"$(awk -F: -v u={q(user.name)} '$1 == u {{ print $6 }}' /etc/passwd)"
    return "/"


def _drop(user: User | None) -> str:
    """The argv prefix that becomes the spec's user (nothing for root)."""
    if user is None:
        return ""
    groups = "--init-groups" if isinstance(user, NamedUser) else "--clear-groups"
    # By path: busybox's shell may prefer its own (weaker) setpriv applet to the one on PATH.
    return f'{SETPRIV} --reuid="$U" --regid="$G" {groups} -- '


def _cache_lines(caches: Sequence[CacheMount]) -> tuple[list[str], list[str]]:
    up, down = [], []
    for cache in caches:
        target = q(cache.target)
        up.append(_device_by_serial(cache.serial))
        up.append(
            f'[ -n "$dev" ] || {{ echo "corral: cache {cache.name} not attached" >&2; exit 125; }}'
        )
        up.append(f"mkdir -p {target}")
        # Formatted on first use: a disk that does not mount is a new cache.
        up.append(
            f'if ! mount "$dev" {target} 2>/dev/null; then'
            f' (mkfs.ext4 -q -F "$dev" 2>/dev/null || mke2fs "$dev" >/dev/null) &&'
            f' mount "$dev" {target} && chown "$U:$G" {target}; fi'
        )
        down.append(f"umount {target} 2>/dev/null")
    return up, down


def _secret_lines(run: Run) -> tuple[list[str], list[str]]:
    up, down = [], []
    for index, secret in enumerate(run.secrets):
        target = q(secret.target)
        source = f"{SECRETS_DIR}/{index}"
        up.append(f"mkdir -p $(dirname {target})")
        up.append(f"[ -e {target} ] || {{ : > {target}; created_{index}=1; }}")
        up.append(f'chown "$U:$G" {source} && mount -o bind,ro {source} {target}')
        down.append(
            f'umount {target} 2>/dev/null; [ -n "${{created_{index}:-}}" ] && rm -f {target}'
        )
        down.append(f"rm -f {source}")
    return up, down


NETWORK_UP = f"""\
nic=$(for i in /sys/class/net/*; do
    [ "$(cat $i/address)" = {OUTSIDE_MAC} ] && echo ${{i##*/}}; done)
routes=$(ip route show default)
ip link set "$nic" up && ip addr add 10.0.3.15/24 dev "$nic" 2>/dev/null
ip route del default 2>/dev/null; ip route add default via 10.0.3.2 dev "$nic\""""

NETWORK_DOWN = """\
ip route del default via 10.0.3.2 2>/dev/null; ip addr flush dev "$nic"; ip link set "$nic" down
[ -n "$routes" ] && ip route add $routes 2>/dev/null"""


def run_script(step_ctx: StepContext, run: Run, caches: Sequence[CacheMount]) -> str:
    """The whole script of a `run` step (as root)."""
    cache_up, cache_down = _cache_lines(caches)
    secret_up, secret_down = _secret_lines(run)
    network = "host" in run.network
    env = " ".join(f"{q(k)}={q(v)}" for k, v in step_ctx.env)
    command = " ".join(q(a) for a in (*step_ctx.shell, run.shell))
    lines = [
        "set -u",
        user_ids(step_ctx.user),
        "cleanup() {",
        *(
            f"  {line}"
            for line in [*cache_down, *secret_down, *([NETWORK_DOWN] if network else [])]
        ),
        "  :",
        "}",
        "trap cleanup EXIT",
        *cache_up,
        *secret_up,
        *([NETWORK_UP] if network else []),
        f"mkdir -p {q(step_ctx.workdir)} && cd {q(step_ctx.workdir)} || exit 125",
        f'{_drop(step_ctx.user)}env -i HOME="{_home(step_ctx.user)}" PATH={PATH} {env} {command}',
    ]
    return "\n".join(lines) + "\n"


def stage_secret_script(index: int) -> str:
    """Read one secret from stdin into the tmpfs (before the step script runs)."""
    return (
        f"mkdir -p {SECRETS_DIR} && (grep -q ' {SECRETS_DIR} ' /proc/mounts ||"
        f" mount -t tmpfs -o mode=700 tmpfs {SECRETS_DIR}) && umask 077 &&"
        f" cat > {SECRETS_DIR}/{index}"
    )


def extract_script(user: User | None, extract: Sequence[str]) -> str:
    """A `copy` step: resolve the user's ids, then extract the tar on stdin (as root)."""
    return f"set -u\n{user_ids(user)}\n{shlex.join(extract)}\n"


def _device_by_serial(serial: str) -> str:
    """Shell that sets dev to the /dev node of the virtio disk with this serial (or empty)."""
    return (
        f'dev=$(for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = {q(serial)} ]'
        " && echo /dev/${d##*/}; done)"
    )


def resumed_script(cache_serials: Sequence[str], epoch_s: int) -> str:
    """What a build VM restored from a warm state runs first (as root, random bytes on stdin).

    Its clock stood still since the save: set it. Every VM restored from one state had the same
    random pool: mix in what stdin brings. Its block cache may still hold what it read of the
    blank disks that stood in for the caches at the save: drop that before a step mounts one
    (BLKFLSBUF; failing that, every clean page).
    """
    lines = [
        f"date -u -s @{int(epoch_s)} >/dev/null 2>&1 || true",
        "cat > /dev/urandom",
    ]
    for serial in cache_serials:
        lines.append(_device_by_serial(serial))
        lines.append(
            '[ -z "$dev" ] || blockdev --flushbufs "$dev" 2>/dev/null ||'
            " { sync; echo 3 > /proc/sys/vm/drop_caches; }"
        )
    return "\n".join(lines) + "\n"
