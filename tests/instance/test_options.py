"""instance/options.py: the launch parameters as given (LaunchRequest) parsed into LaunchOptions."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from corral.cli.commands.instances import launch as launch_command
from corral.errors import InvalidInput
from corral.instance.options import (
    LaunchFields,
    LaunchOptions,
    LaunchRequest,
    NetworkNic,
    PublicKey,
    check_networks,
    validate,
)
from corral.machine.spec import Forward, TapNic

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOp me@laptop"


def test_defaults_and_parsing() -> None:
    assert LaunchRequest(name="a1").options() == LaunchOptions(name="a1", cpus=2, memory_mib=2048)
    options = LaunchRequest(
        name="a1", instance_type="c1m256", disk_size="3G", volumes=["1G", 2], user_data="#x",
        kernel="/boot/k", forwards=["8080:80", Forward(2222, 22)], seed=False,
    ).options()  # fmt: skip
    assert (options.cpus, options.memory_mib, options.disk_size) == (1, 256, 3 << 30)
    assert options.volumes == (1 << 30, 2 << 30)  # a plain number is GiB
    assert options.user_data == b"#x" and options.kernel == Path("/boot/k")
    assert [f.host_port for f in options.forwards] == [8080, 2222]
    assert options.seed is False
    assert LaunchRequest(name="a1", cpus=3, memory=512).options().memory_mib == 512
    with pytest.raises(InvalidInput, match="either an instance type or cpus"):
        LaunchRequest(name="a1", instance_type="c1m256", cpus=2).options()


def test_ssh_keys_are_files_or_lines(tmp_path: Path) -> None:
    other = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB you@desk"
    (tmp_path / "id.pub").write_text(f"# a comment\n{other}\n{KEY}\n")
    (tmp_path / "id").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    request = LaunchRequest(name="a1", ssh_keys=[PublicKey(f"  {KEY}\n"), tmp_path / "id"])
    # The private key's .pub is read; the lines are the options' own, no file is needed.
    assert request.options().ssh_keys == (KEY, other, KEY)
    assert all(type(key) is str for key in request.options().ssh_keys)
    assert LaunchRequest(name="a1", ssh_keys=[str(tmp_path / "id.pub")]).options().ssh_keys == (
        other,
        KEY,
    )
    with pytest.raises(InvalidInput, match="cannot read ssh key"):
        LaunchRequest(name="a1", ssh_keys=[KEY]).options()  # a plain string names a file


@pytest.mark.parametrize("line", ["", "not a key", f"{KEY}\n{KEY}", "AAAAC3Nza me@laptop"])
def test_a_public_key_is_one_key_line(line: str) -> None:
    with pytest.raises(InvalidInput, match=r"ssh_keys\[2\] is not one ssh public key line"):
        PublicKey(line, what="ssh_keys[2]")


def test_the_cli_takes_every_launch_parameter() -> None:
    """One list of launch parameters: `corral launch` has a flag for each (--no-seed: seed)."""
    fields = {f.name for f in dataclasses.fields(LaunchRequest)}
    flags = set(inspect.signature(launch_command).parameters) - {"image", "no_start", "wait",
                                                                   "timeout"}  # fmt: skip
    assert flags == fields - {"seed"} | {"no_seed"}


def test_the_python_api_is_typed_with_every_launch_parameter() -> None:
    """Corral.launch(**fields) is typed by LaunchFields, which must list LaunchRequest's fields
    with the same types, so an editor and mypy see the one list of launch parameters."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(LaunchRequest)}
    typed = {name: ref.__forward_arg__ for name, ref in LaunchFields.__annotations__.items()}
    typed["name"] = typed["name"].removeprefix("Required[").removesuffix("]")
    assert typed == fields


def test_taps_are_parsed_and_checked(tmp_path: Path) -> None:
    (nic,) = LaunchRequest(name="a1", nics=["qtap0,mac=52:54:00:AB:CD:EF,mtu=1400"]).options().nics
    assert (nic.tap, nic.mac, nic.mtu) == ("qtap0", "52:54:00:ab:cd:ef", 1400)
    (made_up,) = LaunchRequest(name="a1", nics=["qtap0"]).options().nics
    assert made_up.mac.startswith("52:54:00:") and made_up.mtu is None
    for bad, words in [
        ("qtap0,mtu=big", "mtu must be a number"),
        ("qtap0,ip=10.0.0.1", "expected NAME"),
        ("qtap0,mac=52:54:00:00:00:01,mac=52:54:00:00:00:02", "expected NAME"),
        ("../../etc/x", "invalid tap device name"),
        ("a" * 16, "invalid tap device name"),
        ("qtap0,mac=zz", "invalid MAC"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            LaunchRequest(name="a1", nics=[bad]).options()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    diskless = LaunchRequest(name="a1", kernel=kernel, nics=["lo"]).options()
    assert validate(diskless, None) == 0  # `lo` exists in every network namespace
    with pytest.raises(InvalidInput, match="no TAP device 'nosuch0'"):
        validate(
            dataclasses.replace(diskless, nics=(TapNic("nosuch0", "52:54:00:00:00:01"),)), None
        )
    with pytest.raises(InvalidInput, match="port forwards need the user-mode NIC"):
        validate(dataclasses.replace(diskless, forwards=(Forward(2222, 22),)), None)
    with pytest.raises(InvalidInput, match="one NIC only"):
        validate(dataclasses.replace(diskless, nics=diskless.nics * 2), None)
    with pytest.raises(InvalidInput, match="boots from a kernel"):
        validate(LaunchOptions(name="a1"), None)
    with pytest.raises(InvalidInput, match="no root disk"):
        validate(dataclasses.replace(diskless, disk_size=1 << 30), None)


def test_network_nics_parse_in_order_with_their_address_and_mac() -> None:
    options = LaunchRequest(
        name="a1",
        networks=["lan,ip=10.80.0.5,mac=52:54:00:AA:00:01", "back", NetworkNic("third")],
        publish=["8080:80", "0.0.0.0:5353:53/udp"],
    ).options()
    assert options.networks == (
        NetworkNic("lan", "10.80.0.5", "52:54:00:aa:00:01"),
        NetworkNic("back"),
        NetworkNic("third"),
    )
    assert options.published == (Forward(8080, 80), Forward(5353, 53, "udp", "0.0.0.0"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lan,ip=10.80.0.x", "invalid address '10.80.0.x' for network 'lan'"),
        ("lan,mac=52:54:00:00:00:01\n", "invalid MAC"),
        ("lan,mac=53:54:00:00:00:01", "multicast"),
        ("Lan", "invalid network name 'Lan'"),
        ("lan;rm -rf /", "invalid network name"),
        ("lan,ip=10.80.0.5,ip=10.80.0.6", "expected NAME[,ip=ADDR][,mac=MAC]"),
        ("lan,mtu=9000", "expected NAME[,ip=ADDR][,mac=MAC]"),
        ("lan,ip=", "expected NAME[,ip=ADDR][,mac=MAC]"),
        ("", "invalid network name ''"),
    ],
)
def test_a_bad_network_nic_is_refused_in_one_line(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(words)):
        LaunchRequest(name="a1", networks=[text]).options()


def test_forwards_and_networks_exclude_each_other_and_publish_needs_a_network() -> None:
    def check(**fields: Any) -> None:
        check_networks(LaunchRequest(name="a1", **fields).options())

    with pytest.raises(InvalidInput, match="--forward needs the user-mode NIC") as caught:
        check(networks=["lan"], forwards=["8080:80"])
    assert caught.value.hint is not None and "--publish" in caught.value.hint
    with pytest.raises(InvalidInput, match="--publish needs a managed network"):
        check(publish=["8080:80"])
    with pytest.raises(InvalidInput, match="one NIC per network"):
        check(networks=["lan", "lan,ip=10.80.0.9"])
    with pytest.raises(InvalidInput, match="published twice"):
        check(networks=["lan"], publish=["8080:80", "127.0.0.2:8080:81"])
    with pytest.raises(InvalidInput, match="invalid --publish '80'"):
        check(networks=["lan"], publish=["80"])
    check(networks=["lan"], publish=["8080:80", "8080:80/udp"])
