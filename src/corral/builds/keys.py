"""What a build step is, and the ID it is cached under: pure functions of the spec.

A step's ID is the sha256 of a canonical S-expression of its parent's ID and every input that
can change its result: the op itself (command, caches and their targets, network; or copy
sources, destination and exclusions), the shell, the environment in order, the user, the
workdir, the values of its secrets (as digests), and for copies a manifest of every source
file. A cache's contents and the VM's size are deliberately left out: they do not change what
the step produces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from corral.builds.sexp import Atom, SList, to_canonical
from corral.builds.spec import (
    DEFAULT_SHELL,
    DEFAULT_WORKDIR,
    Comment,
    Copy,
    Env,
    NamedUser,
    Op,
    Run,
    Shell,
    UnixUser,
    User,
    Workdir,
    op_sexp,
    resolve_workdir,
)


@dataclass(frozen=True)
class StepContext:
    """The state the ops before a step leave behind."""

    workdir: str = DEFAULT_WORKDIR
    env: tuple[tuple[str, str], ...] = ()
    user: User | None = None  # None: root, as in obuilder
    shell: tuple[str, ...] = DEFAULT_SHELL

    def apply(self, op: Op) -> StepContext:
        """The context after a non-step op (comment, workdir, shell, env, user)."""
        if isinstance(op, Workdir):
            return replace(self, workdir=resolve_workdir(self.workdir, op.path))
        if isinstance(op, Env):  # a redefined variable moves to the end, as in obuilder
            kept = tuple((k, v) for k, v in self.env if k != op.name)
            return replace(self, env=(*kept, (op.name, op.value)))
        if isinstance(op, UnixUser | NamedUser):
            return replace(self, user=op)
        if isinstance(op, Shell):
            return replace(self, shell=op.args)
        return self


@dataclass(frozen=True)
class Step:
    """One `run` or `copy` op with the context it runs in."""

    index: int  # position among the spec's ops
    op: Run | Copy
    context: StepContext
    workdir_shown: str = field(default=DEFAULT_WORKDIR)  # what obuilder prints before it


def steps(ops: Sequence[Op]) -> Iterator[Step | Comment | Op]:
    """Walk the ops, yielding each run/copy as a Step (with its context) and others as is."""
    context = StepContext()
    for index, op in enumerate(ops):
        if isinstance(op, Run | Copy):
            yield Step(index, op, context, context.workdir)
        else:
            yield op
            context = context.apply(op)


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


def step_id(
    parent: str,
    step: Step,
    *,
    secrets: Mapping[str, bytes] | None = None,
    copy_manifest: bytes | None = None,
) -> str:
    """The cache ID of `step` on top of the layer `parent`."""
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
