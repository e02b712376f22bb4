"""One dnsmasq per network: DHCP (and IPv6 router advertisements / DHCPv6) and DNS for the
names of the network's VMs, bound to the network's bridge only.

The configuration is built by pure functions from the network's record; file paths go on the
command line (never into the configuration text). dnsmasq daemonises itself; its pid is
recorded with its start time, and a pid is signalled only while that start time matches and its
command line names this network's configuration file, so a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

from corral.errors import CorralError
from corral.fsutil import pid_alive, process_cmdline, process_start_time, write_atomic
from corral.layout import NetworkFiles
from corral.net.model import AttachmentRecord, DnsmasqRecord, NetworkRecord
from corral.records import RecordError
from corral.run import require, run

DNSMASQ = "/usr/sbin/dnsmasq"
LEASE_TIME = "12h"


def render_conf(net: NetworkRecord) -> str:
    """dnsmasq.conf for a network: every value here was checked by net.model."""
    subnet = net.network
    lines = [
        "# written by corral: regenerated on every change",
        f"interface={net.bridge}",
        "except-interface=lo",
        "bind-interfaces",
        "no-hosts",  # not the host's /etc/hosts: only the network's own names
        "domain-needed",
        "bogus-priv",
        f"domain={net.domain}",
        f"local=/{net.domain}/",
        "expand-hosts",
        f"dhcp-range={net.dhcp_start},{net.dhcp_end},{subnet.netmask},{LEASE_TIME}",
        "dhcp-authoritative",
        "dhcp-no-override",
        f"dhcp-option=option:mtu,{net.mtu}",
        f"dhcp-option=option:domain-search,{net.domain}",
        f"dhcp-option=option:dns-server,{net.gateway}",
    ]
    if net.isolated:
        lines += ["dhcp-option=option:router", "no-resolv"]  # no route out, no DNS out
    else:
        lines.append(f"dhcp-option=option:router,{net.gateway}")
    if net.ipv6:
        v6 = ipaddress.IPv6Network(net.ipv6)
        lifetime = ",0" if net.isolated else ""  # router lifetime 0: not a default router
        lines += [
            "enable-ra",
            f"dhcp-range={v6[0x100]},{v6[0xFFFF]},slaac,64,{LEASE_TIME}",  # DHCPv6 and SLAAC
            f"ra-param={net.bridge},mtu:{net.mtu},60{lifetime}",
        ]
    return "\n".join(lines) + "\n"


def render_dhcp_hosts(attached: Iterable[AttachmentRecord]) -> str:
    """--dhcp-hostsfile: `mac,ip,hostname` per VM (reread on SIGHUP)."""
    return "".join(f"{a.mac},{a.ipv4},{a.hostname}\n" for a in attached)


def render_dns_hosts(net: NetworkRecord, attached: Iterable[AttachmentRecord]) -> str:
    """--addn-hosts: each VM's name answered from its reservation, before it has a lease."""
    return "".join(f"{a.ipv4} {a.hostname}.{net.domain} {a.hostname}\n" for a in attached)


def argv(files: NetworkFiles) -> list[str]:
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return [
        DNSMASQ,
        f"--conf-file={files.dnsmasq_conf}",
        f"--pid-file={files.pidfile}",
        f"--dhcp-leasefile={files.leases}",
        f"--dhcp-hostsfile={files.dhcp_hosts}",
        f"--addn-hosts={files.dns_hosts}",
        f"--log-facility={files.dnsmasq_log}",
        # dnsmasq rereads its hosts files as this user on SIGHUP: they live in the private
        # state directory, which only the user who runs corral may read.
        f"--user={user}",
        f"--group={group}",
    ]


def write_files(files: NetworkFiles, net: NetworkRecord, attached: list[AttachmentRecord]) -> None:
    write_atomic(files.dnsmasq_conf, render_conf(net).encode(), mode=0o600)
    write_hosts(files, net, attached)


def write_hosts(files: NetworkFiles, net: NetworkRecord, attached: list[AttachmentRecord]) -> None:
    write_atomic(files.dhcp_hosts, render_dhcp_hosts(attached).encode(), mode=0o600)
    write_atomic(files.dns_hosts, render_dns_hosts(net, attached).encode(), mode=0o600)


def _ours(files: NetworkFiles, pid: int) -> bool:
    return f"--conf-file={files.dnsmasq_conf}" in process_cmdline(pid)


def running(files: NetworkFiles) -> int | None:
    """The pid of this network's dnsmasq when it runs (checked, never merely believed)."""
    try:
        rec = DnsmasqRecord.from_json(files.dnsmasq_record.read_bytes())
    except (OSError, RecordError):
        return None
    if (
        pid_alive(rec.pid)
        and process_start_time(rec.pid) == rec.start_time
        and _ours(files, rec.pid)
    ):
        return rec.pid
    return None


def start(files: NetworkFiles) -> int:
    """Start dnsmasq (it has bound its sockets when this returns) and record its pid."""
    if (pid := running(files)) is not None:
        return pid
    stop(files)  # one that started but was never recorded
    require(DNSMASQ, package="dnsmasq-base")
    files.leases.touch(mode=0o600, exist_ok=True)
    run(argv(files), timeout=30)
    pid = _pid_from_file(files)
    if pid is None:
        raise CorralError(f"dnsmasq started but wrote no pid to {files.pidfile}")
    started = process_start_time(pid)
    if started is None:
        raise CorralError(f"dnsmasq exited at once; see {files.dnsmasq_log}")
    write_atomic(files.dnsmasq_record, DnsmasqRecord(pid, started).to_json(), mode=0o600)
    return pid


def _pid_from_file(files: NetworkFiles) -> int | None:
    try:
        pid = int(files.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) and _ours(files, pid) else None


def reload(files: NetworkFiles, timeout: float = 3.0) -> bool:
    """SIGHUP: dnsmasq rereads its hosts files; returns once its log says it has, so a name
    just reserved resolves when this returns. False when it does not run."""
    pid = running(files)
    if pid is None:
        return False
    try:
        offset = files.dnsmasq_log.stat().st_size
    except OSError:
        offset = 0
    os.kill(pid, signal.SIGHUP)
    marker = f"read {files.dns_hosts}".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), open(files.dnsmasq_log, "rb") as log:
            log.seek(offset)
            if marker in log.read():
                return True
        time.sleep(0.002)
    return True  # it runs and was told; a slow reread is not an error


def stop(files: NetworkFiles, timeout: float = 5.0) -> None:
    """End this network's dnsmasq: the recorded one, or one a killed command started but had
    not recorded yet (found through dnsmasq's own pid file and checked by command line)."""
    for pid in {p for p in (running(files), _pid_from_file(files)) if p is not None}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for path in (files.dnsmasq_record, files.pidfile):
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str | None
    expires: int


def leases(files: NetworkFiles) -> list[Lease]:
    """dnsmasq's current leases: `expiry mac ip hostname clientid` a line."""
    try:
        text = files.leases.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            out.append(Lease(parts[1].lower(), parts[2], None if parts[3] == "*" else parts[3],
                             int(parts[0])))  # fmt: skip
    return out
