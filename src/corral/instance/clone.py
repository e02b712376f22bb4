"""A restored clone made into its own machine: the identity (guest.identity) corral picks for
this instance, sent through the guest agent, before anyone is told the instance is ready.

The clone wakes up as the template: its hostname, machine-id, host keys, addresses and random
pool. The guest agent answers at once (it needs no network and no ssh), so this runs right
after the restore; ssh then proves the guest ready, as for a cold boot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from corral.errors import GuestError
from corral.guest.identity import CloneIdentity, NicIdentity, new_identity, reidentify
from corral.instance.record import InstanceRecord
from corral.layout import InstanceFiles
from corral.machine.agent import GuestAgent
from corral.machine.qmp import qmp_execute_async
from corral.seed.netconfig import NicConfig

IDENTITY_TIMEOUT = 120.0  # the script under TCG: key installation, a DHCP renewal, user-data


def nic_identities(
    record: InstanceRecord, networks: Sequence[NicConfig]
) -> tuple[NicIdentity, ...]:
    """The clone's NICs to renew, in guest order: managed networks' (as corral configures
    them), then the caller's taps (DHCP).

    None on QEMU's user-mode network: there every clone is 10.0.2.15 with QEMU's default MAC
    behind its own QEMU (reached through its own forwarded ports), as cold VMs are, with the
    same gateway and resolver and a DHCP server that is new with the clone. Nothing in it is
    the template's to give up, and taking the interface down and up again would only cost
    the guest a second of work and ssh a wait.
    """
    out = [NicIdentity.from_config(c) for c in networks]
    out += [NicIdentity(mac=n.mac) for n in record.nics]
    return tuple(out)


def tap_links(record: InstanceRecord) -> tuple[str, ...]:
    """The QMP names of the clone's NICs on taps (machine/argv names them nic0, nic1, ...):
    restored with their link down, since the guest still has its template's MAC and address,
    and a frame from it would teach the bridge to send the template's traffic to the clone."""
    return tuple(f"nic{i}" for i in range(len(record.networks) + len(record.nics)))


async def _reidentify(
    files: InstanceFiles, identity: CloneIdentity, links: tuple[str, ...], timeout: float
) -> None:
    async with GuestAgent(files.agent) as agent:
        await agent.sync(timeout=min(timeout, 30.0))
        if links:
            # The guest's interfaces down first (no frame with the template's MAC once the
            # links are up again), then the links up; the script gives each NIC its new MAC
            # before it brings the interface up.
            downs = " && ".join(f"ip link set dev eth{i} down" for i in range(len(links)))
            result = await agent.exec(["/bin/sh", "-c", downs], timeout=min(timeout, 30.0))
            if result.exitcode != 0:
                raise GuestError(
                    "the clone's network interfaces did not go down: "
                    + result.stderr.decode(errors="replace").strip()[-200:]
                )
            for nic in links:
                await qmp_execute_async(files.qmp, "set_link", {"name": nic, "up": True})
        await reidentify(agent, identity, timeout=timeout)


def make_own(
    files: InstanceFiles,
    record: InstanceRecord,
    keys: Sequence[str],
    user_data: bytes | None,
    networks: Sequence[NicConfig],
    *,
    timeout: float = IDENTITY_TIMEOUT,
) -> None:
    """Make the restored guest this instance: name, machine-id, host keys, the launch's keys,
    clock, addresses, random pool, and the launch's user-data."""
    identity = new_identity(
        hostname=record.name,
        instance_id=record.instance_id,
        user=record.ssh_user,
        authorized_keys=tuple(keys),
        nics=nic_identities(record, networks),
        user_data=user_data,
    )
    asyncio.run(_reidentify(files, identity, tap_links(record), timeout))
