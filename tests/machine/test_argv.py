from pathlib import Path

import pytest

from corral.errors import InvalidInput
from corral.machine.argv import build_argv
from corral.machine.spec import DirectBoot, Drive, Forward, MachineSpec, TapNic, parse_forward


def spec(**changes: object) -> MachineSpec:
    base = dict(
        name="web1",
        cpus=2,
        memory_mib=2048,
        accelerator="tcg",
        drives=(
            Drive("disk0", Path("/s/i/web1/disk.qcow2"), "qcow2"),
            Drive("seed", Path("/s/i/web1/seed.iso"), "raw", readonly=True),
        ),
        forwards=(Forward(18000, 22),),
        qmp_socket=Path("/s/i/web1/qmp.sock"),
        serial_socket=Path("/s/i/web1/serial.sock"),
        serial_log=Path("/s/i/web1/serial.log"),
        pidfile=Path("/s/i/web1/qemu.pid"),
    )
    base.update(changes)
    return MachineSpec(**base)  # type: ignore[arg-type]


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_machine_basics() -> None:
    argv = build_argv("/usr/bin/qemu-system-x86_64", spec())
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert values(argv, "-machine") == ["q35,accel=tcg"]
    assert values(argv, "-cpu") == ["qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"]
    assert values(argv, "-smp") == ["2"]
    assert values(argv, "-m") == ["2048M"]
    assert "-nodefaults" in argv
    assert values(argv, "-pidfile") == ["/s/i/web1/qemu.pid"]


def test_kvm_uses_host_cpu() -> None:
    argv = build_argv("qemu", spec(accelerator="kvm"))
    assert values(argv, "-machine") == ["q35,accel=kvm"]
    assert values(argv, "-cpu") == ["host"]


def test_every_drive_has_an_explicit_format() -> None:
    argv = build_argv("qemu", spec())
    drives = values(argv, "-drive")
    assert drives[0].startswith("if=none,id=disk0,file=/s/i/web1/disk.qcow2,format=qcow2")
    assert "format=raw" in drives[1] and "readonly=on" in drives[1]
    assert all("format=" in d for d in drives)
    assert values(argv, "-device")[:2] == [
        "virtio-blk-pci,drive=disk0",
        "virtio-blk-pci,drive=seed",
    ]


def test_commas_in_paths_are_escaped() -> None:
    argv = build_argv("qemu", spec(drives=(Drive("disk0", Path("/a,b/disk"), "qcow2"),)))
    assert "file=/a,,b/disk" in values(argv, "-drive")[0]


def test_forwards_listen_on_loopback_only() -> None:
    argv = build_argv("qemu", spec(forwards=(Forward(18000, 22), Forward(8080, 80))))
    (netdev,) = values(argv, "-netdev")
    assert netdev == ("user,id=net0,hostfwd=tcp:127.0.0.1:18000-:22,hostfwd=tcp:127.0.0.1:8080-:80")
    assert "0.0.0.0" not in " ".join(argv)


def test_serial_goes_to_socket_and_log_and_qmp_to_socket() -> None:
    argv = build_argv("qemu", spec())
    chardevs = values(argv, "-chardev")
    assert any(
        "path=/s/i/web1/serial.sock" in c and "logfile=/s/i/web1/serial.log" in c for c in chardevs
    )
    assert any("id=qmp0" in c and "path=/s/i/web1/qmp.sock" in c for c in chardevs)
    assert values(argv, "-mon") == ["chardev=qmp0,mode=control"]
    assert values(argv, "-serial") == ["chardev:serial0"]


def test_direct_kernel_boot() -> None:
    boot = DirectBoot(Path("/k/vmlinuz"), Path("/k/initrd"), "console=ttyS0 root=/dev/vda")
    argv = build_argv("qemu", spec(boot=boot))
    assert values(argv, "-kernel") == ["/k/vmlinuz"]
    assert values(argv, "-initrd") == ["/k/initrd"]
    assert values(argv, "-append") == ["console=ttyS0 root=/dev/vda"]
    assert "-kernel" not in build_argv("qemu", spec())


@pytest.mark.parametrize(
    ("text", "forward"),
    [
        ("8080:80", Forward(8080, 80)),
        ("0.0.0.0:8080:80", Forward(8080, 80, host_addr="0.0.0.0")),
        ("5353:53/udp", Forward(5353, 53, "udp")),
    ],
)
def test_parse_forward(text: str, forward: Forward) -> None:
    assert parse_forward(text) == forward


@pytest.mark.parametrize("text", ["80", "a:b", "70000:22", "host:80:22", "8080:80/sctp"])
def test_parse_forward_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_forward(text)


def test_node_names_and_serials() -> None:
    drives = (
        Drive("disk0", Path("/w/top.qcow2"), "qcow2", node_name="top0"),
        Drive("cache1", Path("/c/cache.qcow2"), "qcow2", serial="cc-0123456789abcdef"),
    )
    argv = build_argv("qemu", spec(drives=drives))
    assert "node-name=top0" in values(argv, "-drive")[0]
    assert "virtio-blk-pci,drive=cache1,serial=cc-0123456789abcdef" in values(argv, "-device")


def test_isolated_machines_get_a_restricted_nic_and_a_second_one() -> None:
    argv = build_argv("qemu", spec(isolated=True))
    first, second = values(argv, "-netdev")
    assert first == "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:18000-:22"
    assert second == "user,id=net1,net=10.0.3.0/24"
    assert "virtio-net-pci,netdev=net1,id=nic1,mac=52:54:00:c0:ff:03" in values(argv, "-device")


def test_taps_replace_the_user_mode_nic_in_order() -> None:
    nics = (
        TapNic("ctap0", "52:54:00:00:00:01", mtu=1400),
        TapNic("qarax-tap", "52:54:00:00:00:02"),
    )
    argv = build_argv("qemu", spec(forwards=(), nics=nics))
    assert values(argv, "-netdev") == [
        "tap,id=tap0,ifname=ctap0,script=no,downscript=no",
        "tap,id=tap1,ifname=qarax-tap,script=no,downscript=no",
    ]
    devices = [d for d in values(argv, "-device") if d.startswith("virtio-net")]
    assert devices == [
        "virtio-net-pci,netdev=tap0,id=nic0,mac=52:54:00:00:00:01,host_mtu=1400",
        "virtio-net-pci,netdev=tap1,id=nic1,mac=52:54:00:00:00:02",
    ]
    assert not any(a.startswith("user") for a in values(argv, "-netdev"))


@pytest.mark.parametrize(
    ("tap", "mac", "mtu"),
    [
        ("ctap0,script=/tmp/x", "52:54:00:00:00:01", None),  # an option smuggled in the name
        ("a" * 16, "52:54:00:00:00:01", None),  # longer than IFNAMSIZ allows
        ("ctap0", "52:54:00:00:00:01,romfile=/etc/shadow", None),
        ("ctap0", "52:54:00:00:00:01", 10),
    ],
)
def test_tap_nics_refuse_what_would_reach_the_command_line(tap: str, mac: str, mtu: int) -> None:
    with pytest.raises(InvalidInput):
        TapNic(tap, mac, mtu)


def test_every_machine_has_a_vmgenid_and_an_agent_port_when_asked() -> None:
    plain = build_argv("qemu", spec())
    assert "vmgenid,guid=auto" in values(plain, "-device")
    assert "-incoming" not in plain and not any("virtserialport" in d for d in plain)
    argv = build_argv("qemu", spec(agent_socket=Path("/s/i/web1/agent.sock")))
    assert "socket,id=agent0,path=/s/i/web1/agent.sock,server=on,wait=off" in values(
        argv, "-chardev"
    )
    assert "virtserialport,chardev=agent0,name=org.qemu.guest_agent.0" in values(argv, "-device")


def test_an_incoming_machine_waits_for_its_state() -> None:
    argv = build_argv("qemu", spec(incoming=True))
    assert values(argv, "-incoming") == ["defer"]
