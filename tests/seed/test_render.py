import yaml

from corral.seed.render import SeedInput, merge_keys, render_seed_files

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxx corral"
USER_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ user@laptop"


def seed(**changes: object) -> SeedInput:
    base = dict(instance_id="i-web1-1", hostname="web1", user="debian", ssh_keys=(KEY, USER_KEY))
    base.update(changes)
    return SeedInput(**base)  # type: ignore[arg-type]


def test_meta_data_names_the_instance_and_carries_keys() -> None:
    meta = yaml.safe_load(render_seed_files(seed())["meta-data"])
    assert meta == {
        "instance-id": "i-web1-1",
        "local-hostname": "web1",
        "public-keys": [KEY, USER_KEY],
    }


def test_default_user_data_creates_user_with_keys_and_sudo() -> None:
    data = render_seed_files(seed())["user-data"]
    assert data.startswith(b"#cloud-config\n")
    doc = yaml.safe_load(data)
    (user,) = doc["users"]
    assert user["name"] == "debian"
    assert user["ssh_authorized_keys"] == [KEY, USER_KEY]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"


def test_optional_files_only_when_given() -> None:
    assert set(render_seed_files(seed())) == {"meta-data", "user-data"}
    files = render_seed_files(seed(network_config=b"version: 2\n", vendor_data=b"#cloud-config\n"))
    assert files["network-config"] == b"version: 2\n"
    assert files["vendor-data"] == b"#cloud-config\n"


def test_cloud_config_gets_keys_merged() -> None:
    data = b"#cloud-config\nruncmd:\n  - [touch, /var/tmp/marker]\nssh_authorized_keys: [k0]\n"
    doc = yaml.safe_load(render_seed_files(seed(user_data=data))["user-data"])
    assert doc["runcmd"] == [["touch", "/var/tmp/marker"]]
    assert doc["ssh_authorized_keys"] == ["k0", KEY, USER_KEY]


def test_cloud_config_users_list_keeps_a_way_in() -> None:
    data = b"#cloud-config\nusers:\n  - name: alice\n"
    doc = yaml.safe_load(merge_keys(data, "debian", [KEY]))
    assert [u["name"] for u in doc["users"]] == ["alice", "debian"]
    assert doc["users"][1]["ssh_authorized_keys"] == [KEY]


def test_cloud_config_users_with_default_user_get_keys() -> None:
    data = b"#cloud-config\nusers:\n  - default\n  - name: debian\n    groups: [adm]\n"
    doc = yaml.safe_load(merge_keys(data, "debian", [KEY]))
    assert doc["users"][0] == "default"
    assert doc["users"][1] == {"name": "debian", "groups": ["adm"], "ssh_authorized_keys": [KEY]}


def test_other_formats_pass_through_untouched() -> None:
    for data in (
        b"#!/bin/sh\necho hi > /tmp/x\n",
        b"#include\nhttp://example.com/cfg\n",
        b'Content-Type: multipart/mixed; boundary="==X=="\nMIME-Version: 1.0\n\n--==X==\n',
    ):
        assert render_seed_files(seed(user_data=data))["user-data"] == data


def test_user_meta_data_is_merged_over_corrals() -> None:
    theirs = b"instance-id: custom-1\ncloud-name: lab\npublic-keys: [ssh-ed25519 AAAAmine]\n"
    meta = yaml.safe_load(render_seed_files(seed(meta_data=theirs))["meta-data"])
    assert meta["instance-id"] == "custom-1"
    assert meta["local-hostname"] == "web1"
    assert meta["cloud-name"] == "lab"
    assert meta["public-keys"] == [KEY, USER_KEY, "ssh-ed25519 AAAAmine"]
