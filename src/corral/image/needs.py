"""What image operations need of the context they run in, declared here so image/ never
imports corral.context (which sits above it: the context builds the image store).

`corral.context.Context` is such a context; so is anything with these four attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from corral.config import Config
from corral.image.qemu_img import QemuImg
from corral.image.store import ImageStore
from corral.layout import Home


class ImageContext(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def home(self) -> Home: ...

    @property
    def qemu_img(self) -> QemuImg: ...

    @property
    def store(self) -> ImageStore: ...


@dataclass(frozen=True)
class Holders:
    """What stands on the image store from above it, which image/ cannot see: the instances
    on each blob, and every blob something outside the store needs (instance disks' images,
    kernels and initrds; the base images of build layers). Garbage collection keeps them.

    corral.image_holders computes them; image operations that delete take them as given.
    """

    users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # blob -> instances
    keep: frozenset[str] = frozenset()
