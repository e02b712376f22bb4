"""corral: run QEMU virtual machines from cloud images.

    import corral
    vm = corral.launch("debian-12", name="web1", instance_type="c2m2048", wait=True)
    print(vm.execute("uname -a").stdout.decode())
    vm.delete()

Names are imported lazily so that `corral` commands only load what they use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

from corral.version import __version__ as __version__

# With cryptography >= 48, importing asyncssh warns that DSA is deprecated: noise that a user
# cannot act on (corral never uses DSA keys), printed before a command's own output or error.
warnings.filterwarnings("ignore", module=r"asyncssh\.")

if TYPE_CHECKING:
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

_LAZY = {
    "Corral": ("corral.client", "Corral"),
    "Instance": ("corral.client", "Instance"),
    "launch": ("corral.client", "launch_instance"),
    "ExecResult": ("corral.guest.ssh", "ExecResult"),
    **{
        name: ("corral.errors", name)
        for name in (
            "Conflict",
            "CorralError",
            "DeadlineExceeded",
            "GuestError",
            "InvalidInput",
            "NotFound",
            "QemuError",
        )
    },
}

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


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'corral' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), attr)
