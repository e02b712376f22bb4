import io
import os
import subprocess
from pathlib import Path

import pycdlib

from corral.seed.iso import write_seed_iso


def read_seed_iso(path: Path) -> dict[str, bytes]:
    """Read the files back from a seed ISO by their Rock Ridge names (for inspect and tests)."""
    iso = pycdlib.PyCdlib()
    iso.open(os.fspath(path))
    try:
        out: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child.is_dot() or child.is_dotdot():
                continue
            name = child.rock_ridge.name().decode()
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            out[name] = buf.getvalue()
        return out
    finally:
        iso.close()


def test_round_trip_with_lowercase_names(tmp_path: Path) -> None:
    files = {"meta-data": b"instance-id: x\n", "user-data": b"#cloud-config\n",
             "network-config": b"version: 2\n", "vendor-data": b"#cloud-config\n"}  # fmt: skip
    path = tmp_path / "seed.iso"
    write_seed_iso(path, files)
    assert read_seed_iso(path) == files
    assert not list(tmp_path.glob(".*tmp"))


def test_volume_label_is_cidata(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, {"meta-data": b"instance-id: x\n", "user-data": b""})
    out = subprocess.run(["blkid", "-o", "export", str(path)], capture_output=True, text=True)
    assert "LABEL=cidata" in out.stdout
    assert "TYPE=iso9660" in out.stdout
