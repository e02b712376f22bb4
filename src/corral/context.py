"""The context every operation runs in: configuration, state layout, image store, host facts.

Everything is built lazily and once per context: commands that never start QEMU never pay for
the host probe, and commands that never touch images never read the store. It sits above
image/ and host/ (it builds their objects); they never import it (image.needs says what image
operations need of it).
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
from corral.private import make_private


@dataclass
class Context:
    config: Config = field(default_factory=load_config)

    @functools.cached_property
    def home(self) -> Home:
        home = Home(self.config.home)
        make_private(home)  # others may not read state: create it 0700, tighten an old one
        return home

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
