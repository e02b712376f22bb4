"""The obuilder build-spec language: its syntax tree, the parser from text, the canonical printer.

    ops.py          the syntax tree: one frozen dataclass per op, Spec and Build
    parse.py        text -> Spec: child builds, (from BASE), then each op (parse_ops.py),
                    every field read through forms.py
    canonical.py    Spec -> the canonical text, one op on a line, and canonical bytes

A spec is one list, as obuilder reads it (`((build NAME SPEC)... (from BASE) OP...)`); the
same forms written without the outer list are accepted too. The ops and their fields are
obuilder's: `comment`, `workdir`, `shell`, `env`, `user`, `run` and `copy`, with record
fields in any order. Every mistake is a SpecError (an InvalidInput) whose message starts with
the line and column of the offending form or atom. A cache id is a plain name (CACHE_NAME),
never a path: it names a disk file in the build store. Everything here is pure.
"""

from corral.builds.spec.canonical import (
    canonical_bytes,
    format_op,
    format_spec,
    op_sexp,
    spec_sexp,
)
from corral.builds.spec.ops import (
    CACHE_NAME,
    DEFAULT_SHELL,
    DEFAULT_WORKDIR,
    Build,
    Cache,
    Comment,
    Copy,
    Env,
    NamedUser,
    Op,
    Run,
    Secret,
    Shell,
    Spec,
    UnixUser,
    User,
    Workdir,
    effective_workdirs,
    resolve_workdir,
)
from corral.builds.spec.parse import MAX_BUILD_DEPTH, parse_spec
from corral.builds.spec.parse_ops import OP_NAMES

__all__ = [
    "CACHE_NAME",
    "DEFAULT_SHELL",
    "DEFAULT_WORKDIR",
    "MAX_BUILD_DEPTH",
    "OP_NAMES",
    "Build",
    "Cache",
    "Comment",
    "Copy",
    "Env",
    "NamedUser",
    "Op",
    "Run",
    "Secret",
    "Shell",
    "Spec",
    "UnixUser",
    "User",
    "Workdir",
    "canonical_bytes",
    "effective_workdirs",
    "format_op",
    "format_spec",
    "op_sexp",
    "parse_spec",
    "resolve_workdir",
    "spec_sexp",
]
