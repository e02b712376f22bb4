"""`corral launch --tap`: a NIC on an existing TAP device, in a network namespace the test makes
(the CLI runs in it: it is started from the test's thread, which entered the namespace)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.context import Context
from corral.instance import lifecycle
from helpers import corral
from netns import Netns, entered_netns

pytestmark = pytest.mark.vm

MAC = "52:54:00:aa:bb:cc"


@pytest.fixture
def netns() -> Iterator[Netns]:
    with entered_netns() as ns:
        yield ns


def test_launch_on_a_tap_and_bad_taps(netns: Netns, vm_ctx: Context) -> None:
    netns.bridge_with_tap("cbr0", "ctap0")
    for args, words in [
        (["--tap", "nosuch0"], "error: no TAP device 'nosuch0' on this host"),
        (["--tap", "ctap0;reboot"], "error: invalid tap device name"),
        (["--tap", "ctap0", "--forward", "8080:80"], "error: port forwards need the user-mode"),
    ]:
        result = corral(vm_ctx, "launch", "tiny", "--name", "t1", "--memory", "256M", *args)
        assert result.returncode == 2, result
        assert result.stderr.strip().splitlines()[0].startswith(words), result.stderr
        assert "Traceback" not in result.stderr
        assert lifecycle.list_instances(vm_ctx) == []

    result = corral(
        vm_ctx, "launch", "tiny", "--name", "t1", "--memory", "256M",
        "--tap", f"ctap0,mac={MAC},mtu=1400",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    _, seen = lifecycle.status(vm_ctx, "t1")
    assert seen.state == "running" and seen.pid is not None
    argv = Path(f"/proc/{seen.pid}/cmdline").read_bytes().split(b"\0")
    assert b"tap,id=tap0,ifname=ctap0,script=no,downscript=no" in argv
    assert f"virtio-net-pci,netdev=tap0,id=nic0,mac={MAC},host_mtu=1400".encode() in argv
    assert not any(arg.startswith(b"user,") for arg in argv)
    assert "NO-CARRIER" not in netns.link("ctap0")["flags"]
    inspect = corral(vm_ctx, "inspect", "t1", "--json")
    assert f'"mac": "{MAC}"' in inspect.stdout
    result = corral(vm_ctx, "rm", "--force", "t1")
    assert result.returncode == 0, result.stderr
    assert netns.link("ctap0")["master"] == "cbr0"  # the tap is the caller's: left as it was
