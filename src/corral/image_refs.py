"""Image references as users write them: an image name, `build:ID` (a build's result,
imported once as an image and launched like any other), or `sha256:HEX` (the image whose disk
blob has that digest: how aleph's rootfs refs name corral images).

Resolved here, above builds and instances, so that instances never import builds: every
entry point that launches (the CLI, the Python API, the node agent) resolves first.
"""

from __future__ import annotations

import re

from corral.builds.publish import PREFIX, image_for
from corral.context import Context
from corral.errors import NotFound

DIGEST = re.compile(r"sha256:([0-9a-f]{64})")


def resolve_image(ctx: Context, reference: str) -> str:
    """The name of the image `reference` means (imported from the build store if needed)."""
    if reference.startswith(PREFIX):
        return image_for(ctx, reference)
    digest = DIGEST.fullmatch(reference)
    if digest is not None:
        return by_digest(ctx, digest.group(1))
    return reference


def by_digest(ctx: Context, digest: str) -> str:
    """The (first by name) image whose disk is the blob `digest`."""
    for manifest in ctx.store.list():  # sorted by name
        if manifest.digest == digest:
            return manifest.name
    raise NotFound(
        f"no corral image has the digest {digest}",
        hint="import the image, or map the reference to an image name (aleph_images)",
    )
