"""Step IDs: every input that changes a step's result changes its ID, nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.builds.copying import ContextCopy
from corral.builds.spec import Cache, Copy, NamedUser, Run, Secret, UnixUser
from corral.builds.step_ids import base_id, child_build_material, copy_material, step_id
from corral.builds.steps import Step, StepContext

PARENT = "a" * 64
RUN = Run("make", cache=(Cache("opam", "/cache"),), secrets=(Secret("tok", "/run/tok"),))
CTX = StepContext(workdir="/src", env=(("A", "1"), ("B", "2")), user=UnixUser(1000, 1000))


def sid(op=RUN, ctx=CTX, parent=PARENT, secrets=None, manifest=None) -> str:
    return step_id(parent, Step(op, ctx), secrets=secrets or {"tok": b"s3cret"},
                   copy_manifest=manifest)  # fmt: skip


def test_stable_and_hex() -> None:
    assert sid() == sid()
    assert len(sid()) == 64 and int(sid(), 16) >= 0
    assert base_id("d" * 64) != base_id("e" * 64)


@pytest.mark.parametrize(
    "changed",
    [
        {"parent": "b" * 64},
        {"op": Run("make install", cache=RUN.cache, secrets=RUN.secrets)},
        {"op": Run("make", cache=(Cache("opam", "/other"),), secrets=RUN.secrets)},
        {"op": Run("make", cache=RUN.cache, network=("host",), secrets=RUN.secrets)},
        {"ctx": StepContext("/src2", CTX.env, CTX.user)},
        {"ctx": StepContext(CTX.workdir, (("B", "2"), ("A", "1")), CTX.user)},  # env order
        {"ctx": StepContext(CTX.workdir, (("A", "1"),), CTX.user)},
        {"ctx": StepContext(CTX.workdir, CTX.env, NamedUser("opam"))},
        {"ctx": StepContext(CTX.workdir, CTX.env, None)},
        {"ctx": StepContext(CTX.workdir, CTX.env, CTX.user, ("/bin/bash", "-e", "-c"))},
        {"secrets": {"tok": b"other"}},
    ],
)
def test_each_input_changes_the_id(changed: dict[str, object]) -> None:
    assert sid(**changed) != sid()  # type: ignore[arg-type]


def test_copy_manifest_and_destination_change_the_id() -> None:
    copy = Copy(("src",), "/app/")
    base = sid(op=copy, manifest=b"src/a file 0123")
    assert sid(op=copy, manifest=b"src/a file 4567") != base
    assert sid(op=Copy(("src",), "/opt/"), manifest=b"src/a file 0123") != base
    assert sid(op=Copy(("src",), "/app/", exclude=(".git",)), manifest=b"src/a file 0123") != base


def test_the_secret_value_is_not_in_the_key_material_but_its_digest_is() -> None:
    # Same value, same ID; the ID is a digest, so the value cannot be read back from it.
    assert sid(secrets={"tok": b"s3cret"}) == sid()
    assert "s3cret" not in sid()


# --- pinned IDs ------------------------------------------------------------------------------
# Every layer in every build store is named by these IDs: a refactor that changes one byte of
# the material silently invalidates every cache. The values were computed once and must stay.

PINNED_TREE = {
    "app/main.py": (b"print('hi')\n", 0o644),
    "app/run.sh": (b"#!/bin/sh\nexec python3 main.py\n", 0o755),
    "app/.git/HEAD": (b"ref: refs/heads/main\n", 0o644),
    "app/lib/util.py": (b"", 0o600),
}


def pinned_context(root: Path) -> Path:
    for rel, (data, mode) in PINNED_TREE.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    (root / "app" / "current").symlink_to("lib/./util.py")
    return root


def test_pinned_base_and_run_ids() -> None:
    assert base_id("d" * 64) == "54245ac7818bcac8b9374b15ca52c121b9219e25ddf747f940eb9a7857d59a22"
    assert sid() == "7a0d69f917c1dc012c13c2dc122aa7fe93aa5ed879be5bbd0f43662037a4bdf2"
    plain = step_id(base_id("d" * 64), Step(Run("echo hi"), StepContext()))
    assert plain == "eb5e324f0a1d64687cb597d9e313cc0d84ea7cc955940a50482ef9b4fe1b60dc"
    named = StepContext("/home/opam", (("PATH", "/bin"),), NamedUser("opam"), ("/bin/sh", "-c"))
    net = Run("curl x", network=("host",))
    assert (
        step_id(PARENT, Step(net, named))
        == "bdfe7e6dfadc7dd2a06348e25602562677831a11811c92cedb83c3d82e7cca2c"
    )


def test_pinned_copy_ids(tmp_path: Path) -> None:
    context = pinned_context(tmp_path)
    copy = Copy(("app",), "/srv/", exclude=(".git",))
    material = copy_material(ContextCopy.walk(context, copy).entries)
    assert (
        step_id(PARENT, Step(copy, CTX), copy_manifest=material)
        == "51cb0b133aaa28f2cdc47c11ff78665274237239b9acd86960337ce0cacbde24"
    )
    child = Copy(("/usr/bin/app",), "bin/app", from_build="dev")
    built = child_build_material("c" * 64)
    assert (
        step_id(PARENT, Step(child, CTX), copy_manifest=built)
        == "980295d60c7a97a412bea81d559888e9470c4b771f4646a490e26e00e45cd80b"
    )
