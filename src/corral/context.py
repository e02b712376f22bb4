"""The context every operation runs in: configuration, state layout, image store, host facts.

Host facts are probed lazily and once per context, so commands that never start QEMU never pay
for the probe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from corral.config import Config, load_config
from corral.host.probe import HostFacts, detect_host
from corral.image.qemu_img import QemuImg
from corral.image.store import ImageStore
from corral.layout import Home


@dataclass
class Context:
    config: Config = field(default_factory=load_config)

    @functools.cached_property
    def home(self) -> Home:
        return Home(self.config.home)

    @functools.cached_property
    def qemu_img(self) -> QemuImg:
        return QemuImg(self.config.qemu_img)

    @functools.cached_property
    def store(self) -> ImageStore:
        return ImageStore(self.home, self.qemu_img)

    @functools.cached_property
    def host(self) -> HostFacts:
        kernels: list[Path] = [
            self.store.blob(m.kernel) for m in self.store.list() if m.kernel is not None
        ]
        return detect_host(self.config, kernels)
