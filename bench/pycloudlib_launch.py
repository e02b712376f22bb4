"""One pycloudlib QEMU launch to ready, for bench/cold_boot.py: run with a Python that has
pycloudlib (a separate venv: `python3 -m venv bench/.venv-pycloudlib && bench/.venv-pycloudlib/
bin/pip install pycloudlib`), never with corral's.

    pycloudlib_launch.py WORKDIR IMAGE KERNEL INITRD CMDLINE TYPE KEY USER

pycloudlib's Qemu cloud: `launch(image, instance_type=TYPE, kernel_path=..., kernel_cmdline=...,
launch_args=...)`, then `instance.wait()` (QMP status running, ssh `cat /proc/sys/kernel/random/
boot_id` retried every second, `systemctl is-active cloud-init.target` retried every second,
then `cloud-init status --wait --long`), then `instance.delete()` and `cloud.clean()`.
pycloudlib always passes `-enable-kvm -cpu host`; KVM hangs guests on this host, so
`launch_args` switches the accelerator to TCG (`-machine accel=tcg` replaces the accelerator
`-enable-kvm` chose) and the CPU to `max`, TCG's nearest to `host` (a later `-cpu` wins).
Its NIC is `-net nic` (an e1000, which Debian's cloud kernel has no driver for), so a
virtio-net NIC is added on the same hub. Its `kernel_path` parameter is ignored when given
(pycloudlib 11.1.10: `_get_kernel_path` only ever finds the kernel beside the image), so the
kernel is linked beside the image under the name it looks for (`*-server-cloudimg-amd64-
vmlinuz-generic`, as its own downloads are); it has no initrd parameter, so `-initrd` goes
into `launch_args`. Its root disk is `-hda` (/dev/sda) and its seed the first virtio disk, so
the caller's command line says root=/dev/sda. Prints the seconds from before `launch` to after
`wait`, then the end of the guest's console.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

from pycloudlib.qemu.cloud import Qemu

# TCG instead of pycloudlib's KVM, TCG's nearest to its `-cpu host`, and a NIC the guest has a
# driver for.
LAUNCH_ARGS = ["-machine", "accel=tcg", "-cpu", "max", "-net", "nic,model=virtio-net-pci"]


def main() -> int:
    workdir, image, kernel, initrd, cmdline, instance_type, key, user = sys.argv[1:9]
    config = io.StringIO(
        f'[qemu]\nimage_dir = "{workdir}"\nworking_dir = "{workdir}"\n'
        f'public_key_path = "{key}.pub"\nprivate_key_path = "{key}"\n'
    )
    images = Path(workdir, "images")
    images.mkdir()
    (images / "debian-12.img").symlink_to(image)
    (images / "debian-12-server-cloudimg-amd64-vmlinuz-generic").symlink_to(kernel)
    cloud = Qemu(tag="bench", timestamp_suffix=False, config_file=config)
    try:
        start = time.perf_counter()
        instance = cloud.launch(
            str(images / "debian-12.img"),
            instance_type=instance_type,
            kernel_cmdline=cmdline,
            username=user,
            launch_args=[*LAUNCH_ARGS, "-initrd", initrd],
        )
        instance.wait()
        elapsed = time.perf_counter() - start
        console = instance.console_log()
        instance.delete()
    finally:
        cloud.clean()
    print(f"{elapsed:.3f}")
    print(console[-20000:])  # for the guest's "cloud-init ... finished ... Up N seconds"
    return 0


if __name__ == "__main__":
    sys.exit(main())
