"""The spec's canonical renderings, all pure functions of the syntax tree.

`format_spec` is the canonical text: fixed field order, defaults left out, one op per line;
paths, commands, comments and values always quoted, names such as the base image, build, env,
cache and network names bare when they read back unchanged; obuilder reads it too.
`format_op` is one op on one line, what a build prints before each step as
`WORKDIR: (op ...)`. `canonical_bytes` (and `op_sexp`, which step IDs are made from) give
canonical S-expression bytes, independent of how the text rendering may change.
"""

from __future__ import annotations

from corral.builds.sexp import Atom, Sexp, SList, atom_text, render, to_canonical
from corral.builds.spec.ops import (
    Comment,
    Copy,
    Env,
    NamedUser,
    Op,
    Run,
    Shell,
    Spec,
    UnixUser,
    Workdir,
)

# Keywords and names are plain atoms (written bare when safe); free text is always quoted.


def _text(value: str) -> Atom:
    return Atom(value, quoted=True)


def _field(name: str, *values: Sexp) -> SList:
    return SList((Atom(name), *values))


def _mount_sexp(ident: str, target: str) -> SList:
    return SList((Atom(ident), _field("target", _text(target))))


def op_sexp(op: Op) -> SList:
    """The canonical S-expression of one op: fixed field order, defaults left out."""
    match op:
        case Comment(text=text):
            args: tuple[Sexp, ...] = (_text(text),)
        case Workdir(path=path):
            args = (_text(path),)
        case Shell(args=shell):
            args = tuple(_text(arg) for arg in shell)
        case Env(name=name, value=value):
            args = (Atom(name), _text(value))
        case UnixUser(uid=uid, gid=gid):
            args = (_field("uid", Atom(str(uid))), _field("gid", Atom(str(gid))))
        case NamedUser(name=name):
            args = (_field("name", Atom(name)),)
        case Run():
            parts: list[Sexp] = []
            if op.cache:
                parts.append(_field("cache", *(_mount_sexp(c.id, c.target) for c in op.cache)))
            if op.network:
                parts.append(_field("network", *(Atom(n) for n in op.network)))
            if op.secrets:
                parts.append(_field("secrets", *(_mount_sexp(s.id, s.target) for s in op.secrets)))
            parts.append(_field("shell", _text(op.shell)))
            args = tuple(parts)
        case Copy():
            parts = []
            if op.from_build is not None:
                parts.append(_field("from", _field("build", Atom(op.from_build))))
            parts.append(_field("src", *(_text(s) for s in op.src)))
            parts.append(_field("dst", _text(op.dst)))
            if op.exclude:
                parts.append(_field("exclude", *(_text(e) for e in op.exclude)))
            args = tuple(parts)
        case _:
            raise TypeError(f"not a build op: {op!r}")
    return SList((Atom(op.keyword), *args))


def spec_sexp(spec: Spec) -> SList:
    """The canonical S-expression of a whole spec, child builds first."""
    builds = (_field("build", Atom(b.name), spec_sexp(b.spec)) for b in spec.builds)
    ops = (op_sexp(op) for op in spec.ops)
    return SList((*builds, _field("from", Atom(spec.base)), *ops))


def format_op(op: Op) -> str:
    """One op on one line, e.g. `(run (network host) (shell "make"))`."""
    return render(op_sexp(op))


def _spec_lines(spec: Spec) -> list[str]:
    items: list[list[str]] = []
    for build in spec.builds:
        child = _spec_lines(build.spec)
        child[-1] += ")"
        items.append(["(build " + atom_text(Atom(build.name))])
        items[-1].extend("  " + line for line in child)
    items.append([render(_field("from", Atom(spec.base)))])
    items.extend([format_op(op)] for op in spec.ops)
    lines = [line for item in items for line in item]
    lines = ["(" + lines[0], *(" " + line for line in lines[1:])]
    lines[-1] += ")"
    return lines


def format_spec(spec: Spec) -> str:
    """The canonical text of a spec: one op per line, child builds indented; obuilder reads it."""
    return "\n".join(_spec_lines(spec)) + "\n"


def canonical_bytes(node: Spec | Op) -> bytes:
    """Stable bytes, for IDs and comparisons: the canonical S-expression of the canonical tree."""
    return to_canonical(spec_sexp(node) if isinstance(node, Spec) else op_sexp(node))
