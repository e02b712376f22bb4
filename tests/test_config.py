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


def test_control_plane_keys_from_file_and_environment(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text(
        'database = "postgresql+psycopg://corral@db/corral"\n'
        "cpu_overcommit = 8\nmemory_overcommit = 1.5\nhealth_interval = 2\ndown_after = 6\n"
        "heartbeat_interval = 2\nmax_body_bytes = 65536\n"
        'developer_ssh_keys = ["ssh-ed25519 AAAA me@laptop"]\n'
        'vm_default_image = "debian-12"\n'
    )
    test_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    env = {
        "CORRAL_ALLOCATION_TOKEN_HASH": test_hash.upper(),
        "CORRAL_DEVELOPER_SSH_KEYS": '["ssh-rsa AAAB olivier@lanius"]',  # aleph-vm's JSON form
        "CORRAL_DOWN_AFTER": "9.5",
        "CORRAL_PROCESS_TIMEOUT": "12",
    }
    config = load_config(env=env, file=file)
    assert config.database == "postgresql+psycopg://corral@db/corral"
    assert (config.cpu_overcommit, config.memory_overcommit) == (8.0, 1.5)
    assert (config.health_interval, config.down_after) == (2.0, 9.5)
    assert (config.heartbeat_interval, config.process_timeout) == (2.0, 12.0)
    assert config.allocation_token_hash == test_hash
    assert config.developer_ssh_keys == ("ssh-rsa AAAB olivier@lanius",)
    assert config.vm_default_image == "debian-12"
    assert config.max_body_bytes == 65536
    assert load_config(env={"CORRAL_MAX_BODY_BYTES": "2048"}, file=file).max_body_bytes == 2048
    defaults = load_config(env={}, file=tmp_path / "none.toml")
    assert (defaults.database, defaults.allocation_token_hash) == (None, None)
    assert defaults.developer_ssh_keys == ()
    assert defaults.max_body_bytes == 1 << 20


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CORRAL_CPU_OVERCOMMIT": "0"}, "cpu_overcommit must be a positive number"),
        ({"CORRAL_HEALTH_INTERVAL": "often"}, "health_interval must be a positive number"),
        ({"CORRAL_PROCESS_TIMEOUT": "6"}, "at least twice heartbeat_interval"),
        ({"CORRAL_ALLOCATION_TOKEN_HASH": "test"}, "64 hex digits"),
        ({"CORRAL_DEVELOPER_SSH_KEYS": "ssh-rsa AAAB"}, "JSON list"),
        ({"CORRAL_DEVELOPER_SSH_KEYS": '{"a": 1}'}, "list of ssh public key lines"),
        ({"CORRAL_MAX_BODY_BYTES": "1M"}, "max_body_bytes must be a whole number of bytes"),
        ({"CORRAL_MAX_BODY_BYTES": "100"}, "at least 1024"),
        ({"CORRAL_ALEPH_IMAGES": "[1]"}, "aleph_images must map"),
        ({"CORRAL_ALEPH_IMAGES": '{"../x": "tiny"}'}, "not a ref and an image name"),
        ({"CORRAL_ALEPH_IMAGES": '{"ab": "a b"}'}, "not a ref and an image name"),
        ({"CORRAL_ALEPH_FAKE_INSTANCE_BASE": "../base.img"}, "image name or an absolute path"),
        ({"CORRAL_DEFAULT_NETWORK": "lab;rm"}, "default_network must be a network name"),
    ],
)
def test_bad_control_plane_values(tmp_path: Path, env: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        load_config(env=env, file=tmp_path / "none.toml")


def test_serve_settings_take_the_control_plane_keys(tmp_path: Path) -> None:
    from corral.control.settings import Settings

    env = {"CORRAL_HOME": str(tmp_path), "CORRAL_HEARTBEAT_INTERVAL": "3",
           "CORRAL_PROCESS_TIMEOUT": "20", "CORRAL_DOWN_AFTER": "7",
           "CORRAL_MAX_BODY_BYTES": "4096"}  # fmt: skip
    settings = Settings.from_config(load_config(env=env, file=tmp_path / "none.toml"))
    assert (settings.heartbeat_interval, settings.process_timeout) == (3.0, 20.0)
    assert settings.max_body_bytes == 4096
    assert settings.down_after == 7.0
    assert settings.local_node and settings.database_url == f"sqlite:///{tmp_path}/corral.db"


def test_storage_roots(tmp_path: Path) -> None:
    default = load_config(env={"CORRAL_HOME": str(tmp_path)}, file=tmp_path / "none.toml")
    assert default.storage_roots is None and default.pool_roots() == (tmp_path / "pools",)
    env = {"CORRAL_STORAGE_ROOTS": "/srv/pools:/mnt/nfs/:/srv/pools"}
    assert load_config(env=env, file=tmp_path / "none.toml").pool_roots() == (
        Path("/srv/pools"),
        Path("/mnt/nfs"),
    )
    file = tmp_path / "config.toml"
    file.write_text('storage_roots = ["/data/images"]\n')
    assert load_config(env={}, file=file).pool_roots() == (Path("/data/images"),)
    file.write_text("storage_roots = []\n")  # no pools at all
    assert load_config(env={}, file=file).pool_roots() == ()


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("/", "confine nothing"),
        ("relative/dir", "not an absolute directory"),
        ("/srv/../etc", "not an absolute directory"),
        ("/a:x", "'x' is not an absolute directory"),
    ],
)
def test_bad_storage_roots(tmp_path: Path, value: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        load_config(env={"CORRAL_STORAGE_ROOTS": value}, file=tmp_path / "none.toml")


def test_aleph_keys_and_aleph_vms_own_names(tmp_path: Path) -> None:
    from corral.control.settings import Settings

    file = tmp_path / "config.toml"
    file.write_text(
        f'aleph_messages_dir = "{tmp_path}/messages"\ndefault_network = "lab"\n'
        '[aleph_images]\n"549ec451" = "debian-12"\n'
    )
    env = {
        "CORRAL_HOME": str(tmp_path),
        "ALEPH_VM_FAKE_INSTANCE_BASE": "/srv/jammy.img",
        "ALEPH_VM_FAKE_INSTANCE_MESSAGE": "/srv/message.json",
        "ALEPH_VM_ALLOCATION_TOKEN_HASH": "9F86D081884C7D659A2FEAA0C55AD015" * 2,
    }
    # aleph-vm uses its fake base only with ALEPH_VM_USE_FAKE_INSTANCE_BASE set.
    config = load_config(env=env, file=file)
    assert config.aleph_fake_instance_base is None
    assert config.aleph_fake_instance_message == Path("/srv/message.json")
    assert config.allocation_token_hash is not None and config.allocation_token_hash.islower()
    config = load_config(env={**env, "ALEPH_VM_USE_FAKE_INSTANCE_BASE": "1"}, file=file)
    assert config.aleph_fake_instance_base == "/srv/jammy.img"
    # corral's own names win.
    config = load_config(
        env={
            **env,
            "ALEPH_VM_USE_FAKE_INSTANCE_BASE": "1",
            "CORRAL_ALEPH_FAKE_INSTANCE_BASE": "tiny",
        },
        file=file,
    )
    assert config.aleph_fake_instance_base == "tiny"
    settings = Settings.from_config(config)
    assert settings.aleph_messages_dir == tmp_path / "messages"
    assert settings.aleph_images == {"549ec451": "debian-12"}
    assert settings.default_network == "lab" and settings.aleph_fake_instance_base == "tiny"
