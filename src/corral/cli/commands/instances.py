"""Instance commands: launch, wait, exec, ssh, cp, console, logs, lifecycle, snapshots."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import typer

from corral.cli.commands import remote
from corral.cli.context import get_context
from corral.cli.files import read_file
from corral.cli.output import note, out, print_json, print_table
from corral.errors import InvalidInput
from corral.instance import lifecycle
from corral.instance.options import LaunchRequest
from corral.instance.view import instance_view
from corral.units import human_size

JSON = typer.Option(False, "--json", help="Print JSON.")
TIMEOUT = typer.Option(300.0, "--timeout", help="Seconds to wait for the guest to be ready.")


def _wait(name: str, timeout: float) -> None:
    from corral.instance import guestops

    guestops.wait_ready(
        get_context(), name, timeout=timeout, on_stage=lambda stage: note(f"{name}: {stage}")
    )


def _how_to_reach(name: str) -> None:
    ctx = get_context()
    record, seen = lifecycle.status(ctx, name)
    files = ctx.home.instance(name)
    out.print(f"{name} is {seen.state}", markup=False)
    if seen.state == "stopped":
        out.print(f"  start:    corral start {name}", markup=False)
    where = None
    if record.ssh_port:
        where = f"port {record.ssh_port} on 127.0.0.1"
    elif record.networks:
        where = f"{record.address}:22 on network {record.networks[0].network}"
    if where is not None:  # on taps of its own only: reached at an address corral does not know
        user = record.ssh_user
        out.print(f"  ssh:      corral ssh {name}   ({where}, user {user})", markup=False)
    out.print(f"  console:  corral console {name}   (socket {files.serial_socket})", markup=False)
    out.print(f"  logs:     corral logs {name}   ({files.serial_log})", markup=False)
    for fwd in record.forwards:
        out.print(f"  forward:  {fwd.to_forward()}", markup=False)
    for nic in record.networks:
        out.print(f"  network:  {nic.network}   ({nic.ipv4}, mac {nic.mac})", markup=False)
    for pub in record.published:
        out.print(f"  publish:  {pub.to_forward()}", markup=False)
    for tap in record.nics:
        out.print(f"  tap:      {tap.tap}   (mac {tap.mac}; reach it at its address there)",
                  markup=False)  # fmt: skip


def launch(
    image: str = typer.Argument(..., help="Image name (see: corral image ls)."),
    name: str = typer.Option(..., "--name", "-n", help="Instance name; also its hostname."),
    instance_type: str | None = typer.Option(None, "--type", help="c<cpus>m<memory MiB>."),
    cpus: int | None = typer.Option(None, "--cpus", help="Number of vCPUs (default 2)."),
    memory: str | None = typer.Option(None, "--memory", help="Memory, e.g. 2G (default 2G)."),
    disk_size: str | None = typer.Option(None, "--disk-size", help="Disk size (default: image)."),
    volumes: list[str] = typer.Option([], "--volume", help="Add a blank data disk of SIZE."),
    ssh_keys: list[Path] = typer.Option([], "--ssh-key", help="Authorise this public key."),
    user_data: Path | None = typer.Option(None, "--user-data", help="cloud-init user-data."),
    network_config: Path | None = typer.Option(None, "--network-config"),
    vendor_data: Path | None = typer.Option(None, "--vendor-data"),
    meta_data: Path | None = typer.Option(None, "--meta-data", help="Merged over corral's."),
    kernel: Path | None = typer.Option(None, "--kernel", help="Boot this kernel directly."),
    initrd: Path | None = typer.Option(None, "--initrd"),
    cmdline: str | None = typer.Option(None, "--cmdline", help="Kernel command line."),
    forwards: list[str] = typer.Option([], "--forward", help="[ADDR:]HOSTPORT:GUESTPORT"),
    nics: list[str] = typer.Option(
        [],
        "--tap",
        help="NAME[,mac=MAC][,mtu=N]: a NIC on this existing TAP device (after --network's "
        "NICs; then no user-mode NIC).",
    ),
    networks: list[str] = typer.Option(
        [],
        "--network",
        help="NAME[,ip=ADDR][,mac=MAC]: a NIC on this managed network (repeatable, in order; "
        "then no user-mode NIC). Needs CAP_NET_ADMIN.",
    ),
    publish: list[str] = typer.Option(
        [],
        "--publish",
        help="[ADDR:]HOSTPORT:GUESTPORT\\[/udp]: publish a port of a VM on a managed network "
        "(ADDR 127.0.0.1 by default).",
    ),
    no_seed: bool = typer.Option(False, "--no-seed", help="Attach no cloud-init seed."),
    no_start: bool = typer.Option(
        False, "--no-start", help="Create the VM stopped; `corral start NAME` boots it."
    ),
    cold_if_needed: bool = typer.Option(
        False,
        "--cold-if-needed",
        help="A warm image whose saved state does not fit this launch: boot it cold instead.",
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait until the guest is ready."),
    timeout: float = TIMEOUT,
) -> None:
    """Launch an image as a new VM (detached: it keeps running after this command). A warm
    image's launch restores its saved state instead of booting."""
    if no_start and wait:
        raise InvalidInput("--no-start and --wait exclude each other: a stopped VM is not ready")
    client = remote.active()
    if client is None and no_seed and (user_data or network_config or vendor_data or meta_data):
        raise InvalidInput(
            "--no-seed cannot be combined with seed files (user-data, meta-data, ...)"
        )
    request = LaunchRequest(
        name=name,
        instance_type=instance_type,
        cpus=cpus,
        memory=memory,
        disk_size=disk_size,
        volumes=volumes,
        ssh_keys=ssh_keys or _default_keys(),
        user_data=read_file(user_data),
        network_config=read_file(network_config),
        vendor_data=read_file(vendor_data),
        meta_data=read_file(meta_data),
        kernel=kernel,
        initrd=initrd,
        cmdline=cmdline,
        forwards=forwards,
        nics=nics,
        networks=networks,
        publish=publish,
        seed=not no_seed,
        cold_if_needed=cold_if_needed,
    )
    if client is not None:
        with client:
            remote.launch(client, image, request, start=not no_start, wait=wait)
        return
    from corral.image_refs import resolve_image
    from corral.instance.launch import launch as launch_instance

    ctx = get_context()
    if networks and network_config is not None:
        note(f"{name}: using your --network-config as given; corral writes none for --network")
    options = request.options()
    record = launch_instance(ctx, resolve_image(ctx, image), options, start=not no_start)
    if record.warm:
        from corral.guest.userdata import ignored_modules

        ignored = ignored_modules(options.user_data)
        note(f"{name}: restored from warm image {record.image}")
        if ignored:
            note(f"{name}: cloud-config {', '.join(ignored)}: applied at a first boot only, "
                 "not at a warm launch")  # fmt: skip
    if wait:
        _wait(name, timeout)
    _how_to_reach(name)


def _default_keys() -> list[Path]:
    key = get_context().config.ssh_key
    return [key] if key else []


def _argv(command: list[str] | None) -> list[str]:
    # Options parsing stops at NAME, so a literal "--" separator reaches us: drop it.
    command = list(command or [])
    return command[1:] if command[:1] == ["--"] else command


def wait(name: str, timeout: float = TIMEOUT) -> None:
    """Wait until the VM answers on SSH and cloud-init is done (exit 0 only when ready)."""
    _wait(name, timeout)


def exec_(
    name: str = typer.Argument(...),
    command: list[str] = typer.Argument(..., help="Command and arguments (after --)."),
) -> None:
    """Run a command in the VM, streaming its output; exit with its exit code."""

    def write(stream: TextIO) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            stream.buffer.write(data)
            stream.buffer.flush()

        return sink

    from corral.instance import guestops

    command = _argv(command)
    if not command:
        raise InvalidInput("no command given", hint=f"corral exec {name} -- CMD ...")
    if (client := remote.active()) is not None:
        with client:
            raise typer.Exit(
                remote.exec_(client, name, command if len(command) > 1 else command[0])
            )
    code = guestops.execute_streaming(
        get_context(),
        name,
        command if len(command) > 1 else command[0],
        stdout=write(sys.stdout),
        stderr=write(sys.stderr),
    )
    raise typer.Exit(code)


def ssh(
    name: str = typer.Argument(...),
    command: list[str] = typer.Argument(None, help="Optional command (after --)."),
) -> None:
    """Open an interactive shell in the VM with the system ssh client."""
    if (client := remote.active()) is not None:
        remote.ssh(client, name, _argv(command))
        return
    from corral.instance.guestops import ssh_target

    ctx = get_context()
    record, seen = lifecycle.status(ctx, name)
    if seen.state != "running":
        raise InvalidInput(f"instance {name!r} is {seen.state}, not running")
    target = ssh_target(ctx, record)  # its forward, or its address on a managed network
    argv = [
        "ssh",
        "-i",
        str(ctx.home.ssh_key),
        "-p",
        str(target.port),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        f"{target.user}@{target.host}",
        *_argv(command),
    ]
    try:
        os.execvp("ssh", argv)
    except FileNotFoundError:
        raise InvalidInput("ssh not found", hint="apt-get install openssh-client") from None


def cp(
    src: str = typer.Argument(..., help="Local path or NAME:/path."),
    dst: str = typer.Argument(..., help="Local path or NAME:/path."),
) -> None:
    """Copy files or directories between the host and a VM."""
    from corral.instance import guestops

    if (client := remote.active()) is not None:
        with client:
            remote.cp(client, src, dst)
        return
    guestops.copy(get_context(), src, dst)


def console(name: str) -> None:
    """Attach to the serial console (detach with Ctrl-])."""
    from corral.cli.console import attach

    if (client := remote.active()) is not None:
        with client:
            remote.console(client, name)
        return
    ctx = get_context()
    _, seen = lifecycle.status(ctx, name)
    if seen.pid is None:
        raise InvalidInput(f"instance {name!r} is {seen.state}: no console")
    attach(ctx.home.instance(name).serial_socket)


def logs(
    name: str, follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing.")
) -> None:
    """Print the serial console log."""
    if (client := remote.active()) is not None:
        with client:
            remote.logs(client, name, follow)
        return
    from corral.cli.console import print_log

    ctx = get_context()
    lifecycle.status(ctx, name)
    print_log(ctx, name, follow=follow)


def stop(
    name: str,
    force: bool = typer.Option(False, "--force", help="Skip the ACPI powerdown."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for powerdown."),
) -> None:
    """Stop a VM: ACPI powerdown, then QMP quit, then SIGKILL."""
    if (client := remote.active()) is not None:
        with client:
            remote.act(client, name, "force-stop" if force else "stop")
        return
    lifecycle.stop(
        get_context(),
        name,
        force=force,
        timeout=timeout,
        progress=lambda step: note(f"{name}: {step}"),
    )
    out.print(f"{name} stopped", markup=False)


def start(
    name: str,
    wait: bool = typer.Option(False, "--wait", help="Wait until ready."),
    timeout: float = TIMEOUT,
) -> None:
    """Boot a stopped VM again, with the same disk, identity and ports."""
    if (client := remote.active()) is not None:
        with client:
            remote.act(client, name, "start")
        return
    lifecycle.start(get_context(), name)
    if wait:
        _wait(name, timeout)
    _how_to_reach(name)


def restart(
    name: str,
    force: bool = typer.Option(False, "--force"),
    wait: bool = typer.Option(False, "--wait", help="Wait until ready."),
    timeout: float = TIMEOUT,
) -> None:
    """Stop and start a VM."""
    if (client := remote.active()) is not None:
        with client:
            remote.restart(client, name, force)
        return
    lifecycle.restart(get_context(), name, force=force)
    if wait:
        _wait(name, timeout)
    _how_to_reach(name)


def pause(name: str) -> None:
    """Pause a running VM's vCPUs."""
    if (client := remote.active()) is not None:
        with client:
            remote.act(client, name, "pause")
        return
    lifecycle.pause(get_context(), name)
    out.print(f"{name} paused", markup=False)


def resume(name: str) -> None:
    """Resume a paused VM."""
    if (client := remote.active()) is not None:
        with client:
            remote.act(client, name, "resume")
        return
    lifecycle.resume(get_context(), name)
    out.print(f"{name} running", markup=False)


def rm(
    names: list[str] = typer.Argument(..., help="Instance name(s)."),
    force: bool = typer.Option(False, "--force", "-f", help="Remove even if running."),
) -> None:
    """Remove VMs with their disks, seeds, sockets and ports."""
    if (client := remote.active()) is not None:
        with client:
            remote.rm(client, names, force)
        return
    for name in names:
        lifecycle.remove(get_context(), name, force=force)
        out.print(f"removed {name}", markup=False)


def ls(json_out: bool = JSON) -> None:
    """List instances."""
    if (client := remote.active()) is not None:
        with client:
            remote.ls(client, json_out)
        return
    ctx = get_context()
    items = [instance_view(ctx.home, r, s) for r, s in lifecycle.list_instances(ctx)]
    if json_out:
        print_json(items)
        return
    print_table(
        ("NAME", "STATE", "IMAGE", "CPUS", "MEMORY", "DISK", "SSH", "PID"),
        [
            (
                i["name"],
                i["state"],
                i["image"],
                i["cpus"],
                f"{i['memory_mib']}M",
                human_size(i["disk_size"]),
                i["ssh_port"] or i["address"] or "-",
                i["pid"],
            )
            for i in items
        ],
    )


def inspect(name: str, json_out: bool = JSON) -> None:
    """Show one instance."""
    if (client := remote.active()) is not None:
        with client:
            remote.inspect(client, name, json_out)
        return
    ctx = get_context()
    record, seen = lifecycle.status(ctx, name)
    data = instance_view(ctx.home, record, seen)
    if json_out:
        print_json(data)
        return
    for key, value in data.items():
        out.print(f"{key + ':':15} {value}", markup=False)


def snapshot_(
    name: str,
    as_image: str | None = typer.Option(None, "--as", help="Save the disk as a new image."),
    tag: str | None = typer.Option(None, "--tag", help="Create an internal snapshot."),
    list_: bool = typer.Option(False, "--list", help="List internal snapshots."),
    restore: str | None = typer.Option(None, "--restore", help="Restore an internal snapshot."),
    delete: str | None = typer.Option(None, "--delete", help="Delete an internal snapshot."),
    memory: bool = typer.Option(
        False, "--memory", help="With --as: save the running VM's memory too (a warm image)."
    ),
    stop: bool = typer.Option(False, "--stop", help="With --memory: stop the VM after saving."),
    json_out: bool = JSON,
) -> None:
    """Snapshot a VM's disk: as a new image (--as; with --memory, a warm image that launches
    restore), or internal snapshots of a stopped VM."""
    from corral.instance import snapshot

    ctx = get_context()
    chosen = [x for x in (as_image, tag, restore, delete) if x is not None] + ([1] if list_ else [])
    if len(chosen) != 1:
        raise InvalidInput("give exactly one of --as, --tag, --list, --restore, --delete")
    if (memory and as_image is None) or (stop and not memory):
        raise InvalidInput("--memory goes with --as IMAGE, and --stop with --memory")
    if memory and as_image is not None:
        from corral.instance.warm import save_warm

        manifest = save_warm(ctx, name, as_image, stop=stop,
                             on_stage=lambda stage: note(f"{name}: {stage}"))  # fmt: skip
        assert manifest.warm is not None
        then = "stopped" if stop else "running on"
        size = human_size(manifest.warm.state_size)
        out.print(f"saved {name} warm as image {manifest.name} (state {size}); {name} {then}",
                  markup=False)  # fmt: skip
    elif as_image is not None:
        manifest = snapshot.snapshot_as_image(ctx, name, as_image)
        out.print(f"saved {name} as image {manifest.name}", markup=False)
    elif tag is not None:
        snapshot.create_tag(ctx, name, tag)
        out.print(f"{name}: snapshot {tag} created", markup=False)
    elif restore is not None:
        snapshot.restore_tag(ctx, name, restore)
        out.print(f"{name}: snapshot {restore} restored", markup=False)
    elif delete is not None:
        snapshot.delete_tag(ctx, name, delete)
        out.print(f"{name}: snapshot {delete} deleted", markup=False)
    else:
        tags = snapshot.list_tags(ctx, name)
        if json_out:
            print_json(tags)
        else:
            print_table(("TAG", "CREATED"), [(t["tag"], t["created"]) for t in tags])


def register(app: typer.Typer) -> None:
    app.command()(launch)
    app.command()(wait)
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_)
    app.command(context_settings={"allow_interspersed_args": False})(ssh)
    app.command()(cp)
    app.command()(console)
    app.command()(logs)
    for command in (stop, start, restart, pause, resume, rm, ls, inspect):
        app.command()(command)
    app.command("snapshot")(snapshot_)
