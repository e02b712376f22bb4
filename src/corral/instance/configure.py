"""`corral image configure`: boot an image once with a seed, let cloud-init do its work, shut
down cleanly and keep the result as a new image (a layer on the original).

Recipe: launch a throw-away instance -> stream its console -> wait for cloud-init -> (sysprep)
-> clean ACPI shutdown -> save the disk as an image -> remove the instance. On any failure the
instance is removed and nothing is saved.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from corral.context import Context
from corral.errors import Conflict, CorralError, GuestError
from corral.guest.ssh_keys import ensure_corral_key
from corral.image.manifest import Manifest, check_image_name
from corral.instance import guestops, lifecycle
from corral.instance.launch import launch
from corral.instance.options import LaunchOptions
from corral.instance.snapshot import snapshot_as_image
from corral.machine import console as serial

# Reset what makes a machine this machine, so that each launch of the image is a fresh instance
# to cloud-init, systemd and sshd. Every step tolerates a guest that lacks its tool.
SYSPREP = r"""
set -u
if cloud-init clean --logs --seed >/dev/null 2>&1 || cloud-init clean --logs >/dev/null 2>&1; then :
else rm -rf /var/lib/cloud/instances /var/lib/cloud/instance /var/lib/cloud/data; fi
[ -f /etc/machine-id ] && : > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub /etc/dropbear/dropbear_*_host_key
rm -rf /var/log/journal/*
find /var/log -type f -exec truncate -s 0 {} + 2>/dev/null
rm -f /root/.*_history /home/*/.*_history
for keys in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do
    [ -f "$keys" ] || continue
    { grep -vF "$CORRAL_KEY" "$keys" || true; } > "$keys.new"
    cat "$keys.new" > "$keys"
    rm -f "$keys.new"
done
sync
"""


@dataclass(frozen=True)
class ConfigureOptions:
    user_data: bytes
    meta_data: bytes | None = None
    vendor_data: bytes | None = None
    network_config: bytes | None = None
    sysprep: bool = False
    timeout: float = 900
    cpus: int = 2
    memory_mib: int = 2048
    flatten: bool = False


def configure(
    ctx: Context,
    image: str,
    as_name: str,
    options: ConfigureOptions,
    *,
    console: Callable[[bytes], None] = lambda data: None,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Manifest:
    """Configure `image` once with cloud-init and save the result as `as_name`."""
    check_image_name(as_name)
    if ctx.store.exists(as_name):
        raise Conflict(f"image {as_name!r} already exists")
    base = ctx.store.get(image)
    name = f"configure-{secrets.token_hex(4)}"
    launch(
        ctx,
        image,
        LaunchOptions(
            name=name, cpus=options.cpus, memory_mib=options.memory_mib,
            user_data=options.user_data, meta_data=options.meta_data,
            vendor_data=options.vendor_data, network_config=options.network_config,
        ),
    )  # fmt: skip
    files = ctx.home.instance(name)
    try:
        with serial.following(files.serial_log, console):
            _wait_for_cloud_init(ctx, name, options.timeout, on_stage)
            if options.sysprep:
                on_stage("sysprep")
                _sysprep(ctx, name)
            on_stage("shutdown")
            steps: list[str] = []
            lifecycle.stop(ctx, name, timeout=min(300.0, options.timeout), progress=steps.append)
            if steps != ["powerdown"]:
                raise GuestError(
                    "the guest did not shut down cleanly after configuration; nothing saved",
                    details=serial.tail(files.serial_log),
                )
        on_stage("saving")
        manifest = snapshot_as_image(ctx, name, as_name, flatten=options.flatten)
        manifest = manifest.replace(
            source=f"configure:{image}", kernel=base.kernel, initrd=base.initrd,
            cmdline=base.cmdline, default_user=base.default_user,
        )  # fmt: skip
        ctx.store.save(manifest)
        return manifest
    finally:
        lifecycle.remove(ctx, name, force=True)


def _wait_for_cloud_init(
    ctx: Context, name: str, timeout: float, on_stage: Callable[[str], None]
) -> None:
    try:
        guestops.wait_ready(ctx, name, timeout=timeout, on_stage=on_stage)
    except CorralError as exc:
        exc.message = f"configure failed: {exc.message}; nothing saved"
        raise


def _sysprep(ctx: Context, name: str) -> None:
    key = ensure_corral_key(ctx.home.ssh_key).split()[1]
    script = f"CORRAL_KEY='{key}'\n{SYSPREP}"
    result = guestops.execute(
        ctx, name, ["sh", "-s"], user="root", stdin=script.encode(), timeout=300
    )
    if result.exit_code != 0:
        raise GuestError(
            f"sysprep failed with exit code {result.exit_code}; nothing saved",
            details=result.stderr.decode(errors="replace").strip().splitlines()[-10:],
        )


def with_user_data(
    ctx: Context,
    user_data: bytes,
    *,
    console: Callable[[bytes], None] = lambda data: None,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Callable[[str, str], Manifest]:
    """How `corral image build --user-data` configures what it built: once, with sysprep,
    flattened into one standalone image."""
    options = ConfigureOptions(user_data=user_data, sysprep=True, flatten=True)

    def configure_image(image: str, as_name: str) -> Manifest:
        return configure(ctx, image, as_name, options, console=console, on_stage=on_stage)

    return configure_image
