"""The guest session: the command line for a user, directory and environment (pure), and the
session itself on the tiny guest."""

from __future__ import annotations

import asyncio

import pytest

from corral.context import Context
from corral.errors import InvalidInput
from corral.guest.session import SETUP_FAILED, GuestSession, command_line
from corral.guest.ssh import SshTarget


@pytest.mark.parametrize(
    ("command", "kw", "line"),
    [
        ("echo hi", {}, "echo hi"),
        (["ls", "-l", "a b"], {}, "ls -l 'a b'"),
        # Who logged in needs no sudo; root is sudo's default; anyone else is named.
        (["id"], {"user": "me"}, "id"),
        (["sh", "-c", "x"], {"user": "root"}, "sudo -n sh -c x"),
        (["id"], {"user": "www"}, "sudo -n -u www id"),
        ("echo $HOME", {"user": "root"}, "sudo -n sh -c 'echo $HOME'"),
        # The directory and environment come first, inside the user's shell.
        (["pwd"], {"cwd": "/a b"}, f"cd '/a b' || exit {SETUP_FAILED}\npwd"),
        ("env", {"env": {"A": "1 2", "B": "$x"}}, "export A='1 2'\nexport B='$x'\nenv"),
        (["pwd"], {"user": "root", "cwd": "/srv"},
         f"sudo -n sh -c 'cd /srv || exit {SETUP_FAILED}\npwd'"),
    ],
)  # fmt: skip
def test_command_line(command: object, kw: dict, line: str) -> None:
    assert command_line(command, login="me", **kw) == line  # type: ignore[arg-type]


def test_environment_names_are_checked() -> None:
    with pytest.raises(InvalidInput, match="environment variable name"):
        command_line("env", login="me", env={"A;rm -rf /": "x"})


@pytest.mark.vm
def test_session_on_the_tiny_guest(vm_ctx: Context) -> None:
    from corral.client import Corral

    corral = Corral(vm_ctx.config)
    corral.ctx = vm_ctx
    vm = corral.launch("tiny", name="sess", instance_type="c1m256", wait=True, timeout=120)
    target = SshTarget(vm.ssh_port, vm.record.ssh_user, vm_ctx.home.ssh_key)

    async def go() -> None:
        async with await GuestSession.open(target) as guest:
            result = await guest.run(
                'pwd; echo "$GREETING"', user="root", cwd="/tmp", env={"GREETING": "a b"}
            )
            assert (result.exit_code, result.stdout) == (0, b"/tmp\na b\n")
            assert (await guest.run("true", cwd="/nowhere")).exit_code == SETUP_FAILED

            out, err, both = bytearray(), bytearray(), bytearray()
            script = "echo out; echo err >&2; cat; exit 3"
            code = await guest.stream(script, stdout=out.extend, stderr=err.extend, stdin=b"in\n")
            assert (code, out, err) == (3, b"out\nin\n", b"err\n")
            assert await guest.stream("echo out; echo err >&2", stdout=both.extend) == 0
            assert sorted(both.splitlines()) == [b"err", b"out"]  # merged

    try:
        asyncio.run(go())
    finally:
        vm.delete(force=True)
