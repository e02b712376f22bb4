"""`corral image build RECIPE`: the built-in recipes (debian.py, tiny.py), each a builder
whose result (built.py) is imported into the store.

The build happens in a temporary directory under the store's tmp area and only its result is
imported, so a failed or interrupted build leaves the store unchanged.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from corral.errors import Conflict, InvalidInput
from corral.image.manage import STAGE_PREFIX, forget_abandoned_stages
from corral.image.manifest import Manifest, check_image_name
from corral.image.needs import Holders, ImageContext
from corral.image.recipes.built import BuiltImage

RECIPES = {
    "debian-12": "Debian 12 (bookworm) cloud image built with mmdebstrap, cloud-init included",
    "tiny": "a tiny busybox + dropbear guest that boots in seconds (for tests and demos)",
}


def _build(
    ctx: ImageContext,
    recipe: str,
    workdir: Path,
    packages: Sequence[str],
    log: Callable[[str], None],
) -> BuiltImage:
    cache = ctx.home.package_cache
    if recipe == "debian-12":
        from corral.image.recipes.debian import build_debian

        return build_debian(
            workdir,
            release="bookworm",
            mirror=ctx.config.debian_mirror,
            packages=packages,
            apt_cache=cache / "apt",
            log=log,
        )
    if recipe == "tiny":
        if packages:
            raise InvalidInput("the tiny recipe takes no extra packages")
        from corral.image.recipes.tiny import build_tiny_guest

        return build_tiny_guest(workdir, cache_dir=cache / "tiny")
    raise InvalidInput(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")


# Configure an image once and save the result: (image, as_name) -> the new image.
Configure = Callable[[str, str], Manifest]


def build_recipe(
    ctx: ImageContext,
    recipe: str,
    *,
    name: str | None = None,
    packages: Sequence[str] = (),
    configure: Configure | None = None,
    holders: Callable[[], Holders] | None = None,
    replace: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> Manifest:
    """Build a recipe and add the result to the store as `name` (default: the recipe's name).

    With `configure` (for --user-data: instance.configure.with_user_data, which boots the
    image), the built image is then configured once and only the configured result is kept
    under `name`; the unconfigured build is then collected as garbage, keeping what
    `holders` (required with `configure`) says stands on the store.
    """
    if configure is not None and holders is None:
        raise TypeError("build_recipe(configure=...) needs holders= to collect garbage safely")
    if recipe not in RECIPES:
        raise InvalidInput(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    name = check_image_name(name or recipe)
    if not replace and ctx.store.exists(name):
        raise Conflict(f"image {name!r} already exists", hint="use --replace to rebuild it")
    ctx.store.ensure()
    forget_abandoned_stages(ctx)
    # Build (and configure) under temporary names: the old image stays until the new one is
    # whole. The name carries this process's pid, so one that died can be told apart.
    stage = f"{STAGE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-build-", dir=ctx.home.image_tmp))
    try:
        built = _build(ctx, recipe, workdir, packages, log)
        log("importing into the image store")
        result = ctx.store.import_image(
            built.disk,
            stage,
            kernel=built.kernel,
            initrd=built.initrd,
            cmdline=built.cmdline,
            default_user=built.default_user,
            origin=f"build:{recipe}",
        )
        if configure is not None:
            log("configuring with the user-data")
            configured = f"{stage}-configured"
            result = configure(stage, configured)
            result = result.replace(source=f"build:{recipe}+user-data")
            _forget(ctx, stage)
            stage = configured
        final = result.replace(name=name)
        ctx.store.save(final)
        return final
    finally:
        _forget(ctx, stage)
        shutil.rmtree(workdir, ignore_errors=True)
        if holders is not None:  # the unconfigured build is garbage now
            ctx.store.collect_garbage(holders().keep)


def _forget(ctx: ImageContext, name: str) -> None:
    """Drop a temporary name (its blob stays if the final image uses it)."""
    ctx.home.manifest(name).unlink(missing_ok=True)
