"""The catalog: built-in aliases, overrides from the config, and pulls from a local mirror laid
out like the official sites (same paths, same checksum file formats)."""

from __future__ import annotations

import hashlib
import json
import lzma
from dataclasses import replace
from pathlib import Path

import pytest

from corral.context import Context
from corral.errors import InvalidInput, NotFound
from corral.image.fetch.catalog import listing_names, load_catalog, normalize_arch
from corral.image.fetch.download import Options
from corral.image.fetch.pull import pull
from helpers import corral
from image.fetch.support import Server, sha256

FAST = Options(timeout=5, retries=2, retry_delay=0.01)

OFFICIAL = {
    ("ubuntu:jammy", "x86_64"): "https://cloud-images.ubuntu.com/releases/jammy/release/"
    "ubuntu-22.04-server-cloudimg-amd64.img",
    ("ubuntu:noble", "aarch64"): "https://cloud-images.ubuntu.com/releases/noble/release/"
    "ubuntu-24.04-server-cloudimg-arm64.img",
    ("ubuntu:jammy/daily", "x86_64"): "https://cloud-images.ubuntu.com/jammy/current/"
    "jammy-server-cloudimg-amd64.img",
    ("debian:12", "x86_64"): "https://cloud.debian.org/images/cloud/bookworm/latest/"
    "debian-12-genericcloud-amd64.qcow2",
    ("debian:13", "aarch64"): "https://cloud.debian.org/images/cloud/trixie/latest/"
    "debian-13-genericcloud-arm64.qcow2",
    ("rocky:9", "x86_64"): "https://download.rockylinux.org/pub/rocky/9/images/x86_64/"
    "Rocky-9-GenericCloud.latest.x86_64.qcow2",
    ("centos:7", "x86_64"): "https://cloud.centos.org/centos/7/images/"
    "CentOS-7-x86_64-GenericCloud.qcow2.xz",
    ("centos:7", "aarch64"): "https://cloud.centos.org/centos/7/images/"
    "CentOS-7-aarch64-GenericCloud.qcow2.xz",
}
CHECKSUM_FILES = {
    "ubuntu:jammy": "SHA256SUMS",
    "ubuntu:noble": "SHA256SUMS",
    "ubuntu:jammy/daily": "SHA256SUMS",
    "debian:12": "SHA512SUMS",
    "debian:13": "SHA512SUMS",
    "rocky:9": "{file}.CHECKSUM",
    "centos:7": "sha256sum.txt",
}
USERS = {"ubuntu": "ubuntu", "debian": "debian", "fedora": "fedora", "rocky": "rocky",
         "centos": "centos"}  # fmt: skip


@pytest.mark.parametrize(("alias", "arch"), sorted(OFFICIAL))
def test_builtin_aliases_point_at_the_official_sites(alias: str, arch: str) -> None:
    target = load_catalog().resolve(alias, arch)
    url = OFFICIAL[alias, arch]
    assert target.url == url
    file = url.rsplit("/", 1)[1]
    assert target.checksums == url.rsplit("/", 1)[0] + "/" + CHECKSUM_FILES[alias].format(file=file)
    assert target.user == USERS[alias.split(":")[0]]


def test_fedora_is_a_template_found_through_the_listing() -> None:
    target = load_catalog().resolve("fedora:41", "x86_64")
    assert target.directory == (
        "https://download.fedoraproject.org/pub/fedora/linux/releases/41/Cloud/x86_64/images/"
    )
    assert target.file is None and target.checksums is None
    assert target.checksums_pattern and target.file_pattern
    assert target.checksums_pattern.fullmatch("Fedora-Cloud-41-1.4-x86_64-CHECKSUM")
    assert not target.checksums_pattern.fullmatch("Fedora-Cloud-41-1.4-aarch64-CHECKSUM")
    for name in ("Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2",):
        assert target.file_pattern.fullmatch(name)
    for name in ("Fedora-Cloud-Base-UKI-41-1.4.x86_64.qcow2",
                 "Fedora-Cloud-Base-Generic-41-1.4.x86_64.raw.xz",
                 "Fedora-Cloud-Base-Generic-41-1.4.aarch64.qcow2"):  # fmt: skip
        assert not target.file_pattern.fullmatch(name)
    forty = load_catalog().resolve("fedora:40", "x86_64")
    assert forty.file_pattern and forty.file_pattern.fullmatch(
        "Fedora-Cloud-Base-Generic.x86_64-40-1.14.qcow2"  # Fedora 40 named it this way
    )
    assert target.user == "fedora"


def test_unknown_aliases_and_arches() -> None:
    catalog = load_catalog()
    with pytest.raises(NotFound, match="unknown image alias 'fedora:rawhide'"):
        catalog.resolve("fedora:rawhide", "x86_64")  # releases are numbers
    with pytest.raises(NotFound, match="unknown image alias 'ubuntu:focal'"):
        catalog.resolve("ubuntu:focal", "x86_64")
    assert normalize_arch("amd64") == "x86_64" and normalize_arch("arm64") == "aarch64"
    with pytest.raises(InvalidInput, match="unsupported architecture 'riscv64'"):
        normalize_arch("riscv64")


def test_config_overrides_and_extends(tmp_path: Path) -> None:
    extra = tmp_path / "catalog.toml"
    extra.write_text(
        '[images."mine:1"]\nurl = "https://example.org/img/{arch}/mine.qcow2"\n'
        f'checksum = "sha256:{"a" * 64}"\nuser = "me"\n'
    )
    overrides = {
        "distros": {"ubuntu": {"mirror": "http://mirror.local/ubuntu/"}},
        "images": {"debian:12": {"path": "bookworm/20240717-1811"}},
    }
    catalog = load_catalog(overrides, extra)
    assert catalog.resolve("ubuntu:jammy", "x86_64").url == (
        "http://mirror.local/ubuntu/releases/jammy/release/ubuntu-22.04-server-cloudimg-amd64.img"
    )
    assert catalog.resolve("debian:12", "x86_64").url == (
        "https://cloud.debian.org/images/cloud/bookworm/20240717-1811/"
        "debian-12-genericcloud-amd64.qcow2"
    )
    mine = catalog.resolve("mine:1", "aarch64")
    assert mine.url == "https://example.org/img/aarch64/mine.qcow2"
    assert str(mine.checksum) == f"sha256:{'a' * 64}" and mine.user == "me"
    rows = {r["alias"]: r for r in catalog.describe("x86_64")}
    assert rows["mine:1"]["url"] == "https://example.org/img/x86_64/mine.qcow2"
    assert rows["fedora:{release}"]["user"] == "fedora"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"images": {"x:1": {"url": "http://h/x.img", "colour": "red"}}},
         "images.\"x:1\": unknown key 'colour'"),
        ({"images": {"x:1": {"distro": "arch", "file": "x"}}}, "unknown distro 'arch'"),
        ({"images": {"x:1": {"url": "http://h/x.img", "checksum": "sha256:zz"}}},
         'images."x:1".checksum: invalid sha256 value'),
        ({"images": {"x:1": {"distro": "debian", "file_pattern": "(", "checksums": "S"}}},
         "file_pattern: invalid pattern"),
        ({"images": {"x:1": {"description": "nothing to fetch"}}}, "needs url"),
        ({"mirrors": {}}, "unknown section 'mirrors'"),
        ({"distros": {"ubuntu": {"mirror": "http://m", "size": 1}}}, "unknown key 'size'"),
    ],
)  # fmt: skip
def test_bad_catalog_entries(overrides: dict, words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace(".", r"\.")):
        load_catalog(overrides)


def test_listing_names() -> None:
    apache = (
        '<tr><td><a href="?C=N;O=D">Name</a></td></tr><tr><td><a href="/pub/fedora/">Parent</a>'
        '<tr><td><a href="Fedora-Cloud-41-1.4-x86_64-CHECKSUM">Fedora-Cloud-41-1.4-x86_64-CH..'
        "</a></td></tr><a href='Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2'>x</a>"
        '<a href="sub/">sub/</a><a href=plain.img>plain</a><a href="with%20space.img">s</a>'
    )
    assert listing_names(apache) == [
        "Fedora-Cloud-41-1.4-x86_64-CHECKSUM",
        "Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2",
        "plain.img",
        "with space.img",
    ]


# --- a local mirror with the official layouts ---------------------------------------------------


def _mirror(server: Server, image: bytes) -> dict[str, str]:
    """Lay out every distribution's directory as its official site does; return the mirrors."""
    h256, h512 = sha256(image), hashlib.sha512(image).hexdigest()
    decoy = "0" * 64
    ubuntu = "ubuntu/releases/jammy/release"
    sums = []
    for arch in ("amd64", "arm64"):
        stem = f"ubuntu-22.04-server-cloudimg-{arch}"
        server.add(f"{ubuntu}/{stem}.img", image)
        sums += [f"{decoy} *{stem}-disk-kvm.img", f"{h256} *{stem}.img",
                 f"{decoy} *{stem}.manifest", f"{decoy} *{stem}.tar.gz"]  # fmt: skip
    server.add(f"{ubuntu}/SHA256SUMS", ("\n".join(sums) + "\n").encode())
    daily = "ubuntu/jammy/current"
    for arch in ("amd64", "arm64"):
        server.add(f"{daily}/jammy-server-cloudimg-{arch}.img", image)
    daily_sums = "".join(f"{h256} *jammy-server-cloudimg-{a}.img\n" for a in ("amd64", "arm64"))
    server.add(f"{daily}/SHA256SUMS", daily_sums.encode())
    debian = "debian/bookworm/latest"
    for arch in ("amd64", "arm64"):
        server.add(f"{debian}/debian-12-genericcloud-{arch}.qcow2", image)
    server.add(f"{debian}/SHA512SUMS", "".join(
        f"{h512}  debian-12-genericcloud-{a}.qcow2\n{'0' * 128}  debian-12-genericcloud-{a}.raw\n"
        for a in ("amd64", "arm64")).encode())  # fmt: skip
    for arch in ("x86_64", "aarch64"):
        fedora = f"fedora/releases/41/Cloud/{arch}/images"
        name = f"Fedora-Cloud-Base-Generic-41-1.4.{arch}.qcow2"
        server.add(f"{fedora}/{name}", image)
        server.add(f"{fedora}/Fedora-Cloud-Base-UKI-41-1.4.{arch}.qcow2", b"decoy")
        server.add(f"{fedora}/Fedora-Cloud-41-1.4-{arch}-CHECKSUM", (
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"
            f"# {name}: {len(image)} bytes\nSHA256 ({name}) = {h256}\n"
            f"# Fedora-Cloud-Base-UKI-41-1.4.{arch}.qcow2: 5 bytes\n"
            f"SHA256 (Fedora-Cloud-Base-UKI-41-1.4.{arch}.qcow2) = {sha256(b'decoy')}\n"
            "-----BEGIN PGP SIGNATURE-----\n\nwsFzBAEBCAAdFiEE\n-----END PGP SIGNATURE-----\n"
        ).encode())  # fmt: skip
        rocky = f"rocky/9/images/{arch}"
        name = f"Rocky-9-GenericCloud.latest.{arch}.qcow2"
        server.add(f"{rocky}/{name}", image)
        rocky_sums = f"# {name}: {len(image)} bytes\nSHA256 ({name}) = {h256}\n"
        server.add(f"{rocky}/{name}.CHECKSUM", rocky_sums.encode())
    packed = lzma.compress(image)
    lines = []
    for arch in ("x86_64", "aarch64"):
        name = f"CentOS-7-{arch}-GenericCloud.qcow2.xz"
        server.add(f"centos/7/images/{name}", packed)
        lines += [f"{decoy}  CentOS-7-{arch}-GenericCloud-2211.qcow2",
                  f"{sha256(packed)}  {name}"]  # fmt: skip
    server.add("centos/7/images/sha256sum.txt", ("\n".join(lines) + "\n").encode())
    return {d: server.url(d) for d in ("ubuntu", "debian", "fedora", "rocky", "centos")}


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize(
    "alias", ["ubuntu:jammy", "ubuntu:jammy/daily", "debian:12", "fedora:41", "rocky:9",
              "centos:7"],
)  # fmt: skip
def test_pull_every_alias_from_a_local_mirror(
    ctx: Context, server: Server, qcow2_bytes: bytes, alias: str, arch: str
) -> None:
    mirrors = _mirror(server, qcow2_bytes)
    ctx = Context(replace(ctx.config, catalog={"distros": {
        d: {"mirror": url} for d, url in mirrors.items()}}))  # fmt: skip
    pulled = pull(ctx, alias, arch=arch, options=FAST)
    m = pulled.manifest
    assert m.name == alias.replace("/", "-")
    assert m.default_user == USERS[alias.split(":")[0]]
    assert m.digest == sha256(qcow2_bytes) and m.format == "qcow2"
    assert pulled.source.url.startswith(mirrors[alias.split(":")[0]] + "/")
    assert pulled.verified
    downloaded = [r.path for r in server.log if not r.path.endswith(("SUMS", "CHECKSUM", ".txt"))]
    assert downloaded[-1].rsplit("/", 1)[1] == pulled.source.url.rsplit("/", 1)[1]
    assert "UKI" not in pulled.source.url and "disk-kvm" not in pulled.source.url


def test_cli_pull_alias_from_a_mirror_in_the_config(
    ctx: Context, server: Server, qcow2_bytes: bytes, tmp_path: Path
) -> None:
    mirrors = _mirror(server, qcow2_bytes)
    config = tmp_path / "config.toml"
    config.write_text(f'[catalog.distros.ubuntu]\nmirror = "{mirrors["ubuntu"]}"\n')
    env = {"CORRAL_CONFIG": str(config)}
    proc = corral(ctx, "image", "pull", "ubuntu:jammy", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("pulled ubuntu:jammy: qcow2 8.0 MiB sha256:")
    image = json.loads(corral(ctx, "image", "inspect", "ubuntu:jammy", "--json", env=env).stdout)
    assert image["default_user"] == "ubuntu"
    assert image["source"].startswith(f"pull:{mirrors['ubuntu']}/releases/jammy/release/")
    rows = json.loads(corral(ctx, "image", "catalog", "--json", env=env).stdout)
    jammy = next(r for r in rows if r["alias"] == "ubuntu:jammy")
    assert jammy["url"].startswith(mirrors["ubuntu"] + "/releases/jammy/release/ubuntu-22.04-")
    assert {"ubuntu:jammy", "ubuntu:noble", "ubuntu:jammy/daily", "debian:12", "debian:13",
            "fedora:{release}", "rocky:9", "centos:7"} <= {r["alias"] for r in rows}  # fmt: skip
    table = corral(ctx, "image", "catalog", env=env)
    assert table.returncode == 0 and "ubuntu:jammy" in table.stdout


def test_cli_bad_catalog_in_config(ctx: Context, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[catalog.images."x:1"]\nurl = "http://h/x.img"\nsize = 3\n')
    proc = corral(ctx, "image", "pull", "x:1", env={"CORRAL_CONFIG": str(config)})
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: catalog: images.\"x:1\": unknown key 'size'")


def test_a_given_checksum_wins_over_the_catalog(
    ctx: Context, server: Server, qcow2_bytes: bytes
) -> None:
    mirrors = _mirror(server, qcow2_bytes)
    (server.root / "debian/bookworm/latest/SHA512SUMS").write_text("")  # broken mirror
    ctx = Context(
        replace(ctx.config, catalog={"distros": {"debian": {"mirror": mirrors["debian"]}}})
    )
    pulled = pull(ctx, "debian:12", arch="x86_64", checksum=f"sha256:{sha256(qcow2_bytes)}",
                  options=FAST)  # fmt: skip
    assert pulled.source.checksum_origin == "--checksum"
    assert [r.path.rsplit("/", 1)[1] for r in server.log] == ["debian-12-genericcloud-amd64.qcow2"]
    with pytest.raises(InvalidInput, match="SHA512SUMS: no checksums found in it"):
        pull(ctx, "debian:12", arch="x86_64", name="other", options=FAST)
