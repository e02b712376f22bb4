"""corral: run QEMU virtual machines from cloud images.

import corral
vm = corral.launch("debian-12", name="web1", instance_type="c2m2048", wait=True)
print(vm.execute("uname -a").stdout.decode())
vm.delete()
"""

from corral.client import Corral, Instance
from corral.client import launch_instance as launch
from corral.errors import (
    Conflict,
    CorralError,
    DeadlineExceeded,
    GuestError,
    InvalidInput,
    NotFound,
    QemuError,
)
from corral.guest.ssh import ExecResult

__all__ = [
    "Conflict",
    "Corral",
    "CorralError",
    "DeadlineExceeded",
    "ExecResult",
    "GuestError",
    "Instance",
    "InvalidInput",
    "NotFound",
    "QemuError",
    "launch",
]
__version__ = "0.1.0"
