"""The ID a build step's layer is cached under: a pure function of the step and its inputs.

A step's ID is the sha256 of a canonical S-expression of its parent's ID and every input that
can change its result: the op itself (command, caches and their targets, network; or copy
sources, destination and exclusions), the shell, the environment in order, the user, the
workdir, the values of its secrets (as digests), and for copies a manifest of every source
file (`copy_material`). A cache's contents and the VM's size are deliberately left out: they
do not change what the step produces.

Every layer in every build store is named by these IDs, so their bytes never change
(tests/builds/test_step_ids.py pins them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from corral.builds.copying import Entry
from corral.builds.sexp import Atom, SList, to_canonical
from corral.builds.spec import Run, UnixUser, User, op_sexp
from corral.builds.steps import Step


def _atom(value: str) -> Atom:
    return Atom(value, quoted=True)


def _user_sexp(user: User | None) -> SList:
    if user is None:
        return SList((Atom("user"),))
    if isinstance(user, UnixUser):
        return SList((Atom("user"), _atom(str(user.uid)), _atom(str(user.gid))))
    return SList((Atom("user"), Atom("name"), _atom(user.name)))


def base_id(image_digest: str) -> str:
    """The ID of the layer a spec starts from: the base image's content, nothing else."""
    material = SList((Atom("corral-build-base"), _atom(image_digest)))
    return hashlib.sha256(to_canonical(material)).hexdigest()


def copy_material(entries: Iterable[Entry]) -> bytes:
    """What a copy from the build context adds to its ID: one JSON line per manifest entry."""
    return "\n".join(
        json.dumps([e.path, e.kind, e.digest, e.target, e.mode]) for e in entries
    ).encode()


def child_build_material(layer: str) -> bytes:
    """What a copy from a child build adds to its ID: the child's final layer ID.

    A layer is immutable and named by its inputs, so it stands for every file in it.
    """
    return f"build:{layer}".encode()


def step_id(
    parent: str,
    step: Step,
    *,
    secrets: Mapping[str, bytes] | None = None,
    copy_manifest: bytes | None = None,
) -> str:
    """The ID of `step` on top of the layer `parent`.

    `copy_manifest` is `copy_material` or `child_build_material` for a copy, None for a run.
    """
    ctx = step.context
    fields: list[SList] = [
        SList((Atom("parent"), _atom(parent))),
        SList((Atom("workdir"), _atom(ctx.workdir))),
        SList((Atom("shell"), *(_atom(a) for a in ctx.shell))),
        SList((Atom("env"), *(SList((_atom(k), _atom(v))) for k, v in ctx.env))),
        _user_sexp(ctx.user),
        SList((Atom("op"), op_sexp(step.op))),
    ]
    if isinstance(step.op, Run) and step.op.secrets:
        values = secrets or {}
        fields.append(
            SList((
                Atom("secrets"),
                *(SList((_atom(s.id), _atom(hashlib.sha256(values.get(s.id, b"")).hexdigest())))
                  for s in step.op.secrets),
            ))
        )  # fmt: skip
    if copy_manifest is not None:
        digest = hashlib.sha256(copy_manifest).hexdigest()
        fields.append(SList((Atom("manifest"), _atom(digest))))
    material = SList((Atom("corral-build-step"), *fields))
    return hashlib.sha256(to_canonical(material)).hexdigest()
