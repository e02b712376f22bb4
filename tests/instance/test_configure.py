"""`corral image configure` on real QEMU: the mechanics on the tiny guest, the real thing
(cloud-init's change kept, a fresh identity with --sysprep) on the Debian image."""

from __future__ import annotations

import json
import subprocess

import pytest

from corral.context import Context
from corral.errors import DeadlineExceeded, GuestError
from corral.instance.configure import ConfigureOptions, configure
from helpers import corral

pytestmark = pytest.mark.vm


def test_configure_saves_a_layer_and_cleans_up(vm_ctx: Context) -> None:
    stages: list[str] = []
    console = bytearray()
    manifest = configure(
        vm_ctx, "tiny", "tiny-configured",
        ConfigureOptions(user_data=b"#cloud-config\n", sysprep=True, cpus=1, memory_mib=256),
        console=console.extend, on_stage=stages.append,
    )  # fmt: skip
    assert stages == ["booting", "ssh", "cloud-init", "ready", "sysprep", "shutdown", "saving"]
    assert b"corral-tiny: ready" in console  # the console was streamed
    tiny = vm_ctx.store.get("tiny")
    assert manifest.source == "configure:tiny"
    assert (manifest.kernel, manifest.cmdline) == (tiny.kernel, tiny.cmdline)
    assert not vm_ctx.home.instances.exists() or list(vm_ctx.home.instances.iterdir()) == []
    proc = corral(vm_ctx, "launch", "tiny-configured", "--name", "after", "--type", "c1m256",
                  "--wait", "--timeout", "120")  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_configure_failure_saves_nothing(vm_ctx: Context) -> None:
    blobs = sorted(vm_ctx.home.blobs.iterdir())
    # The tiny guest's cloud-init stand-in reports an error when the seed asks it to.
    failing = b"#cloud-config\ncorral_tiny_status: error\n"
    with pytest.raises(GuestError) as info:
        configure(
            vm_ctx, "tiny", "never",
            ConfigureOptions(user_data=failing, timeout=120, cpus=1, memory_mib=256),
        )  # fmt: skip
    assert info.value.message == "configure failed: cloud-init reported error; nothing saved"
    details = "\n".join(info.value.details)
    assert "status: error" in details  # cloud-init's own account
    assert "last console lines:" in details and "corral-tiny: ready" in details
    assert not vm_ctx.store.exists("never")
    assert sorted(vm_ctx.home.blobs.iterdir()) == blobs
    assert list(vm_ctx.home.instances.iterdir()) == []


def test_configure_timeout_names_the_stage(vm_ctx: Context) -> None:
    with pytest.raises(DeadlineExceeded) as info:
        configure(
            vm_ctx, "tiny", "never",
            ConfigureOptions(user_data=b"#cloud-config\n", timeout=1, cpus=1, memory_mib=256),
        )  # fmt: skip
    assert info.value.message.startswith("configure failed: ssh on port")
    assert not vm_ctx.store.exists("never")
    assert list(vm_ctx.home.instances.iterdir()) == []


def test_build_with_user_data_configures_what_it_built(
    vm_ctx: Context, tiny_guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`image build RECIPE --user-data`: the CLI hands build_recipe instance.configure's step."""
    from corral.image import recipes
    from corral.image_holders import image_holders
    from corral.instance.configure import with_user_data

    monkeypatch.setattr(recipes, "_build", lambda *args: tiny_guest)  # built already
    stages: list[str] = []
    configure = with_user_data(vm_ctx, b"#cloud-config\n", on_stage=stages.append)
    manifest = recipes.build_recipe(
        vm_ctx, "tiny", name="tiny-built", configure=configure,
        holders=lambda: image_holders(vm_ctx),
    )  # fmt: skip
    assert manifest.source == "build:tiny+user-data"
    assert manifest.parent is None  # configured and flattened: one standalone image
    assert "sysprep" in stages
    assert vm_ctx.store.get("tiny-built").digest == manifest.digest
    assert not [m for m in vm_ctx.store.list() if m.name.startswith("tmp-build-")]


USER_DATA = """#cloud-config
runcmd:
  - [sh, -c, "echo configured > /var/lib/configured-marker"]
  - [sh, -c, "cp /etc/machine-id /var/lib/configure-machine-id"]
"""


@pytest.mark.e2e
def test_configured_debian_image_keeps_the_change_and_gets_a_new_identity(debian_ctx) -> None:
    ctx = debian_ctx
    work = ctx.home.root / "configure-test"
    work.mkdir(exist_ok=True)
    (work / "user-data").write_text(USER_DATA)
    corral(ctx, "image", "rm", "--force", "deb-configured")
    try:
        proc = corral(ctx, "image", "configure", "debian-12", "--user-data",
                      str(work / "user-data"), "--as", "deb-configured", "--sysprep",
                      "--type", "c2m1024", "--timeout", "600")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "cloud-init" in proc.stderr  # the console was streamed
        image = json.loads(corral(ctx, "image", "inspect", "deb-configured", "--json").stdout)
        assert image["parent"] == ctx.store.get("debian-12").digest

        proc = corral(ctx, "launch", "deb-configured", "--name", "conf1", "--type", "c2m1024",
                      "--wait", "--timeout", "400")  # fmt: skip
        assert proc.returncode == 0, proc.stderr

        def run(command: str) -> str:
            result = corral(ctx, "exec", "conf1", "--", "sh", "-c", command)
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        assert run("cat /var/lib/configured-marker") == "configured"
        record = json.loads(corral(ctx, "inspect", "conf1", "--json").stdout)
        assert run("cat /var/lib/cloud/data/instance-id") == record["instance_id"]
        assert run("cat /etc/machine-id") != run("cat /var/lib/configure-machine-id")
        assert run("cat /etc/machine-id")  # systemd made a new one at first boot
        assert "status: done" in run("cloud-init status")
    finally:
        corral(ctx, "rm", "--force", "conf1")
        corral(ctx, "image", "rm", "--force", "deb-configured")
        subprocess.run(["rm", "-rf", str(work)], check=False)


@pytest.mark.e2e
def test_debian_build_with_packages_and_user_data(debian_ctx) -> None:
    ctx = debian_ctx
    work = ctx.home.root / "build-test"
    work.mkdir(exist_ok=True)
    (work / "user-data").write_text(
        "#cloud-config\nruncmd:\n  - [sh, -c, 'echo built-in > /var/lib/built-marker']\n"
    )
    try:
        proc = corral(ctx, "image", "build", "debian-12", "--name", "deb-custom",
                      "--packages", "jq,file", "--user-data", str(work / "user-data"),
                      "--replace", timeout=1500)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        image = json.loads(corral(ctx, "image", "inspect", "deb-custom", "--json").stdout)
        assert image["parent"] is None  # configured and flattened: one standalone image
        assert image["source"] == "build:debian-12+user-data"
        assert not [m for m in ctx.store.list() if m.name.startswith("tmp-build-")]
        proc = corral(ctx, "launch", "deb-custom", "--name", "custom1", "--type", "c2m1024",
                      "--wait", "--timeout", "400")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        check = "jq --version && file --version | head -1 && cat /var/lib/built-marker"
        result = corral(ctx, "exec", "custom1", "--", "sh", "-c", check)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("jq-")
        assert result.stdout.strip().endswith("built-in")
    finally:
        corral(ctx, "rm", "--force", "custom1")
        corral(ctx, "image", "rm", "--force", "deb-custom")
        subprocess.run(["rm", "-rf", str(work)], check=False)
