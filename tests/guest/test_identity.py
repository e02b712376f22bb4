"""corral.guest.identity and corral.guest.userdata without a VM: what an identity accepts, what a
warm user-data applies, and the rendered script itself, run by the tiny guest's busybox sh in a
scratch root (chroot, in new namespaces, with stubs for what would touch the host: date,
hostname, ip). tests/guest/test_identity_vm.py runs it in a booted guest.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import stat
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.guest.identity import (
    CloneIdentity,
    NicIdentity,
    dropbear_ed25519_key,
    new_identity,
    render_script,
)
from corral.guest.userdata import WARM_MODULES, ignored_modules, parse_user_data
from corral.seed.netconfig import NicConfig

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGVhc3Rlcg== me@host"
ATTACK = "a'b\"c $(touch /pwned) `touch /pwned` ${HOME} \\ \n; touch /pwned #"


def identity(**changes: object) -> CloneIdentity:
    values: dict = {"hostname": "clone", "instance_id": "i-1", "user": "root",
                    "authorized_keys": [KEY]}  # fmt: skip
    values.update(changes)
    return new_identity(**values)


# --- what an identity accepts --------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"hostname": "a'b"},
        {"hostname": "$(reboot)"},
        {"hostname": "clone\nevil"},
        {"hostname": "-clone"},
        {"hostname": "x" * 64},
        {"hostname": ""},
        {"user": "root; reboot"},
        {"user": "Root"},
        {"user": "../etc"},
        {"instance_id": "i 1"},
        {"authorized_keys": ["ssh-ed25519 AAAA\ncommand=reboot ssh-ed25519 AAAA"]},
        {"authorized_keys": ["not a key"]},
        {"user_data": b"#cloud-config\n- a list\n"},
        {"user_data": b"#cloud-config\nwrite_files: {path: /x}\n"},
        {"user_data": b"#cloud-config\nwrite_files:\n- path: relative\n"},
        {"user_data": b"#cloud-config\nwrite_files:\n- path: /a/../etc/x\n"},
        {"user_data": b"#cloud-config\nwrite_files:\n- {path: /x, owner: 'root;reboot'}\n"},
        {"user_data": b"#cloud-config\nwrite_files:\n- {path: /x, permissions: 'rw'}\n"},
        {"user_data": b"#cloud-config\nwrite_files:\n- {path: /x, encoding: rot13}\n"},
        {"user_data": b"#cloud-config\nwrite_files:\n- {path: /x, append: 'yes'}\n"},
        {"user_data": b"#cloud-config\nruncmd: echo hi\n"},
        {"user_data": b"#cloud-config\nruncmd:\n- {a: b}\n"},
        {"user_data": b"#cloud-config\n: [\n"},
        {"user_data": b"Content-Type: multipart/mixed\n"},
    ],
)
def test_bad_values_are_refused(changes: dict) -> None:
    with pytest.raises(InvalidInput):
        identity(**changes)


@pytest.mark.parametrize(
    "nic",
    [
        {"mac": "52:54:00:00:00:0G"},
        {"mac": "52:54:00:00:00:01; reboot"},
        {"mac": "52:54:00:00:00:01", "addresses": ("10.0.0.5/24 dev lo",)},
        {"mac": "52:54:00:00:00:01", "nameservers": ("$(reboot)",)},
        {"mac": "52:54:00:00:00:01", "gateway4": "fd00::1"},
    ],
)
def test_bad_nics_are_refused(nic: dict) -> None:
    with pytest.raises(InvalidInput):
        NicIdentity(**nic)


def test_nic_from_the_launch_network_config() -> None:
    config = NicConfig("52:54:00:00:00:01", ("10.9.0.5/24",), "10.9.0.1", None, ("10.9.0.1",),
                       ("lab",), 1400)  # fmt: skip
    nic = NicIdentity.from_config(config)
    assert nic == NicIdentity("52:54:00:00:00:01", ("10.9.0.5/24",), "10.9.0.1", None,
                              ("10.9.0.1",))  # fmt: skip
    assert not nic.dhcp and NicIdentity.from_config(NicConfig("52:54:00:00:00:02")).dhcp


def test_each_identity_is_new() -> None:
    one, two = identity(), identity()
    assert one.machine_id != two.machine_id and len(one.machine_id) == 32
    assert one.entropy != two.entropy and len(one.entropy) == 64
    assert [k.algorithm for k in one.host_keys] == ["ssh-ed25519", "ecdsa-sha2-nistp256"]
    assert {k.public for k in one.host_keys}.isdisjoint(k.public for k in two.host_keys)


def test_dropbear_key_is_the_same_ed25519_key() -> None:
    key = identity().host_keys[0]
    blob = dropbear_ed25519_key(key.private)
    public = base64.b64decode(key.public.split()[1])  # string "ssh-ed25519", string key
    assert blob[:15] == struct.pack(">I", 11) + b"ssh-ed25519"
    assert blob[15:19] == struct.pack(">I", 64) and len(blob) == 19 + 64
    assert blob[19 + 32 :] == public[-32:]  # seed, then the public key
    with pytest.raises(InvalidInput):
        dropbear_ed25519_key(identity().host_keys[1].private)  # ecdsa


# --- user-data ------------------------------------------------------------------------------


def test_cloud_config_write_files_and_runcmd() -> None:
    data = parse_user_data(
        b"#cloud-config\n"
        b"packages: [htop]\n"
        b"users: []\n"
        b"write_files:\n"
        b"- {path: /a, content: aGk=, encoding: b64, permissions: '0600', owner: 'me:staff'}\n"
        b"- path: /b\n"
        b"  encoding: gz+b64\n"
        b"  content: " + base64.b64encode(gzip.compress(b"zipped")) + b"\n"
        b"  append: true\n"
        b"  defer: true\n"
        b"- {path: /c, permissions: 0755}\n"
        b"runcmd:\n"
        b"- echo $HOME > /x\n"
        b"- [touch, 'a b', $(c)]\n"
    )
    a, b, c = data.write_files
    assert (a.path, a.content, a.permissions, a.owner) == ("/a", b"hi", 0o600, "me:staff")
    assert (b.content, b.append, b.defer) == (b"zipped", True, True)
    assert (c.content, c.permissions) == (b"", 0o755)
    assert data.runcmd == "echo $HOME > /x\ntouch 'a b' '$(c)'\n"
    assert data.ignored == ("packages", "users")
    assert ignored_modules(b"#cloud-config\nhostname: x\nruncmd: []\n") == ("hostname",)
    assert set(WARM_MODULES) == {"write_files", "runcmd"}


def test_a_script_and_nothing() -> None:
    assert parse_user_data(b"#!/bin/sh\necho hi\n").script == b"#!/bin/sh\necho hi\n"
    assert parse_user_data(None) == parse_user_data(b"") == parse_user_data(b"#cloud-config\n")


# --- the script -----------------------------------------------------------------------------


def test_script_is_pure_valid_sh_and_carries_values_as_base64() -> None:
    user_data = b"#cloud-config\nwrite_files:\n- {path: '/x', content: " + _yaml(ATTACK).encode()
    user_data += b"}\nruncmd: ['echo " + b"$(id)" + b"']\n"
    static = NicIdentity("52:54:00:00:00:02", ("10.9.0.5/24", "fd00::5/64"), "10.9.0.1",
                         "fd00::1", ("10.9.0.1", "fd00::1"))  # fmt: skip
    ident = identity(nics=[NicIdentity("52:54:00:00:00:01"), static], user_data=user_data)
    script = render_script(ident)
    assert script == render_script(ident)
    assert ATTACK.encode() not in script and b"$(id)" not in script
    for shell in ("dash", "bash"):
        if shutil.which(shell):
            check = subprocess.run([shell, "-n"], input=script, capture_output=True)
            assert check.returncode == 0, check.stderr
    assert b"renew_nic eth0 52:54:00:00:00:01\n" in script
    assert b"dhcp eth0 clone\n" in script
    assert b"ip addr add 10.9.0.5/24 dev eth1 " in script
    assert b"ip -6 route replace default via fd00::1 dev eth1 " in script


STUB = '#!/bin/sh\necho "$(basename "$0") $*" >>/stubs.log\n'
# busybox's sh runs its own applets before looking at PATH: these must be shell functions,
# defined before the script (date and hostname would otherwise reach the host's clock and name).
STUB_FUNCTIONS = b"".join(
    b'%s() { echo "%s $*" >>/stubs.log; }\n' % (name, name)
    for name in (b"date", b"hostname", b"ip")
)


def scratch_root(root: Path, busybox: Path) -> None:
    """A tiny root: busybox's applets, /etc files, and stubs for what must not reach the host."""
    for name in ("bin", "etc", "root", "tmp", "run", "dev", "var/log", "sys/class/net"):
        (root / name).mkdir(parents=True, exist_ok=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, check=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet.decode()
        if not link.exists():
            link.symlink_to("busybox")
    for stub in ("dropbear", "python3"):
        (root / "bin" / stub).unlink(missing_ok=True)
        (root / "bin" / stub).write_text(STUB)
        (root / "bin" / stub).chmod(0o755)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 template\n")
    (root / "tmp").chmod(0o1777)
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))


# The script runs as root in a chroot, in namespaces of its own: in a user namespace too, so
# even a stub that failed could not set the host's clock or hostname (no CAP_SYS_TIME there).
SANDBOX = ["unshare", "--user", "--map-root-user", "--uts", "--net", "--ipc", "--mount", "--pid",
           "--fork"]  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_script_in_a_scratch_root_writes_values_literally(busybox: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    scratch_root(root, busybox)
    tricky_path = "/etc/it's $(touch /pwned) `touch /pwned`/x\n\"y"
    user_data = (
        "#cloud-config\n"
        "write_files:\n"
        f"- path: {_yaml(tricky_path)}\n"
        f"  content: {_yaml(ATTACK)}\n"
        "  permissions: '0640'\n"
        "- path: /etc/motd\n"
        "  content: more\n"
        "  append: true\n"
        "runcmd:\n"
        '- echo "ran $((1 + 1))" >/ran\n'
        f"- [touch, {_yaml('/argv $(id -u)')}]\n"
    ).encode()
    nic = NicIdentity("52:54:00:00:00:01", ("10.9.0.5/24",), "10.9.0.1", None, ("10.9.0.1",))
    # Every byte value (NUL, '%', '\\', quotes) reaches /dev/urandom through printf's escapes.
    ident = replace(identity(nics=[nic], user_data=user_data), entropy=bytes(range(256)))
    (root / "sys/class/net/eth0").mkdir()
    # /etc/hosts rewritten by the shell itself: fields split as awk would, other lines kept
    # byte for byte (no glob, no expansion), the last one even without its newline.
    (root / "etc" / "hosts").write_text(
        "127.0.0.1 localhost\n  127.0.1.1\ttemplate t\n# a \\ comment, * and $(id)\n"
        "127.0.1.1 again\n::1 ip6-localhost"
    )
    (root / "etc" / "motd").write_text("hello\n")
    argv = [*SANDBOX, "chroot", root, "/bin/sh", "-s"]
    script = STUB_FUNCTIONS + render_script(ident)
    run = subprocess.run(argv, input=script, capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()

    assert not (root / "pwned").exists()
    assert (root / tricky_path.lstrip("/")).read_text() == ATTACK
    assert (root / tricky_path.lstrip("/")).stat().st_mode & 0o7777 == 0o640
    assert (root / "etc/motd").read_text() == "hello\nmore"
    assert (root / "ran").read_text() == "ran 2\n"
    assert (root / "argv $(id -u)").exists() and not (root / "argv 0").exists()
    assert (root / "etc/hostname").read_text() == "clone\n"
    assert (root / "etc/hosts").read_text() == (
        "127.0.0.1 localhost\n127.0.1.1\tclone\n# a \\ comment, * and $(id)\n::1 ip6-localhost\n"
    )
    assert (root / "etc/machine-id").read_text() == ident.machine_id + "\n"
    # Modes as the archive carried them (busybox's tar applies them, as root).
    assert (root / "etc/machine-id").stat().st_mode & 0o7777 == 0o444
    assert (root / "etc/hostname").stat().st_mode & 0o7777 == 0o644
    assert (root / "etc/resolv.conf").read_text() == "nameserver 10.9.0.1\n"
    assert (root / "dev/urandom").read_bytes() == ident.entropy
    keys = root / "root/.ssh/authorized_keys"
    assert keys.read_text() == KEY + "\n" and keys.stat().st_mode & 0o777 == 0o600
    dropbear = (root / "etc/dropbear/dropbear_ed25519_host_key").read_bytes()
    assert dropbear == dropbear_ed25519_key(ident.host_keys[0].private)
    assert (root / "etc/dropbear/dropbear_ed25519_host_key").stat().st_mode & 0o7777 == 0o600
    calls = (root / "stubs.log").read_text().splitlines()
    assert f"date -u -s @{ident.epoch_ns // 10**9}" in calls
    assert "hostname clone" in calls
    assert "ip link set dev eth0 address 52:54:00:00:00:01" in calls
    assert "ip addr add 10.9.0.5/24 dev eth0" in calls
    assert "ip route replace default via 10.9.0.1 dev eth0" in calls
    assert not list((root / "etc").glob(".corral-identity.*"))  # its work directory is gone


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_script_refuses_an_ssh_directory_that_is_a_link(busybox: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    scratch_root(root, busybox)
    (root / "elsewhere").mkdir(mode=0o755)
    (root / "root" / ".ssh").symlink_to("/elsewhere")
    argv = [*SANDBOX, "chroot", root, "/bin/sh", "-s"]
    script = STUB_FUNCTIONS + render_script(identity())
    run = subprocess.run(argv, input=script, capture_output=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.decode().endswith("/root/.ssh is a symbolic link\n")
    assert list((root / "elsewhere").iterdir()) == []
    assert (root / "elsewhere").stat().st_mode & 0o777 == 0o755


def _yaml(text: str) -> str:
    return json.dumps(text)  # JSON strings are YAML flow scalars
