"""`corral image warm`: boot an image once as a throwaway instance, wait until it is ready,
save it warm and remove it."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace

from corral.context import Context
from corral.errors import Conflict
from corral.image.manifest import Manifest, check_image_name
from corral.instance import guestops, lifecycle
from corral.instance.launch import launch
from corral.instance.options import LaunchOptions
from corral.instance.warm import save_warm

READY_TIMEOUT = 600.0


def make_warm_image(
    ctx: Context,
    image_name: str,
    as_name: str,
    options: LaunchOptions,
    *,
    timeout: float = READY_TIMEOUT,
    on_stage: Callable[[str], None] = lambda stage: None,
) -> Manifest:
    """Launch `image_name` with `options` (its name is made up here), wait until ready, save
    it as warm image `as_name`; the instance is removed whatever happens (if this process is
    killed outright, by the next command that looks: it is a throwaway instance)."""
    check_image_name(as_name)
    ctx.store.get(image_name)  # a missing image is named before anything starts
    if ctx.store.exists(as_name):
        raise Conflict(f"image {as_name!r} already exists")
    name = f"warm-{secrets.token_hex(4)}"
    options = replace(options, name=name, throwaway=True)
    on_stage("booting")
    launch(ctx, image_name, options)
    try:
        guestops.wait_ready(ctx, name, timeout=timeout, on_stage=on_stage)
        return save_warm(ctx, name, as_name, stop=True, on_stage=on_stage)
    finally:
        lifecycle.remove(ctx, name, force=True)
