import subprocess
from pathlib import Path

from corral.seed.iso import read_seed_iso, write_seed_iso


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
