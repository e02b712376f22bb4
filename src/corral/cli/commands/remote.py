"""`corral --remote NAME|URL ...`: the instance commands against a control plane, and
`corral remote add|ls|rm` to save control planes by name.

With a remote selected, launch, ls, inspect, logs, stop, start, restart, pause, resume and rm go
to the control plane's REST API instead of this machine's state directory; ssh, exec and cp
reach the VM through the control plane's tunnel (corral.cli.tunnels), and console follows its
console stream (read-only); the rest of the instance commands need the VM's files on this
machine and say so.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import typer

from corral.cli.context import get_context
from corral.cli.output import note, out, print_json, print_table
from corral.errors import InvalidInput
from corral.instance.options import LaunchRequest
from corral.remote.api import ControlPlaneClient
from corral.remote.saved import Remote
from corral.units import human_size

MIB = 1 << 20
# The commands that work with --remote; admin commands that only make sense here run here.
REMOTE_COMMANDS = ("launch", "ls", "inspect", "logs", "stop", "start", "restart", "pause",
                   "resume", "rm", "ssh", "exec", "cp", "console", "tunnel-stdio")  # fmt: skip
LOCAL_ANYWAY = ("remote", "version", "serve", "db", "token", "node")

_selected: list[Remote] = []


def select(target: str, token: str | None, command: str | None) -> None:
    """Called by the root callback: check the command can run remotely, resolve the remote."""
    from corral.remote import saved

    if command in LOCAL_ANYWAY:
        return
    if command not in REMOTE_COMMANDS:
        raise InvalidInput(
            f"`corral {command}` works on this machine only, not with --remote",
            hint=f"with --remote: {', '.join(REMOTE_COMMANDS)} (unset CORRAL_REMOTE to run "
            "it here)",
        )
    _selected[:] = [saved.resolve(remotes_file(), target, token)]


def active() -> ControlPlaneClient | None:
    return ControlPlaneClient(_selected[0]) if _selected else None


def remotes_file() -> Path:
    return get_context().config.home / "remotes.json"


# --- corral remote add | ls | rm ------------------------------------------------------------

app = typer.Typer(help="Control planes saved by name, for --remote NAME.", no_args_is_help=True)


@app.command("add")
def remote_add(
    name: str = typer.Argument(..., help="A short name for it."),
    url: str = typer.Argument(..., help="The control plane, e.g. http://10.0.0.5:8000."),
    token: str = typer.Option(..., "--token", envvar="CORRAL_TOKEN", help="An API token."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a remote of this name."),
    no_check: bool = typer.Option(False, "--no-check", help="Do not contact it now."),
) -> None:
    """Save a control plane's URL and token (in STATE/remotes.json, mode 0600)."""
    from corral.remote import saved

    remote = Remote(name, saved.check_url(url), saved.check_token(token))
    if not no_check:
        with ControlPlaneClient(remote) as client:
            hosts = client.host_names()  # proves the URL and the token
        note(f"{url}: reached, {len(hosts)} host(s)")
    saved.add(remotes_file(), name, url, token, replace=replace)
    out.print(f"saved remote {name}: use `corral --remote {name} ls`", markup=False)


@app.command("ls")
def remote_ls(json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List saved control planes (never their tokens)."""
    from corral.remote import saved

    remotes = sorted(saved.load(remotes_file()).values(), key=lambda r: r.name or "")
    if json_out:
        print_json([{"name": r.name, "url": r.url} for r in remotes])
        return
    print_table(("NAME", "URL"), [(r.name, r.url) for r in remotes])


@app.command("rm")
def remote_rm(name: str = typer.Argument(..., help="The remote's name.")) -> None:
    """Forget a saved control plane."""
    from corral.remote import saved

    saved.remove(remotes_file(), name)
    out.print(f"removed remote {name}", markup=False)


# --- the instance commands, remotely ----------------------------------------------------------


def launch(
    client: ControlPlaneClient, image: str, request: LaunchRequest, *, start: bool, wait: bool
) -> None:
    """`corral launch` on the control plane: scheduled onto a host, created and started."""
    unsupported = [flag for field, flag in _LOCAL_ONLY_LAUNCH.items() if getattr(request, field)]
    if not request.seed:
        unsupported.append("--no-seed")
    if unsupported:
        raise InvalidInput(
            f"{', '.join(unsupported)}: not available with --remote",
            hint="the control plane takes cpus, memory, disk size, ssh keys and user-data",
        )
    options = request.options()
    body: dict[str, Any] = {
        "name": options.name,
        "hypervisor": "qemu",
        "image": image,
        "boot_vcpus": options.cpus,
        "max_vcpus": options.cpus,
        "memory_size": options.memory_mib * MIB,
        "ssh_keys": list(options.ssh_keys),
        "start": start,
    }
    if options.disk_size is not None:
        body["disk_size"] = options.disk_size
    if options.user_data is not None:
        body["user_data"] = options.user_data.decode("utf-8", "replace")
    vm = client.create(body)
    host = client.host_names().get(vm["host_id"], vm["host_id"])
    if wait:
        note(f"{vm['name']}: running on its host (the guest is not reachable from here)")
    out.print(f"{vm['name']} is {vm['status']} on host {host} ({client.remote.url})", markup=False)
    out.print(f"  logs:     corral --remote {_ref(client)} logs {vm['name']}", markup=False)
    out.print(f"  stop:     corral --remote {_ref(client)} stop {vm['name']}", markup=False)


# LaunchRequest's fields that only a launch on this machine takes, by their flags.
_LOCAL_ONLY_LAUNCH = {
    "volumes": "--volume",
    "network_config": "--network-config",
    "vendor_data": "--vendor-data",
    "meta_data": "--meta-data",
    "kernel": "--kernel",
    "initrd": "--initrd",
    "cmdline": "--cmdline",
    "forwards": "--forward",
    "nics": "--tap",
    "networks": "--network",
    "cold_if_needed": "--cold-if-needed",
    "publish": "--publish",
}


def _ref(client: ControlPlaneClient) -> str:
    return client.remote.name or client.remote.url


def ls(client: ControlPlaneClient, json_out: bool) -> None:
    vms = client.vms()
    hosts = client.host_names()
    for vm in vms:
        vm["host"] = hosts.get(vm["host_id"], vm["host_id"])
    if json_out:
        print_json(vms)
        return
    print_table(
        ("NAME", "STATE", "HOST", "IMAGE", "CPUS", "MEMORY", "DISK"),
        [
            (
                vm["name"],
                vm["status"],
                vm["host"],
                vm["image"] or vm["boot_source_id"] or vm["image_object_id"],
                vm["boot_vcpus"],
                f"{vm['memory_size'] // MIB}M",
                human_size(vm["disk_size"]) if vm["disk_size"] else "",
            )
            for vm in vms
        ],
    )


def inspect(client: ControlPlaneClient, name: str, json_out: bool) -> None:
    vm = client.vm(name)
    vm["host"] = client.host_names().get(vm["host_id"], vm["host_id"])
    if json_out:
        print_json(vm)
        return
    for key, value in vm.items():
        out.print(f"{key + ':':15} {value}", markup=False)


def logs(client: ControlPlaneClient, name: str, follow: bool) -> None:
    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    if follow:
        client.follow_console(name, write)
    else:
        write(client.console(name))


def console(client: ControlPlaneClient, name: str) -> None:
    note(f"{name}: the console through the control plane is read-only (Ctrl-C to leave)")
    logs(client, name, follow=True)


def ssh(client: ControlPlaneClient, name: str, command: list[str]) -> None:
    """The system ssh to the VM, through the tunnel (`corral tunnel-stdio` as ProxyCommand)."""
    from corral.cli import tunnels

    key = tunnels.private_key(get_context().config.ssh_key)
    argv, env = tunnels.ssh_argv(tunnels.RemoteVm(client, name), key, command)
    client.close()
    try:
        os.execvpe("ssh", argv, env)
    except FileNotFoundError:
        raise InvalidInput("ssh not found", hint="apt-get install openssh-client") from None


def exec_(client: ControlPlaneClient, name: str, command: list[str] | str) -> int:
    """Run a command in the VM through the tunnel, streaming its output; its exit code."""
    from corral.cli import tunnels

    def sink(stream: TextIO) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            stream.buffer.write(data)
            stream.buffer.flush()

        return write

    vm = tunnels.RemoteVm(client, name)
    key = tunnels.private_key(get_context().config.ssh_key)
    return tunnels.in_guest(
        vm,
        key,
        lambda guest: guest.stream(command, stdout=sink(sys.stdout), stderr=sink(sys.stderr)),
    )


def cp(client: ControlPlaneClient, src: str, dst: str) -> None:
    from corral.cli import tunnels

    tunnels.copy(client, tunnels.private_key(get_context().config.ssh_key), src, dst)


def tunnel_stdio(
    vm: str = typer.Argument(..., help="The VM's id or name on the control plane."),
    port: int = typer.Argument(..., help="Its TCP port (22, or one it forwards)."),
) -> None:
    """Pipe stdin and stdout to a port of a VM through the control plane (ssh's ProxyCommand:
    `corral --remote LAB ssh NAME` uses it)."""
    from corral.remote.tunnel import stdio

    if not _selected:
        raise InvalidInput("tunnel-stdio needs --remote NAME|URL")
    with ControlPlaneClient(_selected[0]) as client:
        vm_id = vm if _is_uuid(vm) else client.vm(vm)["id"]
    stdio(_selected[0], vm_id, port)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="remote")
    root.command("tunnel-stdio", hidden=True)(tunnel_stdio)


def act(client: ControlPlaneClient, name: str, action: str) -> None:
    vm = client.act(name, action)
    out.print(f"{name} {vm['status']}", markup=False)


def restart(client: ControlPlaneClient, name: str, force: bool) -> None:
    if client.vm(name)["status"] in ("running", "paused"):
        client.act(name, "force-stop" if force else "stop")
    act(client, name, "start")


def rm(client: ControlPlaneClient, names: list[str], force: bool) -> None:
    for name in names:
        status = client.vm(name)["status"]
        if status in ("running", "paused") and not force:
            raise InvalidInput(
                f"VM {name!r} is {status}",
                hint=f"stop it first, or: corral --remote {_ref(client)} rm --force {name}",
            )
        client.delete(name)
        out.print(f"removed {name}", markup=False)
