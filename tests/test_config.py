from pathlib import Path

import pytest

from corral.config import load_config
from corral.errors import InvalidInput


def test_defaults_when_nothing_set(tmp_path: Path) -> None:
    config = load_config(env={}, file=tmp_path / "missing.toml")
    assert config.port_range == (18000, 18999)
    assert config.qemu_system == "qemu-system-x86_64"
    assert config.accelerator == "auto"


def test_file_then_environment(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text(
        'home = "/srv/corral"\nqemu_img = "/opt/qemu-img"\nport_range = [20000, 20010]\n'
        'ssh_key = "~/.ssh/id.pub"\nqemu_system = "/opt/qemu"\n'
    )
    config = load_config(env={"CORRAL_QEMU_SYSTEM": "/env/qemu"}, file=file)
    assert config.home == Path("/srv/corral")
    assert config.qemu_img == "/opt/qemu-img"
    assert config.qemu_system == "/env/qemu"  # the environment wins over the file
    assert config.port_range == (20000, 20010)
    assert config.ssh_key == Path("~/.ssh/id.pub").expanduser()


def test_corral_home_and_port_range_from_env(tmp_path: Path) -> None:
    env = {"CORRAL_HOME": str(tmp_path), "CORRAL_PORT_RANGE": "30000-30100"}
    config = load_config(env=env, file=tmp_path / "none.toml")
    assert config.home == tmp_path
    assert config.port_range == (30000, 30100)


def test_config_file_from_env_var(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('accelerator = "tcg"\n')
    assert load_config(env={"CORRAL_CONFIG": str(file)}).accelerator == "tcg"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("colour = 1\n", "unknown key 'colour'"),
        ("port_range = '9-1'\n", "invalid port range"),
        ("accelerator = 'hvf'\n", "accelerator must be"),
        ("home = [", "config file"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, content: str, words: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(content)
    with pytest.raises(InvalidInput, match=words):
        load_config(env={}, file=file)


def test_catalog_table_and_file(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text(
        'catalog_file = "more-images.toml"\n'
        "[catalog.distros.ubuntu]\n"
        'mirror = "http://mirror.local/ubuntu"\n'
    )
    config = load_config(env={}, file=file)
    assert config.catalog == {"distros": {"ubuntu": {"mirror": "http://mirror.local/ubuntu"}}}
    assert config.catalog_file == tmp_path / "more-images.toml"  # relative to the config file
    env = {"CORRAL_CATALOG_FILE": "/etc/corral/catalog.toml"}
    assert load_config(env=env, file=file).catalog_file == Path("/etc/corral/catalog.toml")
    assert load_config(env={}, file=tmp_path / "none.toml").catalog == {}


def test_catalog_must_be_a_table(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('catalog = "ubuntu"\n')
    with pytest.raises(InvalidInput, match="catalog must be a table"):
        load_config(env={}, file=file)
