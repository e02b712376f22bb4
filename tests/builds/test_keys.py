"""Step IDs: every input that changes a step's result changes its ID, nothing else does."""

from __future__ import annotations

import pytest

from corral.builds.keys import Step, StepContext, base_id, step_id
from corral.builds.spec import Cache, Copy, Env, NamedUser, Run, Secret, UnixUser, Workdir

PARENT = "a" * 64
RUN = Run("make", cache=(Cache("opam", "/cache"),), secrets=(Secret("tok", "/run/tok"),))
CTX = StepContext(workdir="/src", env=(("A", "1"), ("B", "2")), user=UnixUser(1000, 1000))


def sid(op=RUN, ctx=CTX, parent=PARENT, secrets=None, manifest=None) -> str:
    return step_id(parent, Step(0, op, ctx), secrets=secrets or {"tok": b"s3cret"},
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


def test_context_follows_the_ops() -> None:
    ctx = StepContext()
    for op in (Workdir("/src"), Workdir("app"), Env("A", "1"), Env("B", "2"), Env("A", "3"),
               NamedUser("opam")):  # fmt: skip
        ctx = ctx.apply(op)
    assert ctx.workdir == "/src/app"
    assert ctx.env == (("B", "2"), ("A", "3"))  # redefined: moves to the end, as obuilder does
    assert ctx.user == NamedUser("opam")
