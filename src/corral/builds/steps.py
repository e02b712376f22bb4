"""What a build step is: a `run` or `copy` op with the state the ops before it leave behind.

The other ops (comment, workdir, shell, env, user) run nothing: they change the StepContext
the later steps see. A step's ID is made from its Step (step_ids.py); the scripts it runs in
the guest are rendered from it (commands.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral.builds.spec import (
    DEFAULT_SHELL,
    DEFAULT_WORKDIR,
    Copy,
    Env,
    NamedUser,
    Op,
    Run,
    Shell,
    UnixUser,
    User,
    Workdir,
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

    op: Run | Copy
    context: StepContext
    workdir_shown: str = DEFAULT_WORKDIR  # what obuilder prints before it
