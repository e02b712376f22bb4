"""Which host endpoint carries a VM's port (the tunnel's seam): only ports the VM exposes."""

from __future__ import annotations

import pytest

from corral.errors import Forbidden, InvalidInput
from corral.instance.endpoint import exposed_ports, vm_endpoint
from corral.instance.record import ForwardRecord, InstanceRecord, NetworkNicRecord


def record(*forwards: ForwardRecord, ssh_port: int = 18000) -> InstanceRecord:
    return InstanceRecord(
        name="web1", instance_id="i-1", image="img", image_digest="d", image_format="qcow2",
        cpus=1, memory_mib=256, disk_size=1 << 30, ssh_user="root", ssh_port=ssh_port,
        forwards=forwards,
    )  # fmt: skip


HTTP = ForwardRecord(host_port=8080, guest_port=80)
EVERYWHERE = ForwardRecord(host_port=8443, guest_port=443, host_addr="0.0.0.0")
ADDRESS = ForwardRecord(host_port=9000, guest_port=9000, host_addr="10.1.2.3")
UDP = ForwardRecord(host_port=5353, guest_port=53, protocol="udp")


@pytest.mark.parametrize(
    ("port", "endpoint"),
    [
        (22, ("127.0.0.1", 18000)),
        (80, ("127.0.0.1", 8080)),
        (443, ("127.0.0.1", 8443)),  # a forward on every address is reached on loopback
        (9000, ("10.1.2.3", 9000)),
    ],
)
def test_exposed_ports_map_to_their_forwards(port: int, endpoint: tuple[str, int]) -> None:
    assert vm_endpoint(record(HTTP, EVERYWHERE, ADDRESS, UDP), port) == endpoint


@pytest.mark.parametrize("port", [18000, 8080, 5432, 53, 1])
def test_any_other_port_is_refused_naming_what_is_exposed(port: int) -> None:
    # Host ports (the forwards' own, the SSH forward's) are not guest ports: refused too.
    with pytest.raises(Forbidden) as caught:
        vm_endpoint(record(HTTP, UDP), port)
    assert caught.value.message == (
        f"port {port} of VM 'web1' is not exposed (a tunnel reaches its ports: 22, 80)"
    )
    assert caught.value.hint == f"expose it at launch: --forward HOSTPORT:{port}"


def test_a_vm_without_an_ssh_forward_exposes_only_its_forwards() -> None:
    assert exposed_ports(record(HTTP, ssh_port=0)) == [80]
    with pytest.raises(Forbidden, match=r"its ports: 80\)"):
        vm_endpoint(record(HTTP, ssh_port=0), 22)


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_ports_out_of_range_are_invalid(port: int) -> None:
    with pytest.raises(InvalidInput, match="between 1 and 65535"):
        vm_endpoint(record(), port)


def test_a_vm_on_a_managed_network_is_reached_at_its_address_on_22_and_published_ports() -> None:
    nic = NetworkNicRecord(network="lan", tap="crt0123456789ab", mac="52:54:00:00:00:01",
                           ipv4="10.80.0.5", prefix=24)  # fmt: skip
    published = (ForwardRecord(host_port=8080, guest_port=80),
                 ForwardRecord(host_port=5353, guest_port=53, protocol="udp"))  # fmt: skip
    vm = record(ssh_port=0).replace(networks=(nic,), published=published)
    assert exposed_ports(vm) == [22, 80]
    assert vm_endpoint(vm, 22) == ("10.80.0.5", 22)
    assert vm_endpoint(vm, 80) == ("10.80.0.5", 80)
    for port in (53, 8080, 5432):
        with pytest.raises(Forbidden) as caught:
            vm_endpoint(vm, port)
        assert caught.value.hint == f"expose it at launch: --publish HOSTPORT:{port}"
