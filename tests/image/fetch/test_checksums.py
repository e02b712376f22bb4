"""Checksum specs and checksum files, as distributions publish them."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import InvalidInput
from corral.image.fetch.checksums import (
    ALGORITHMS,
    Checksum,
    algorithm_from_filename,
    check_algorithm,
    find_entry,
    make_checksum,
    newest,
    parse_checksum_file,
    parse_spec,
)

H256 = hashlib.sha256(b"a").hexdigest()
H512 = hashlib.sha512(b"a").hexdigest()


def test_spec_any_hashlib_algorithm() -> None:
    for algo in sorted(ALGORITHMS):
        hasher = hashlib.new(algo)
        hasher.update(b"x")
        value = hasher.hexdigest(16) if algo.startswith("shake") else hasher.hexdigest()
        assert parse_spec(f"{algo}:{value.upper()}") == Checksum(algo, value)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("abc", "expected ALGO:HEX"),
        (f"sha999:{H256}", "unknown algorithm 'sha999'"),
        ("sha256:xyz", "expected hexadecimal digits"),
        ("sha256:abcd", "4 hex digits, a sha256 digest has 64"),
        (f"sha512:{H256}", "64 hex digits, a sha512 digest has 128"),
        ("sha256:", "expected ALGO:HEX"),
    ],
)
def test_bad_specs(spec: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_spec(spec)


def test_algorithm_spellings() -> None:
    assert check_algorithm("SHA256") == "sha256"
    assert check_algorithm("sha-512") == "sha512"
    assert check_algorithm("sha3-256") == "sha3_256"


def test_gnu_style_both_markers_and_comments() -> None:
    text = (
        "# a comment\n"
        f"{H256} *ubuntu-22.04-server-cloudimg-amd64.img\n"
        f"{H256.upper()}  ./jammy-server-cloudimg-amd64.tar.gz\n"
        "\n"
        "this line means nothing\n"
    )
    entries = parse_checksum_file(text, default_algo="sha256")
    assert [(e.name, e.checksum) for e in entries] == [
        ("ubuntu-22.04-server-cloudimg-amd64.img", Checksum("sha256", H256)),
        ("jammy-server-cloudimg-amd64.tar.gz", Checksum("sha256", H256)),
    ]


def test_gnu_style_algorithm_from_length_when_file_name_says_nothing() -> None:
    entries = parse_checksum_file(f"{H512}  debian-12-genericcloud-amd64.qcow2\n")
    assert entries[0].checksum.algo == "sha512"
    # A misleading default loses to the digest's length.
    entries = parse_checksum_file(f"{H512}  x.qcow2\n", default_algo="sha256")
    assert entries[0].checksum.algo == "sha512"


def test_bsd_style_rocky() -> None:
    text = (
        "# Rocky-9-GenericCloud.latest.x86_64.qcow2: 609812480 bytes\n"
        f"SHA256 (Rocky-9-GenericCloud.latest.x86_64.qcow2) = {H256}\n"
    )
    (entry,) = parse_checksum_file(text)
    assert entry.name == "Rocky-9-GenericCloud.latest.x86_64.qcow2"
    assert entry.checksum == Checksum("sha256", H256)


def test_fedora_clear_signed_checksum_file() -> None:
    text = (
        "-----BEGIN PGP SIGNED MESSAGE-----\n"
        "Hash: SHA256\n"
        "\n"
        "# Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2: 491716608 bytes\n"
        f"SHA256 (Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2) = {H256}\n"
        "# Fedora-Cloud-Base-UKI-41-1.4.x86_64.qcow2: 1 bytes\n"
        f"SHA256 (Fedora-Cloud-Base-UKI-41-1.4.x86_64.qcow2) = {H256}\n"
        "-----BEGIN PGP SIGNATURE-----\n"
        "\n"
        f"SHA256 (not-signed.qcow2) = {H256}\n"
        "-----END PGP SIGNATURE-----\n"
    )
    names = [e.name for e in parse_checksum_file(text)]
    assert names == [
        "Fedora-Cloud-Base-Generic-41-1.4.x86_64.qcow2",
        "Fedora-Cloud-Base-UKI-41-1.4.x86_64.qcow2",
    ]


def test_escaped_gnu_names() -> None:
    (entry,) = parse_checksum_file(f"\\{H256}  odd\\nname\\\\x.img\n")
    assert entry.name == "odd\nname\\x.img"


def test_find_and_newest() -> None:
    entries = parse_checksum_file(f"{H256}  a.img\n{H256}  dir/b.img\n")
    assert find_entry(entries, "b.img") is entries[1]
    assert find_entry(entries, "c.img") is None
    assert newest(["x-41-1.9.qcow2", "x-41-1.10.qcow2", "x-41-1.4.qcow2"]) == "x-41-1.10.qcow2"
    assert newest([]) is None


@pytest.mark.parametrize(
    ("name", "algo"),
    [("SHA256SUMS", "sha256"), ("SHA512SUMS", "sha512"), ("sha256sum.txt", "sha256"),
     ("Fedora-Cloud-41-1.4-x86_64-CHECKSUM", None), ("x.qcow2.CHECKSUM", None),
     ("MD5SUMS", "md5")],
)  # fmt: skip
def test_algorithm_from_filename(name: str, algo: str | None) -> None:
    assert algorithm_from_filename(name) == algo


names = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="()\\"),
    min_size=1,
    max_size=40,
).filter(lambda s: not s.startswith(("#", "./", "*")))


@given(entries=st.dictionaries(names, st.binary(max_size=64), min_size=1, max_size=8),
       bsd=st.booleans(), star=st.booleans())  # fmt: skip
def test_written_files_parse_back(entries: dict[str, bytes], bsd: bool, star: bool) -> None:
    lines = []
    for name, data in entries.items():
        digest = hashlib.sha512(data).hexdigest()
        lines.append(f"SHA512 ({name}) = {digest}" if bsd else
                     f"{digest} {'*' if star else ' '}{name}")  # fmt: skip
    parsed = parse_checksum_file("\n".join(lines) + "\n", default_algo="sha512")
    assert {e.name: e.checksum for e in parsed} == {
        name: make_checksum("sha512", hashlib.sha512(data).hexdigest())
        for name, data in entries.items()
    }
