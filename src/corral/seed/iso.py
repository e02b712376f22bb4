"""Write a NoCloud `cidata` ISO9660 volume in-process with pycdlib.

Joliet and Rock Ridge are both present so that every reader (Linux isofs, cloud-init's
blkid-based discovery, busybox) sees the plain lowercase file names.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import pycdlib

VOLUME_LABEL = "cidata"


def _iso_name(name: str, index: int) -> str:
    # ISO9660 level 1 wants 8.3 upper-case names; Rock Ridge and Joliet carry the real name.
    stem = "".join(c for c in name.upper() if c.isalnum())[:6] or "FILE"
    return f"/{stem}{index:02d}.;1"


def write_seed_iso(path: Path, files: Mapping[str, bytes]) -> None:
    """Write `files` (name -> content, e.g. 'meta-data') to a cidata ISO at `path`, atomically."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    for index, (name, content) in enumerate(sorted(files.items())):
        iso.add_fp(
            io.BytesIO(content),
            len(content),
            _iso_name(name, index),
            rr_name=name,
            joliet_path=f"/{name}",
        )
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        iso.write(os.fspath(tmp))
        tmp.replace(path)
    finally:
        iso.close()
        tmp.unlink(missing_ok=True)
