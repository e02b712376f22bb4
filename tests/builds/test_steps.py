"""A step's context: what the ops before it leave behind."""

from __future__ import annotations

from corral.builds.spec import Env, NamedUser, Workdir
from corral.builds.steps import StepContext


def test_context_follows_the_ops() -> None:
    ctx = StepContext()
    for op in (Workdir("/src"), Workdir("app"), Env("A", "1"), Env("B", "2"), Env("A", "3"),
               NamedUser("opam")):  # fmt: skip
        ctx = ctx.apply(op)
    assert ctx.workdir == "/src/app"
    assert ctx.env == (("B", "2"), ("A", "3"))  # redefined: moves to the end, as obuilder does
    assert ctx.user == NamedUser("opam")
