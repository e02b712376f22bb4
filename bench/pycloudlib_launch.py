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
`-enable-kvm` chose) and the CPU to `max`, TCG's nearest to `host` (a later `-cpu` wins). It
has no initrd parameter, so `-initrd` goes into `launch_args` too. Prints the seconds from
before `launch` to after `wait`.
"""

from __future__ import annotations

import io
import sys
import time

from pycloudlib.qemu.cloud import Qemu


def main() -> int:
    workdir, image, kernel, initrd, cmdline, instance_type, key, user = sys.argv[1:9]
    config = io.StringIO(
        f'[qemu]\nimage_dir = "{workdir}"\nworking_dir = "{workdir}"\n'
        f'public_key_path = "{key}.pub"\nprivate_key_path = "{key}"\n'
    )
    cloud = Qemu(tag="bench", timestamp_suffix=False, config_file=config)
    try:
        start = time.perf_counter()
        instance = cloud.launch(
            image,
            instance_type=instance_type,
            kernel_path=kernel,
            kernel_cmdline=cmdline,
            username=user,
            launch_args=["-machine", "accel=tcg", "-cpu", "max", "-initrd", initrd],
        )
        instance.wait()
        elapsed = time.perf_counter() - start
        instance.delete()
    finally:
        cloud.clean()
    print(f"{elapsed:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
