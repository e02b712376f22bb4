"""Image references as users write them: an image name, or `build:ID` (a build's result,
imported once as an image and launched like any other).

Resolved here, above builds and instances, so that instances never import builds: every
entry point that launches (the CLI, the Python API, the node agent) resolves first.
"""

from __future__ import annotations

from corral.builds.publish import PREFIX, image_for
from corral.context import Context


def resolve_image(ctx: Context, reference: str) -> str:
    """The name of the image `reference` means (imported from the build store if needed)."""
    return image_for(ctx, reference) if reference.startswith(PREFIX) else reference
