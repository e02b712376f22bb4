import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import InvalidInput
from corral.units import format_size, parse_instance_type, parse_memory_mib, parse_size


@pytest.mark.parametrize(
    ("text", "cpus", "memory"),
    [("c2m2048", 2, 2048), ("c1m64", 1, 64), ("c16m65536", 16, 65536)],
)
def test_instance_type_parses(text: str, cpus: int, memory: int) -> None:
    itype = parse_instance_type(text)
    assert (itype.cpus, itype.memory_mib) == (cpus, memory)
    assert itype.name == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("c0m1", "cpu count 0"),
        ("c1m1", "too little memory"),
        ("cXmY", "expected c<cpus>m<memory MiB>"),
        ("c2", "expected c<cpus>m<memory MiB>"),
        ("m2048", "expected"),
        ("c2m", "expected"),
        ("c-1m512", "expected"),
        ("c999m1024", "between 1 and 255"),
        ("c1m1", "invalid instance type 'c1m1': too little memory"),
    ],
)
def test_instance_type_rejects(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_instance_type(text)


@given(st.integers(1, 255), st.integers(64, 1 << 20))
def test_instance_type_round_trip(cpus: int, memory: int) -> None:
    assert parse_instance_type(f"c{cpus}m{memory}").name == f"c{cpus}m{memory}"


@pytest.mark.parametrize(
    ("text", "size"),
    [("20G", 20 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), ("4096", 4096), ("2GiB", 2 << 30),
     ("1t", 1 << 40), ("10K", 10240)],
)  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "big", "-1G", "0", "12Q", "1..2G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text)


def test_memory_plain_number_is_mib() -> None:
    assert parse_memory_mib("2048") == 2048
    assert parse_memory_mib("2G") == 2048


@given(st.integers(1, 1 << 50))
def test_format_size_is_exact(size: int) -> None:
    assert parse_size(format_size(size)) == size
