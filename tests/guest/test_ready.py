import pytest

from corral.guest.ready import parse_cloud_init_status
from corral.instance.guestops import split_remote


@pytest.mark.parametrize(
    ("output", "status"),
    [
        ("status: done\n", "done"),
        ("\nstatus: running\n", "running"),
        ("status: error\ndetail:\nDataSourceNoCloud\n", "error"),
        ("status: disabled\n", "disabled"),
        ("garbage", "unknown"),
    ],
)
def test_cloud_init_status(output: str, status: str) -> None:
    assert parse_cloud_init_status(output) == status


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("web1:/etc/hosts", ("web1", "/etc/hosts")),
        ("web1:relative", ("web1", "relative")),
        ("/tmp/a:b", (None, "/tmp/a:b")),
        ("./x", (None, "./x")),
        ("plain", (None, "plain")),
    ],
)
def test_split_remote(spec: str, parts: tuple[str | None, str]) -> None:
    assert split_remote(spec) == parts
