"""Making a clone restored from a saved memory state its own machine.

A warm clone wakes up as its template: same hostname, machine-id, SSH host keys, authorized
keys, clock, DHCP lease, MAC addresses and kernel random state. This module holds what the
clone should be instead (`CloneIdentity`, made by `new_identity`: host keys are generated here
on the host, where it is fast) and renders the POSIX sh script that makes it so inside the guest
(`render_script`, pure), which `reidentify` runs through the guest agent. The script works on
the tiny test guest (busybox, dropbear, udhcpc) and on corral's Debian image (openssh,
ifupdown with dhclient); every value in it is either validated here, shell-quoted, or carried
as base64, so nothing in an identity or a user-data is ever parsed as shell by the guest's sh.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import posixpath
import re
import shlex
import struct
import tarfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from corral.errors import GuestError, InvalidInput
from corral.guest.reseed import reseed_program
from corral.guest.ssh_keys import KEY_PREFIXES
from corral.guest.userdata import WarmUserData, WriteFile, parse_user_data
from corral.seed.netconfig import NicConfig

_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_INSTANCE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_MACHINE_ID_RE = re.compile(r"[0-9a-f]{32}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
HOST_KEY_TYPES = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa"}
ENTROPY_BYTES = 64


@dataclass(frozen=True)
class HostKey:
    """One SSH host key pair, made on the host."""

    algorithm: str  # a key of HOST_KEY_TYPES
    private: bytes  # an unencrypted OpenSSH private key file
    public: str  # its public key line ("ssh-ed25519 AAAA...")

    def __post_init__(self) -> None:
        if self.algorithm not in HOST_KEY_TYPES:
            raise InvalidInput(f"unsupported host key type {self.algorithm!r}")
        if not self.public.startswith(self.algorithm + " ") or "\n" in self.public:
            raise InvalidInput(f"invalid {self.algorithm} public key")

    @property
    def kind(self) -> str:
        """The file-name part: ssh_host_{kind}_key."""
        return HOST_KEY_TYPES[self.algorithm]


@dataclass(frozen=True)
class NicIdentity:
    """A NIC of the clone, in the guest's NIC order (eth0, eth1, ...)."""

    mac: str
    addresses: tuple[str, ...] = ()  # CIDRs; () = DHCP
    gateway4: str | None = None
    gateway6: str | None = None
    nameservers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _MAC_RE.fullmatch(self.mac):
            raise InvalidInput(f"invalid MAC address {self.mac!r}: expected e.g. 52:54:00:12:34:56")
        try:
            for cidr in self.addresses:
                ipaddress.ip_interface(cidr)
            for addr in (self.gateway4, self.gateway6, *self.nameservers):
                if addr is not None:
                    ipaddress.ip_address(addr)
        except ValueError as exc:
            raise InvalidInput(f"invalid address for NIC {self.mac}: {exc}") from None
        if self.gateway4 and ipaddress.ip_address(self.gateway4).version != 4:
            raise InvalidInput(f"gateway4 {self.gateway4} is not an IPv4 address")
        if self.gateway6 and ipaddress.ip_address(self.gateway6).version != 6:
            raise InvalidInput(f"gateway6 {self.gateway6} is not an IPv6 address")

    @property
    def dhcp(self) -> bool:
        return not self.addresses

    @classmethod
    def from_config(cls, nic: NicConfig) -> NicIdentity:
        """The same NIC as the launch's network-config describes it (search and MTU aside:
        the clone keeps the template's)."""
        return cls(nic.mac, nic.addresses, nic.gateway4, nic.gateway6, nic.nameservers)


@dataclass(frozen=True)
class CloneIdentity:
    """Everything that makes a clone its own machine, ready to be rendered into a script."""

    hostname: str
    instance_id: str
    user: str  # the default user, whose authorized_keys are replaced (root in the tiny guest)
    authorized_keys: tuple[str, ...]
    machine_id: str  # 32 lower-case hex
    host_keys: tuple[HostKey, ...]  # one of each type of HOST_KEY_TYPES, ed25519 first
    epoch_ns: int  # the clock to set (reidentify takes it again just before sending)
    entropy: bytes  # mixed into the guest's pool, then a forced reseed
    nics: tuple[NicIdentity, ...] = ()
    user_data: bytes | None = None  # the launch's user-data (see corral.guest.userdata)
    warm_user_data: WarmUserData = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _HOSTNAME_RE.fullmatch(self.hostname):
            raise InvalidInput(f"invalid hostname {self.hostname!r}")
        if not _INSTANCE_ID_RE.fullmatch(self.instance_id):
            raise InvalidInput(f"invalid instance id {self.instance_id!r}")
        if not _USER_RE.fullmatch(self.user):
            raise InvalidInput(f"invalid user name {self.user!r}")
        if not _MACHINE_ID_RE.fullmatch(self.machine_id) or not self.machine_id.strip("0"):
            raise InvalidInput(f"invalid machine-id {self.machine_id!r}: 32 lower-case hex")
        for key in self.authorized_keys:
            if not key.startswith(KEY_PREFIXES) or any(c in key for c in "\r\n\0"):
                raise InvalidInput(f"invalid ssh public key {key[:40]!r}")
        if [k.algorithm for k in self.host_keys] != list(HOST_KEY_TYPES):
            raise InvalidInput(f"host keys must be one of each of {', '.join(HOST_KEY_TYPES)}")
        if len(self.entropy) < 32:
            raise InvalidInput("entropy: at least 32 bytes")
        # Checked now, so that a bad user-data is refused before anything is restored.
        object.__setattr__(self, "warm_user_data", parse_user_data(self.user_data))


def new_identity(
    *,
    hostname: str,
    instance_id: str,
    user: str,
    authorized_keys: Iterable[str],
    nics: Sequence[NicIdentity] = (),
    user_data: bytes | None = None,
) -> CloneIdentity:
    """A fresh identity: a new machine-id, new host keys, fresh entropy, the clock now."""
    return CloneIdentity(
        hostname=hostname,
        instance_id=instance_id,
        user=user,
        authorized_keys=tuple(authorized_keys),
        machine_id=uuid.uuid4().hex,
        host_keys=tuple(generate_host_key(alg) for alg in HOST_KEY_TYPES),
        epoch_ns=time.time_ns(),
        entropy=os.urandom(ENTROPY_BYTES),
        nics=tuple(nics),
        user_data=user_data,
    )


def generate_host_key(algorithm: str) -> HostKey:
    """A new host key pair of this type, in OpenSSH's formats."""
    import asyncssh  # heavy import, only when a clone is made

    key = asyncssh.generate_private_key(algorithm)
    public = key.export_public_key("openssh").decode().split()
    return HostKey(algorithm, key.export_private_key("openssh"), " ".join(public[:2]))


def dropbear_ed25519_key(openssh_private: bytes) -> bytes:
    """The same ed25519 key in dropbear's own private key format.

    dropbear 2022 cannot read OpenSSH's format (only dropbearconvert can): its file is the
    string "ssh-ed25519" then a string of the 32-byte seed followed by the 32-byte public key
    (buf_put_ed25519_priv_key). Those come from the unencrypted openssh-key-v1 file.
    """
    lines = openssh_private.decode().strip().splitlines()
    if lines[:1] != ["-----BEGIN OPENSSH PRIVATE KEY-----"]:
        raise InvalidInput("not an OpenSSH private key")
    blob = base64.b64decode("".join(lines[1:-1]))
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        raise InvalidInput("not an openssh-key-v1 private key")
    fields, rest = _ssh_strings(blob[len(magic) :], 3)  # cipher, kdf, kdf options
    if fields[:2] != [b"none", b"none"]:
        raise InvalidInput("an encrypted private key")
    (count,) = struct.unpack(">I", rest[:4])
    if count != 1:
        raise InvalidInput("expected one key in the private key file")
    (_public, private), _ = _ssh_strings(rest[4:], 2)
    (kind, _pub, pair), _ = _ssh_strings(private[8:], 3)  # after the two check words
    if kind != b"ssh-ed25519" or len(pair) != 64:
        raise InvalidInput("not an ed25519 private key")
    return _ssh_string(b"ssh-ed25519") + _ssh_string(pair)


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _ssh_strings(data: bytes, count: int) -> tuple[list[bytes], bytes]:
    out = []
    for _ in range(count):
        if len(data) < 4:
            raise InvalidInput("truncated private key")
        (n,) = struct.unpack(">I", data[:4])
        if len(data) < 4 + n:
            raise InvalidInput("truncated private key")
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out, data


# --- the script ----------------------------------------------------------------------------

# Everything runs inside main(), called with stdin from /dev/null: the script itself arrives on
# sh's stdin (`sh -s`), and no command in it may read the rest of it as its input.
PRELUDE = r"""#!/bin/sh
# Written by corral: make this restored clone its own machine. Run as root by the guest agent.
set -u
umask 022
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
LOG=/var/log/corral-identity.log
say() { echo "corral-identity: $*" >&2; }
die() { say "$*"; exit 1; }
has() { command -v "$1" >/dev/null 2>&1; }
put() { # FILE MODE, base64 on stdin: FILE replaced at once (a temporary file beside it, mv)
    tmp="$1.corral-tmp.$$"
    rm -f "$tmp" # made new below (noclobber): never written through a link, never readable
    if (umask 077 && set -C && base64 -d >"$tmp") && chmod "$2" "$tmp" && mv -f "$tmp" "$1"
    then return 0; fi
    rm -f "$tmp"
    die "cannot write $1"
}
reseed() { # force the kernel's CRNG to reseed now (RNDRESEEDCRNG): it would wait up to 60 s
    "$work/reseed" 2>/dev/null && return 0 # x86-64 only; elsewhere: not executable, python3
    if has python3; then
        python3 -c 'import fcntl, os; fcntl.ioctl(os.open("/dev/urandom", os.O_WRONLY), 0x5207)' &&
            return 0
    fi
    die "cannot reseed the kernel's random pool"
}
restart_ssh() { # the SSH server must serve the new host keys
    if [ -f /run/dropbear.pid ] && has dropbear; then
        # dropbear reads its host key once, when it starts: it is started again
        if read -r old </run/dropbear.pid && kill "$old" 2>/dev/null; then
            tries=0
            while kill -0 "$old" 2>/dev/null && [ "$tries" -lt 100 ]; do
                sleep 0.05
                tries=$((tries + 1))
            done
        fi
        dropbear -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid \
            </dev/null >>"$LOG" 2>&1 || die "dropbear did not start again"
        return 0
    fi
    # OpenSSH before 9.8 re-executes itself for each connection, and that process reads the
    # host keys: nothing to restart (re-executing the listener costs a TCG guest a fifth of a
    # second, under the first connection). From 9.8 the listener reads them and hands them to
    # sshd-session: it re-executes itself on SIGHUP.
    for session in /usr/lib/*/sshd-session /usr/libexec/*/sshd-session /usr/libexec/sshd-session; do
        [ -x "$session" ] && break
    done
    [ -x "$session" ] || return 0
    if [ -f /run/sshd.pid ] && read -r pid </run/sshd.pid && kill -HUP "$pid" 2>/dev/null; then
        : # no systemctl: its `sshd -t` and the restart cost a second of a TCG guest's CPU
    elif has systemctl && [ -d /run/systemd/system ]; then
        { systemctl restart ssh.service || systemctl restart sshd.service; } >>"$LOG" 2>&1 ||
            die "cannot restart the ssh service"
    fi
}
set_hostname() { # NAME: the kernel's, through its /proc file (no process), else hostname(1)
    { printf '%s' "$1" >/proc/sys/kernel/hostname; } 2>/dev/null || hostname "$1" ||
        die 'cannot set the hostname'
}
set_hosts() { # NAME at 127.0.1.1 in /etc/hosts: its first such line, later ones dropped
    name=$1 out='' found='' nl='
'
    if [ -f /etc/hosts ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            set -f
            set -- $line # the fields, split as awk would
            set +f
            if [ "${1-}" = 127.0.1.1 ]; then
                [ -n "$found" ] || out="${out}127.0.1.1	${name}${nl}"
                found=1
            else
                out="${out}${line}${nl}"
            fi
        done </etc/hosts
    fi
    [ -n "$found" ] || out="${out}127.0.1.1	${name}${nl}"
    printf '%s' "$out" >/etc/hosts || die "cannot write /etc/hosts"
}
user_entry() { # USER: its uid, gid and home, from /etc/passwd (else NSS, through getent)
    uid='' gid='' home=''
    if [ -f /etc/passwd ]; then
        while IFS=: read -r who _pw u g _gecos h _shell || [ -n "$who" ]; do
            if [ "$who" = "$1" ]; then
                uid=$u gid=$g home=$h
                break
            fi
        done </etc/passwd
    fi
    if [ -z "$uid" ] && has getent && entry=$(getent passwd "$1"); then
        rest=${entry#*:*:} && uid=${rest%%:*} && rest=${rest#*:} && gid=${rest%%:*}
        rest=${rest#*:*:} && home=${rest%%:*} # name:password:uid:gid:gecos:home:shell
    fi
    case $uid in '' | *[!0-9]*) die "there is no user $1 in this guest" ;; esac
    case $gid in '' | *[!0-9]*) die "user $1 has no numeric group" ;; esac
}
renew_nic() { # DEV MAC: the template's DHCP client stopped, the new MAC, no address left
    [ -e "/sys/class/net/$1" ] || die "no network interface $1"
    # The template's DHCP clients end (no release: the lease is not ours to give back). Not
    # `dhclient -x`: it runs dhclient-script, a second and a half of a TCG guest's CPU.
    for pidfile in "/run/net/udhcpc.$1.pid" "/run/dhclient.$1.pid" "/run/dhclient6.$1.pid"; do
        [ -f "$pidfile" ] && read -r pid <"$pidfile" && kill "$pid" 2>/dev/null
    done
    # The template's leases, and the DUID ifupdown's `dhclient -I` keeps beside them: a DHCP
    # server that knows clients by that identifier would give every clone the same address.
    rm -f "/run/net/udhcpc.$1.pid" "/run/dhclient.$1.pid" "/run/dhclient6.$1.pid" \
        "/var/lib/dhcp/dhclient.$1.leases" "/var/lib/dhcp/dhclient6.$1.leases" \
        "/run/net/lease.$1" "/run/net/resolv.$1" "/run/net/resolv.static.$1"
    ip link set dev "$1" down
    ip link set dev "$1" address "$2" || die "cannot set the MAC address of $1"
    ip addr flush dev "$1" # the link-local IPv6 address too: the kernel makes one from the MAC
    ip link set dev "$1" up || die "cannot bring $1 up"
}
dhcp() { # DEV HOSTNAME
    if has dhclient; then
        mkdir -p /var/lib/dhcp
        dhclient -4 -pf "/run/dhclient.$1.pid" -lf "/var/lib/dhcp/dhclient.$1.leases" "$1" \
            </dev/null >>"$LOG" 2>&1 || die "no DHCP lease on $1"
    elif has udhcpc; then
        mkdir -p /run/net
        set -- "$1" "$2" /usr/share/udhcpc/default.script
        udhcpc -i "$1" -s "$3" -p "/run/net/udhcpc.$1.pid" -x "hostname:$2" -b -t 10 -T 1 -A 3 -S \
            </dev/null >>"$LOG" 2>&1 || die "no DHCP lease on $1"
    else
        die "no DHCP client (dhclient or udhcpc) in this guest"
    fi
}
"""

END = "CORRAL_END"  # here-documents end here; base64 never holds it


def render_script(identity: CloneIdentity) -> bytes:
    """The POSIX sh script that makes the guest into this identity (run as root, `sh -s`).

    Each process the script starts costs a TCG guest ~50 ms, so the files it writes travel as
    one tar archive (see `bundle`), unpacked by two processes and moved into place by one `mv`
    per directory, and the shell's builtins do the rest where they can.
    """
    q = shlex.quote
    body: list[str] = [
        f'work=$(mktemp -d {WORK_TEMPLATE}) || die "cannot make a work directory"',
        "trap 'rm -rf \"$work\"' EXIT",
        "base64 -d <<'CORRAL_END' | tar -x -C \"$work\" || die 'cannot unpack the identity files'",
        _b64(bundle(identity)),
        "CORRAL_END",
        "",
        "# The clock, then the kernel's random pool: new bytes mixed in, and a reseed from them.",
        f"date -u -s @{identity.epoch_ns // 10**9} >/dev/null || die 'cannot set the clock'",
        f"printf '{_octal(identity.entropy)}' >/dev/urandom || die 'cannot write /dev/urandom'",
        "reseed",
        "",
        "# Who it is: machine-id, hostname, instance id.",
        'mv -f "$work/machine-id" "$work/hostname" /etc/ ||',
        '    die "cannot write /etc/machine-id and /etc/hostname"',
        "if [ -f /var/lib/dbus/machine-id ] && [ ! -L /var/lib/dbus/machine-id ]; then",
        "    cp /etc/machine-id /var/lib/dbus/machine-id || die 'cannot write its D-Bus copy'",
        "fi",
        f"set_hostname {q(identity.hostname)}",
        f"set_hosts {q(identity.hostname)}",
        "if [ -f /run/instance-id ]; then",
        '    mv -f "$work/instance-id" /run/instance-id || die "cannot write /run/instance-id"',
        "fi",
        "",
        *_host_key_lines(),
        "",
        *_authorized_keys_lines(identity),
        "restart_ssh",
        "",
        *_network_lines(identity),
        "",
        *_user_data_lines(identity.warm_user_data),
    ]
    main = "main() {\n" + "".join(f"{line}\n" for line in _indent(body)) + "}\n"
    return (PRELUDE + main + 'main "$@" </dev/null\n').encode()


# Beside most of what it replaces (a rename within /etc's filesystem replaces a file at once).
WORK_TEMPLATE = "/etc/.corral-identity.XXXXXX"


def bundle_files(identity: CloneIdentity) -> dict[str, tuple[bytes, int]]:
    """What the script unpacks into its work directory: name -> (content, mode)."""
    ed25519 = next(k for k in identity.host_keys if k.algorithm == "ssh-ed25519")
    files = {
        "reseed": (reseed_program(), 0o700),
        "machine-id": (f"{identity.machine_id}\n".encode(), 0o444),
        "hostname": (f"{identity.hostname}\n".encode(), 0o644),
        "instance-id": (f"{identity.instance_id}\n".encode(), 0o644),
        "dropbear/dropbear_ed25519_host_key": (dropbear_ed25519_key(ed25519.private), 0o600),
        "authorized_keys": ("".join(f"{k}\n" for k in identity.authorized_keys).encode(), 0o600),
    }
    for key in identity.host_keys:
        files[f"ssh/ssh_host_{key.kind}_key"] = (key.private, 0o600)
        files[f"ssh/ssh_host_{key.kind}_key.pub"] = (f"{key.public}\n".encode(), 0o644)
    files.update((name, (resolv, 0o644)) for name, resolv in _resolv_files(identity).items())
    return files


def _resolv_files(identity: CloneIdentity) -> dict[str, bytes]:
    """The resolver files of the NICs with static nameservers: `resolv.static.ethN` for each
    (the tiny guest's corral-resolv merges them), and `resolv.conf` with all of them."""
    files: dict[str, bytes] = {}
    servers: list[str] = []
    for index, nic in enumerate(identity.nics):
        if nic.nameservers and not nic.dhcp:
            servers += nic.nameservers
            files[f"resolv.static.eth{index}"] = _nameservers(nic.nameservers)
    if servers:
        files["resolv.conf"] = _nameservers(dict.fromkeys(servers))
    return files


def _nameservers(servers: Iterable[str]) -> bytes:
    return "".join(f"nameserver {s}\n" for s in servers).encode()


def bundle(identity: CloneIdentity) -> bytes:
    """bundle_files as a ustar archive (busybox's tar and GNU tar read it), owned by root,
    dated at the identity's clock: the same identity gives the same bytes."""
    out = io.BytesIO()
    mtime = identity.epoch_ns // 10**9
    files = bundle_files(identity)
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for directory in sorted({name.split("/")[0] for name in files if "/" in name}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, mtime
            archive.addfile(info)
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, mtime
            archive.addfile(info, io.BytesIO(content))
        end = out.tell()  # the members; then tarfile's two zero blocks and record padding
    # Both tars stop at the two zero blocks: the record's padding (up to 10 KiB) is not sent.
    return out.getvalue()[: end + 2 * tarfile.BLOCKSIZE]


def _indent(lines: list[str]) -> list[str]:
    """Lines indented one level, but not a here-document's text or its end marker."""
    out, inside = [], False
    for line in lines:
        if inside:
            out.append(line)
            inside = line != END
        else:
            out.append(f"    {line}" if line else line)
            inside = line.endswith(f"<<'{END}'") or f"<<'{END}' " in line
    return out


def _octal(data: bytes) -> str:
    """data as printf's octal escapes: binary bytes written by the shell's own printf."""
    return "".join(f"\\{byte:03o}" for byte in data)


def _b64(data: bytes) -> str:
    text = base64.b64encode(data).decode()
    return "\n".join(text[i : i + 76] for i in range(0, len(text), 76))


def _base64_into(command: str, data: bytes, error: str) -> list[str]:
    """command (which reads base64 on its stdin) fed data through a here-document."""
    return [f"{command} <<'CORRAL_END' || die {shlex.quote(error)}", _b64(data), "CORRAL_END"]


def _put(path: str, data: bytes, mode: int) -> list[str]:
    return [f"put {shlex.quote(path)} {mode:o} <<'CORRAL_END'", _b64(data), "CORRAL_END"]


def _host_key_lines() -> list[str]:
    return [
        "# New SSH host keys: none of the template's is left.",
        "if has dropbear; then",
        "    mkdir -p /etc/dropbear && rm -f /etc/dropbear/*_host_key &&",
        '        mv -f "$work/dropbear/dropbear_ed25519_host_key" /etc/dropbear/ ||',
        "        die 'cannot replace the dropbear host key'",
        "fi",
        "if [ -d /etc/ssh ] && has sshd; then",
        "    rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub &&",
        '        mv -f "$work"/ssh/ssh_host_* /etc/ssh/ || die "cannot replace the ssh host keys"',
        "fi",
    ]


def _authorized_keys_lines(identity: CloneIdentity) -> list[str]:
    user = identity.user  # a validated user name
    return [
        f"# {user}'s authorized keys: the launch's, in place of the template's.",
        f"user_entry {user}",
        f"[ -d \"$home\" ] || die 'the home directory of {user} is missing'",
        '[ ! -L "$home/.ssh" ] || die "$home/.ssh is a symbolic link"',
        'if [ ! -d "$home/.ssh" ]; then  # else the template\'s, which its sshd accepted',
        '    mkdir -m 700 "$home/.ssh" && chown -h "$uid:$gid" "$home/.ssh" ||',
        '        die "cannot make $home/.ssh"',
        "fi",
        'chown -h "$uid:$gid" "$work/authorized_keys" &&',
        '    mv -f "$work/authorized_keys" "$home/.ssh/authorized_keys" ||',
        '    die "cannot write $home/.ssh/authorized_keys"',
    ]


def _network_lines(identity: CloneIdentity) -> list[str]:
    q = shlex.quote
    lines = ["# The network: each NIC gets its MAC address and a new lease or its static address."]
    resolv = _resolv_files(identity)
    for index, nic in enumerate(identity.nics):
        dev = f"eth{index}"
        lines.append(f"renew_nic {dev} {nic.mac}")
        if nic.dhcp:
            lines.append(f"dhcp {dev} {q(identity.hostname)}")
            continue
        for cidr in nic.addresses:
            lines.append(f"ip addr add {q(cidr)} dev {dev} || die 'cannot add {cidr} to {dev}'")
        if nic.gateway4:
            lines.append(f"ip route replace default via {nic.gateway4} dev {dev} || die 'no route'")
        if nic.gateway6:
            lines.append(
                f"ip -6 route replace default via {nic.gateway6} dev {dev} || die 'no route'"
            )
        if f"resolv.static.{dev}" in resolv:
            lines += [
                "if has corral-resolv; then",
                f'    mkdir -p /run/net && mv -f "$work/resolv.static.{dev}" /run/net/ ||',
                "        die 'cannot write the resolver configuration'",
                "fi",
            ]
    if "resolv.conf" in resolv:
        lines += [
            "if has corral-resolv; then",
            "    corral-resolv",
            "else",
            '    mv -f "$work/resolv.conf" /etc/resolv.conf || die "cannot write /etc/resolv.conf"',
            "fi",
        ]
    return lines


def _user_data_lines(data: WarmUserData) -> list[str]:
    lines = ["# The launch's user-data: write_files (deferred ones last), then runcmd."]
    for entry in [f for f in data.write_files if not f.defer] + [
        f for f in data.write_files if f.defer
    ]:
        lines += _write_file_lines(entry)
    for name, content in (("runcmd", data.runcmd.encode()), ("user-data", data.script)):
        if not content:
            continue
        script = content if name == "user-data" else b"#!/bin/sh\n" + content
        lines += [f"put \"$work/{name}\" 700 <<'CORRAL_END'", _b64(script), "CORRAL_END"]
        run = f'"$work/{name}"' if name == "user-data" else f'sh "$work/{name}"'
        lines += [
            f'{run} >"$work/{name}.log" 2>&1',
            "status=$?",
            f'cat "$work/{name}.log" >>"$LOG"',
            f'[ "$status" = 0 ] || {{ tail -n 20 "$work/{name}.log" >&2;',
            f'    die "{name} failed (exit $status)"; }}',
        ]
    return lines


def _write_file_lines(entry: WriteFile) -> list[str]:
    q = shlex.quote
    path, parent = q(entry.path), q(posixpath.dirname(entry.path) or "/")
    fail = q(f"cannot write {entry.path}")
    lines = [f"mkdir -p {parent} || die {fail}"]
    if entry.append:
        lines += _base64_into(f"base64 -d >>{path}", entry.content, f"cannot write {entry.path}")
        lines.append(f"chmod {entry.permissions:o} {path} || die {fail}")
    else:
        lines += _put(entry.path, entry.content, entry.permissions)
    lines.append(f"chown -h {q(entry.owner)} {path} || die {fail}")
    return lines


# --- running it -----------------------------------------------------------------------------


class _Result(Protocol):
    @property
    def exitcode(self) -> int: ...
    @property
    def stderr(self) -> bytes: ...


class Agent(Protocol):
    """What reidentify needs of corral.machine.agent.GuestAgent."""

    async def exec(
        self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60.0
    ) -> _Result: ...


async def reidentify(agent: Agent, identity: CloneIdentity, *, timeout: float) -> None:
    """Make the guest behind agent into identity; GuestError with the script's stderr if not.

    The clock is taken again here, just before the script leaves.
    """
    script = render_script(replace(identity, epoch_ns=time.time_ns()))
    result = await agent.exec(["/bin/sh", "-s"], stdin=script, timeout=timeout)
    if result.exitcode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit status {result.exitcode}"
        raise GuestError(
            f"making the clone its own machine failed: {last}",
            details=lines[-20:-1],
            hint="the guest's /var/log/corral-identity.log has the output of what it ran",
        )
